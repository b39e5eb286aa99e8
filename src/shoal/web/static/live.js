// The live connection: one EventSource on /api/v1/events, and what to do when it breaks.
//
// Task and node events go to the page's handlers. Every node beats once a second, so a stream that
// carries nothing for SILENCE_MS is as good as dead even when the socket says otherwise. A stream that
// cannot reopen within MOVE_AFTER_MS makes the page look for another node of the cluster (the list
// comes from /api/v1/cluster); the first that answers takes over the page's API calls and links.
// If none answers (or the browser will not send the session to it), the page says it is stale, from
// when, and keeps trying every RETRY_MS.

import { apiBase, get, setApiBase } from './api.js';
import { fmtClock, h } from './ui.js';

const SILENCE_MS = 5000;
const MOVE_AFTER_MS = 1500;
const RETRY_MS = 3000;

function originOf(node) {
  return `${location.protocol}//${node.http}`;
}

export class Live {
  constructor() {
    this.handlers = new Map();
    this.nodes = [];
    this.es = null;
    this.origin = apiBase();
    this.home = document.querySelector('meta[name="shoal-node"]')?.content || 'this node';
    this.current = this.home;
    this.lastEvent = Date.now();
    this.lostSince = null;
    this.nextSearch = 0;
    this.searching = false;
    this.status = document.getElementById('live');
    this.banner = document.getElementById('stale');
  }

  on(kind, fn) {
    if (!this.handlers.has(kind)) this.handlers.set(kind, []);
    this.handlers.get(kind).push(fn);
    return this;
  }

  emit(kind, data) {
    for (const fn of this.handlers.get(kind) || []) {
      try {
        fn(data);
      } catch (err) {
        console.error(`live ${kind} handler failed`, err);
      }
    }
  }

  async start() {
    await this.refreshNodes();
    this.open(this.origin);
    setInterval(() => this.watchdog(), 500);
  }

  async refreshNodes(origin = apiBase()) {
    try {
      const view = await get('/api/v1/cluster', { origin, timeoutMs: 3000 });
      this.nodes = view.nodes;
      return view;
    } catch {
      return null;
    }
  }

  open(origin) {
    if (this.es) this.es.close();
    this.origin = origin;
    const es = new EventSource(origin + '/api/v1/events', { withCredentials: Boolean(origin) });
    this.es = es;
    this.lastEvent = Date.now();
    // The page read its data before the stream opened (or while it was down): whatever changed in
    // between came as no event, so every open, the first included, is followed by a re-read.
    es.onopen = () => {
      this.lastEvent = Date.now();
      this.lostSince = null;
      this.show();
      this.emit('resync', { origin });
    };
    es.addEventListener('task', (e) => {
      this.lastEvent = Date.now();
      this.emit('task', JSON.parse(e.data));
    });
    es.addEventListener('node', (e) => {
      this.lastEvent = Date.now();
      const event = JSON.parse(e.data);
      if (event.kind === 'member' && !this.nodes.some((n) => n.name === event.node)) this.refreshNodes();
      this.emit('node', event);
    });
    es.addEventListener('lagged', () => {
      this.lastEvent = Date.now();
      this.emit('resync', { origin });
    });
    es.addEventListener('error', () => this.lost());
  }

  lost() {
    if (this.lostSince === null) {
      this.lostSince = Date.now();
      this.nextSearch = this.lostSince + MOVE_AFTER_MS;
    }
    this.show();
  }

  watchdog() {
    const now = Date.now();
    if (this.lostSince === null && this.es && now - this.lastEvent > SILENCE_MS) {
      this.es.close();
      this.lost();
    }
    if (this.lostSince === null) return;
    this.show();
    if (!this.searching && now >= this.nextSearch) this.search();
  }

  // Try the node in use first (it may be back), then every other node, alive ones first.
  async search() {
    this.searching = true;
    if (this.es) this.es.close();
    try {
      const rank = { alive: 0, suspect: 1 };
      const others = [...this.nodes]
        .sort((a, b) => (rank[a.state] ?? 2) - (rank[b.state] ?? 2))
        .map((n) => ({ name: n.name, origin: originOf(n) }));
      const here = { name: this.current, origin: this.origin };
      const tried = new Set();
      for (const c of [here, ...others]) {
        const origin = c.origin === location.origin ? '' : c.origin;
        if (tried.has(origin)) continue;
        tried.add(origin);
        const view = await this.refreshNodes(origin);
        if (view === null) continue;
        const moved = origin !== this.origin;
        this.current = origin === '' ? this.home : c.name;
        if (moved) setApiBase(origin);
        this.open(origin);
        if (moved) this.emit('moved', { node: this.current, origin });
        return;
      }
      this.nextSearch = Date.now() + RETRY_MS;
      this.show();
    } finally {
      this.searching = false;
    }
  }

  mode() {
    if (this.lostSince === null) return this.origin === '' ? 'live' : 'moved';
    return Date.now() - this.lostSince < MOVE_AFTER_MS + 500 ? 'reconnecting' : 'stale';
  }

  show() {
    const mode = this.mode();
    document.body.classList.toggle('is-stale', mode === 'stale');
    const served = document.getElementById('served-by');
    if (served) served.textContent = this.current;
    if (this.status) {
      this.status.dataset.mode = mode;
      this.status.textContent = {
        live: 'live',
        moved: `live via ${this.current}`,
        reconnecting: 'reconnecting…',
        stale: 'stale',
      }[mode];
    }
    if (!this.banner) return;
    if (mode === 'live' || mode === 'reconnecting') {
      this.banner.hidden = true;
      return;
    }
    this.banner.hidden = false;
    this.banner.className = mode === 'stale' ? 'banner error' : 'banner info';
    if (mode === 'moved') {
      this.banner.replaceChildren(
        `${this.home} stopped answering; this page now works through ${this.current}.`,
      );
      return;
    }
    const links = this.nodes
      .filter((n) => originOf(n) !== location.origin)
      .map((n) => h('a', { href: originOf(n) + location.pathname }, n.name));
    const parts = [`Stale: no connection to the cluster since ${fmtClock(this.lostSince / 1000)}; what you see may be out of date. Retrying…`];
    if (links.length) {
      parts.push(' Open this page on another node: ');
      links.forEach((a, i) => parts.push(...(i ? [', ', a] : [a])));
    }
    this.banner.replaceChildren(...parts);
  }
}
