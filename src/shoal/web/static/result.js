// A task's result: what the type reported beside it (for fetch: status, content type, size, final URL,
// redirects), the code itself in a scrollable view, and a download of all of it. A function task's result
// is its return value, shown as pretty JSON (collapsed when large), as are its arguments (jsonView).

import { fmtBytes, fmtExact, h, shortId } from './ui.js';

const SHOWN_CHARS = 512 * 1024;
// Pretty JSON longer than this is collapsed in a <details> the reader opens.
export const COLLAPSE_CHARS = 2048;
let downloadUrl = null;

// A JSON value as indented text (never markup), folded away when it is long; `name` names its elements.
export function jsonView(value, name) {
  const text = JSON.stringify(value, null, 2) ?? 'null';
  const pre = h('pre', { class: 'code json', tabindex: '0', 'aria-label': name, id: `${name}-json` }, h('code', {}, text));
  if (text.length <= COLLAPSE_CHARS) return pre;
  const size = new TextEncoder().encode(text).length;
  return h('details', { class: 'json-details', id: `${name}-details` },
    h('summary', {}, `${name}: ${fmtBytes(size)} of JSON (show)`), pre);
}

// Whether a result is a function task's: only those carry a value (null included).
function isFunction(result) {
  return Object.hasOwn(result, 'value');
}

function extension(contentType) {
  const type = (contentType || '').split(';')[0].trim().toLowerCase();
  if (type === 'text/html') return 'html';
  if (type.endsWith('/json') || type.endsWith('+json')) return 'json';
  if (type.endsWith('/xml') || type.endsWith('+xml')) return 'xml';
  if (type === 'text/css') return 'css';
  if (type.includes('javascript')) return 'js';
  return 'txt';
}

function safeName(name) {
  return name.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 60) || 'result';
}

export function renderResult(container, task, result) {
  if (isFunction(result)) {
    const facts = h('dl', { class: 'fields result-facts' },
      h('dt', {}, 'Produced by'), h('dd', {}, `${result.node}, attempt ${result.attempt}, at ${fmtExact(result.finished_at)}`));
    container.replaceChildren(facts, h('h3', {}, 'Value'), jsonView(result.value, 'value'));
    return;
  }
  const meta = result.meta || {};
  const size = typeof meta.bytes === 'number' ? meta.bytes : new TextEncoder().encode(result.code).length;
  const contentType = meta.content_type || 'text/plain';
  const facts = [
    ['Size', `${fmtBytes(size)} (${size.toLocaleString('en')} bytes)`],
    ['Status', meta.status !== undefined ? String(meta.status) : null],
    ['Content type', meta.content_type || null],
    ['URL', meta.url || null],
    ['Redirects', meta.redirects !== undefined ? String(meta.redirects) : null],
    ['Produced by', `${result.node}, attempt ${result.attempt}, at ${fmtExact(result.finished_at)}`],
    ['Late duplicates', result.duplicates ? String(result.duplicates) : null],
  ].filter(([, v]) => v !== null);
  const dl = h('dl', { class: 'fields result-facts' }, ...facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));

  if (downloadUrl) URL.revokeObjectURL(downloadUrl);
  downloadUrl = URL.createObjectURL(new Blob([result.code], { type: contentType }));
  const file = `${safeName(task.name)}-${shortId(task.id)}.${extension(contentType)}`;
  const download = h('a', { href: downloadUrl, download: file, class: 'button', id: 'download' }, `Download ${file}`);

  const shown = result.code.length > SHOWN_CHARS ? result.code.slice(0, SHOWN_CHARS) : result.code;
  const label = task.type === 'fetch' ? 'Fetched source' : 'Output';
  const code = h('pre', { class: 'code', tabindex: '0', 'aria-label': label, id: 'result-code' }, h('code', {}, shown));
  const cut = shown.length < result.code.length
    ? h('p', { class: 'hint' }, `Showing the first ${fmtBytes(SHOWN_CHARS)} characters; the download has all of it.`)
    : '';
  container.replaceChildren(dl, h('p', {}, download), h('h3', {}, label), code, cut);
}
