// Tasks finished per second, drawn by hand as SVG bars: succeeded below, failed stacked on top.
// Loaded from /api/v1/tasks/throughput, then kept current from the live task events.

const NS = 'http://www.w3.org/2000/svg';
const W = 600;
const H = 160;
const PAD = { left: 34, right: 6, top: 8, bottom: 20 };

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// The smallest of 1, 2, 5 x 10^n that is at least `v`.
function niceCeil(v) {
  if (v <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export class ThroughputChart {
  constructor(container, summary, seconds = 300) {
    this.container = container;
    this.summary = summary;
    this.seconds = seconds;
    this.succeeded = new Array(seconds).fill(0);
    this.failed = new Array(seconds).fill(0);
    this.offset = 0; // server second minus browser second
    this.end = this.second();
  }

  second() {
    return Math.floor(Date.now() / 1000) + this.offset;
  }

  load(series) {
    this.offset = series.end - Math.floor(Date.now() / 1000);
    const n = this.seconds;
    this.succeeded = series.succeeded.slice(-n);
    this.failed = series.failed.slice(-n);
    while (this.succeeded.length < n) this.succeeded.unshift(0);
    while (this.failed.length < n) this.failed.unshift(0);
    this.end = series.end;
    this.draw();
  }

  // Move the window up to the current second.
  advance() {
    const now = this.second();
    const steps = Math.min(now - this.end, this.seconds);
    for (let i = 0; i < steps; i++) {
      this.succeeded.shift();
      this.succeeded.push(0);
      this.failed.shift();
      this.failed.push(0);
    }
    if (now > this.end) this.end = now;
  }

  add(state) {
    this.advance();
    if (state === 'SUCCEED') this.succeeded[this.seconds - 1] += 1;
    else if (state === 'RUNTIME_ERROR') this.failed[this.seconds - 1] += 1;
  }

  draw() {
    this.advance();
    const n = this.seconds;
    const totals = this.succeeded.map((s, i) => s + this.failed[i]);
    const peak = Math.max(0, ...totals);
    const top = niceCeil(peak);
    const plotW = W - PAD.left - PAD.right;
    const plotH = H - PAD.top - PAD.bottom;
    const barW = plotW / n;
    const y = (v) => PAD.top + plotH - (v / top) * plotH;
    const minutes = n / 60;
    const label = `Tasks finished per second over the last ${minutes} minutes; peak ${peak} per second.`;
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label, class: 'chart-svg' });
    for (const v of [0, top / 2, top]) {
      root.append(svg('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: 'grid' }));
      root.append(svg('text', { x: PAD.left - 4, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' }, String(v)));
    }
    for (let i = 0; i < n; i++) {
      const x = PAD.left + i * barW;
      if (this.succeeded[i]) {
        root.append(svg('rect', { x, width: Math.max(barW - 0.3, 0.5), y: y(this.succeeded[i]),
          height: y(0) - y(this.succeeded[i]), class: 'bar-ok' }));
      }
      if (this.failed[i]) {
        root.append(svg('rect', { x, width: Math.max(barW - 0.3, 0.5), y: y(totals[i]),
          height: y(this.succeeded[i]) - y(totals[i]), class: 'bar-fail' }));
      }
    }
    const ticks = [[0, `-${minutes} min`, 'start'], [n / 2, `-${minutes / 2} min`, 'middle'], [n, 'now', 'end']];
    for (const [i, text, anchor] of ticks) {
      root.append(svg('text', { x: PAD.left + i * barW, y: H - 4, 'text-anchor': anchor, class: 'axis' }, text));
    }
    this.container.replaceChildren(root);
    const done = this.succeeded.reduce((a, b) => a + b, 0);
    const failed = this.failed.reduce((a, b) => a + b, 0);
    const last10 = totals.slice(-10).reduce((a, b) => a + b, 0) / 10;
    this.summary.textContent = `Last ${minutes} min: ${done.toLocaleString('en')} succeeded, ` +
      `${failed.toLocaleString('en')} failed; peak ${peak}/s; last 10 s: ${last10.toFixed(1)}/s. ` +
      'Counted by this node from the task events since it started.';
  }
}
