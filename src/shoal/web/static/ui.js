// Small helpers every page uses: building elements, formatting times and sizes, state badges,
// the confirmation dialog, and links that follow the API to another node.

import { onBaseChange, pageUrl } from './api.js';

// h('a', {href: '/x', class: 'y'}, 'text', child...): attributes set as attributes, except `on*`
// functions (listeners) and `dataset` (an object).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export const TERMINAL = new Set(['SUCCEED', 'RUNTIME_ERROR', 'KILLED']);

export function stateBadge(state) {
  return h('span', { class: `state s-${state}` }, state);
}

export function shortId(id) {
  return id.slice(0, 8);
}

const pad = (n) => String(n).padStart(2, '0');

// Local wall-clock time of a Unix time in seconds; with the date when it is not today.
export function fmtClock(t) {
  if (t === null || t === undefined) return '–';
  const d = new Date(t * 1000);
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

export function fmtExact(t) {
  if (t === null || t === undefined) return '–';
  const d = new Date(t * 1000);
  return `${fmtClock(t)}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

// A span of seconds as people say it: 0.4 s, 12 s, 3 min, 2 h, 4 d.
export function fmtSpan(seconds) {
  const s = Math.max(0, seconds);
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

export function now() {
  return Date.now() / 1000;
}

// Refresh every <time data-since="unix seconds"> in `root` to show how long ago that was.
export function tickAges(root = document) {
  const t = now();
  for (const el of root.querySelectorAll('[data-since]')) {
    const since = Number(el.dataset.since);
    if (since) el.textContent = fmtSpan(t - since) + (el.dataset.suffix || '');
  }
}

export function age(t, suffix = '') {
  return h('time', { datetime: new Date(t * 1000).toISOString(), title: fmtClock(t), dataset: { since: t, suffix } },
    fmtSpan(now() - t) + suffix);
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '–';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(1)} GiB`;
}

export function fmtNumber(n) {
  return Number(n).toLocaleString('en');
}

// A link to a page of the task center on the node the API uses now (see api.js setApiBase).
export function pageLink(path, ...children) {
  return h('a', { href: pageUrl(path), dataset: { path } }, ...children);
}

// Links marked data-page-link (the header) and made by pageLink follow the API to another node.
export function followBase() {
  for (const a of document.querySelectorAll('a[data-page-link]')) a.dataset.path = a.getAttribute('href');
  onBaseChange(() => {
    for (const a of document.querySelectorAll('a[data-path]')) a.href = pageUrl(a.dataset.path);
  });
}

// Ask before doing something that cannot be undone. Resolves true on confirm, false otherwise.
export function confirmAction({ title, body, ok }) {
  const dialog = document.getElementById('confirm-dialog');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-body').replaceChildren(...[body].flat());
  document.getElementById('confirm-ok').textContent = ok;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
  });
}

export function showBanner(el, text, kind = 'info') {
  el.className = `banner ${kind}`;
  el.textContent = text;
  el.hidden = !text;
}

// True when a key press should be taken as a shortcut, not as typing.
export function isShortcut(event) {
  const t = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return false;
  return !(t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement ||
    t.isContentEditable || document.querySelector('dialog[open]'));
}
