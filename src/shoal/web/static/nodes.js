// The nodes page: every node with its state, role (the master highlighted), epoch, load, cache use, last
// beat and clock skew; tasks finished per second; and the membership timeline with the rule behind each verdict and the
// tasks it re-placed. Heartbeats and verdicts arrive live; the view is re-read at most once a second.

import { get } from './api.js';
import { ThroughputChart } from './chart.js';
import { Live } from './live.js';
import { age, followBase, fmtBytes, fmtExact, fmtNumber, h, pageLink, shortId, tickAges } from './ui.js';

const $ = (id) => document.getElementById(id);
const VIEW_EVERY_MS = 1000;
let view = null;
let newest = null; // id of the newest membership event shown
let lastView = 0;
let viewTimer = null;
const chart = new ThroughputChart($('chart'), $('chart-summary'));

function loadBar(n) {
  const share = n.slots ? Math.min(1, n.running / n.slots) : 0;
  const fill = h('span', { class: 'fill' });
  fill.style.width = `${Math.round(share * 100)}%`;
  return h('div', { class: 'load' },
    h('div', { class: 'bar', role: 'meter', 'aria-valuemin': '0', 'aria-valuemax': String(n.slots),
      'aria-valuenow': String(n.running), 'aria-label': `${n.running} of ${n.slots} slots busy` }, fill),
    h('span', { class: 'load-text' }, `${n.running} / ${n.slots}`));
}

// The node's cache shard as its last heartbeat told: bytes used of capacity, items and hit ratio.
function cacheCell(n) {
  const c = n.cache;
  if (!c || !c.capacity || n.state === 'dead' || n.state === 'rejected') return h('span', { class: 'hint' }, '–');
  const fill = h('span', { class: 'fill' });
  fill.style.width = `${Math.min(100, (100 * c.bytes) / c.capacity).toFixed(1)}%`;
  const reads = (c.hits || 0) + (c.misses || 0);
  const ratio = reads ? `${((100 * c.hits) / reads).toFixed(1)}% hits` : 'no reads yet';
  const evicted = c.evictions ? ` · ${fmtNumber(c.evictions)} evicted` : '';
  return h('div', { class: 'cache' },
    h('div', { class: 'load' },
      h('div', { class: 'bar', role: 'meter', 'aria-valuemin': '0', 'aria-valuemax': String(c.capacity),
        'aria-valuenow': String(c.bytes), 'aria-label': `cache: ${fmtBytes(c.bytes)} of ${fmtBytes(c.capacity)} used` },
      fill),
      h('span', { class: 'load-text' }, `${fmtBytes(c.bytes)} / ${fmtBytes(c.capacity)}`)),
    h('div', { class: 'hint cache-text', title: `${fmtNumber(c.hits)} hits, ${fmtNumber(c.misses)} misses` },
      `${fmtNumber(c.items)} item${c.items === 1 ? '' : 's'} · ${ratio}${evicted}`));
}

// How far the node's clock is from the store's, as its last beat measured: "+12 ms", "-45.0 s".
function skewCell(n) {
  if (typeof n.clock_skew !== 'number') return h('span', { class: 'hint' }, '–');
  const s = n.clock_skew;
  const text = Math.abs(s) < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(1)} s`;
  return h('span', { class: 'skew', title: `clock ${s >= 0 ? 'ahead of' : 'behind'} the store's` },
    `${s > 0 ? '+' : ''}${text}`);
}

function nodeRow(n) {
  const master = view.master === n.name;
  return h('tr', { class: master ? 'master' : '', dataset: { node: n.name, state: n.state } },
    h('td', { dataset: { label: 'Node' } }, h('div', {}, h('strong', {}, n.name),
      master ? h('span', { class: 'master-badge' }, '★ master') : '',
      h('div', { class: 'hint' }, `http ${n.http} · grpc ${n.grpc} · pid ${n.pid} · incarnation ${n.incarnation}`),
      n.draining ? h('div', { class: 'hint' }, 'draining: takes no new work') : '',
      Object.keys(n.labels || {}).length
        ? h('div', { class: 'labels' }, ...Object.entries(n.labels).map(([k, v]) => h('span', { class: 'label' }, `${k}=${v}`)))
        : '')),
    h('td', { dataset: { label: 'State' } }, h('span', { class: `node-state n-${n.state}` }, n.state)),
    h('td', { dataset: { label: 'Role' } }, n.role),
    h('td', { dataset: { label: 'Epoch' } }, master ? String(view.epoch) : '–'),
    h('td', { dataset: { label: 'Running / slots' } },
      n.state === 'dead' || n.state === 'rejected' ? h('span', { class: 'hint' }, `– / ${n.slots}`) : loadBar(n)),
    h('td', { dataset: { label: 'Cache' } }, cacheCell(n)),
    h('td', { dataset: { label: 'Last beat' } }, n.last_beat ? age(n.last_beat, ' ago') : 'never'),
    h('td', { dataset: { label: 'Clock skew' } }, skewCell(n)),
    h('td', { dataset: { label: 'Why' }, class: 'reason' }, n.reason || '–'));
}

function renderView() {
  const nodes = [...view.nodes].sort((a, b) => a.name.localeCompare(b.name));
  $('node-rows').replaceChildren(...nodes.map(nodeRow));
  const byState = {};
  for (const n of nodes) byState[n.state] = (byState[n.state] || 0) + 1;
  const states = Object.entries(byState).map(([s, k]) => `${k} ${s}`).join(', ');
  const master = view.master
    ? [h('span', {}, 'Master: '), h('strong', { id: 'master-name' }, view.master), ` (epoch ${view.epoch})`]
    : [h('strong', {}, 'No master right now'), ': an election is under way'];
  $('summary').replaceChildren(...master, ` · ${nodes.length} node${nodes.length === 1 ? '' : 's'}: ${states || 'none'}`);
}

// The view, and the newest membership event's id: some events (tasks re-placed, a master lost) are only
// written to the timeline, with no message on the live stream, so the page looks for them here.
async function loadView() {
  lastView = Date.now();
  try {
    const [next, top] = await Promise.all([get('/api/v1/cluster'), get('/api/v1/cluster/timeline?limit=1')]);
    const latest = top.events.length ? top.events[0].id : null;
    view = next;
    renderView();
    $('nodes-error').hidden = true;
    if (latest !== newest) loadTimeline();
  } catch (err) {
    if (err.status !== 0) {
      $('nodes-error').textContent = `Could not read the cluster: ${err.message}`;
      $('nodes-error').hidden = false;
    }
  }
}

function soonView() {
  if (viewTimer) return;
  const wait = Math.max(0, VIEW_EVERY_MS - (Date.now() - lastView));
  viewTimer = setTimeout(() => {
    viewTimer = null;
    loadView();
  }, wait);
}

function replaced(extra) {
  const ids = (extra && extra.tasks) || [];
  if (!ids.length) return '';
  const links = ids.slice(0, 10).flatMap((id, i) => [i ? ', ' : '', pageLink(`/tasks/${id}`, h('code', {}, shortId(id)))]);
  const more = (extra.count || ids.length) - Math.min(ids.length, 10);
  return h('div', { class: 'replaced' }, `re-placed ${extra.count || ids.length} task(s): `, ...links, more > 0 ? ` and ${more} more` : '');
}

async function loadTimeline() {
  try {
    const { events } = await get('/api/v1/cluster/timeline?limit=100');
    newest = events.length ? events[0].id : null;
    $('membership').replaceChildren(...events.map((e) => h('li', { dataset: { kind: e.kind } },
      h('time', { datetime: new Date(e.at * 1000).toISOString() }, fmtExact(e.at)), ' ',
      h('span', { class: `kind k-${e.kind.replace(/[^a-z]/g, '-')}` }, e.kind), ' ',
      h('strong', {}, e.node), h('span', { class: 'hint' }, ` · epoch ${e.epoch}`),
      h('div', { class: 'rule' }, e.rule),
      replaced(e.extra))));
    if (!events.length) $('membership').replaceChildren(h('li', { class: 'hint' }, 'Nothing has happened yet.'));
  } catch (err) {
    if (err.status !== 0) $('membership').replaceChildren(h('li', { class: 'error-text' }, err.message));
  }
}

async function loadChart() {
  try {
    chart.load(await get('/api/v1/tasks/throughput?seconds=300'));
  } catch {
    chart.draw();
  }
}

function onNode(event) {
  const n = view && view.nodes.find((x) => x.name === event.node);
  if (event.kind === 'beat' && n) {
    n.last_beat = event.at;
    if (typeof event.running === 'number') n.running = event.running;
    renderView();
  } else if (event.kind === 'member' && n) {
    n.state = event.state;
    n.reason = event.reason;
    renderView();
    loadTimeline();
  } else if (event.kind !== 'beat') {
    loadTimeline();
  }
  soonView();
}

followBase();
await Promise.all([loadView(), loadChart()]);
const live = new Live();
live.on('node', onNode)
  .on('task', (ev) => chart.add(ev.state))
  .on('resync', () => Promise.all([loadView(), loadChart(), loadTimeline()]));
live.start();
setInterval(() => {
  tickAges($('node-rows'));
  chart.draw();
}, 1000);
