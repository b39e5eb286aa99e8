// The webhooks page: every webhook (URL, events, types, result, created) with its deliveries and delete; the
// chosen webhook's delivery log (status, attempts, HTTP status, latency, the answer) with a replay button per
// delivery and a replay of everything since a time; and the form that adds one, after which the new secret is
// shown once. The log is read again soon after a task event (a delivery may follow it) and every few seconds.

import { del, get, post } from './api.js';
import { Live } from './live.js';
import { age, confirmAction, followBase, h, pageLink, shortId, showBanner, tickAges } from './ui.js';

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 3000;
const SOON_MS = 500;
let soonTimer = null;
let chosen = null; // the webhook whose deliveries are shown
let webhooks = [];

function row(w) {
  return h('tr', { dataset: { webhook: w.id }, class: chosen === w.id ? 'chosen' : '' },
    h('td', { dataset: { label: 'URL' } }, h('span', { class: 'clip', title: w.url }, w.url),
      h('div', { class: 'hint' }, h('code', {}, w.id))),
    h('td', { dataset: { label: 'Events' } }, w.events.join(', ')),
    h('td', { dataset: { label: 'Types' } }, w.types.length ? w.types.join(', ') : h('span', { class: 'hint' }, 'every type')),
    h('td', { dataset: { label: 'Result' } }, w.include_result ? 'included' : 'no'),
    h('td', { dataset: { label: 'Created' } }, age(w.created_at, ' ago')),
    h('td', { dataset: { label: 'Actions' }, class: 'actions-cell' },
      h('button', { type: 'button', class: 'show-deliveries', onclick: () => choose(w.id) }, 'Deliveries'), ' ',
      h('button', { type: 'button', class: 'danger', onclick: () => remove(w) }, 'Delete')));
}

async function load() {
  try {
    ({ webhooks } = await get('/api/v1/webhooks'));
    $('webhook-rows').replaceChildren(...webhooks.map(row));
    $('webhooks-empty').hidden = webhooks.length > 0;
    $('webhooks-error').hidden = true;
    if (chosen && !webhooks.some((w) => w.id === chosen)) choose(null);
    tickAges();
  } catch (err) {
    if (err.status !== 0) showBanner($('webhooks-error'), `Could not read the webhooks: ${err.message}`, 'error');
  }
}

async function remove(w) {
  const ok = await confirmAction({
    title: `Delete webhook ${w.id}?`,
    body: h('p', {}, `${w.url} gets no more events; its delivery log and pending deliveries go too.`),
    ok: 'Delete',
  });
  if (!ok) return;
  try {
    await del(`/api/v1/webhooks/${encodeURIComponent(w.id)}`);
    await load();
  } catch (err) {
    showBanner($('webhooks-error'), `Could not delete ${w.id}: ${err.message}`, 'error');
  }
}

// -- the delivery log of the chosen webhook

function statusCell(d) {
  const note = d.status === 'pending' && d.next_attempt_at ? h('div', { class: 'hint' }, 'next ', age(d.next_attempt_at)) : '';
  return h('td', { dataset: { label: 'Status' } }, h('span', { class: `dlv-status is-${d.status}` }, d.status), note);
}

function deliveryRow(d) {
  return h('tr', { dataset: { delivery: d.id, status: d.status } },
    h('td', { dataset: { label: 'Id' } }, h('code', { title: d.message_id }, d.id)),
    h('td', { dataset: { label: 'Event' } }, d.type, h('div', { class: 'hint' }, age(d.event_at, ' ago'))),
    h('td', { dataset: { label: 'Task' } }, pageLink(`/tasks/${d.task_id}`, h('code', {}, shortId(d.task_id))),
      d.task_type ? h('div', { class: 'hint' }, d.task_type) : ''),
    statusCell(d),
    h('td', { dataset: { label: 'Attempts' }, class: 'num' }, String(d.attempts), d.replays ? h('div', { class: 'hint' }, `${d.replays} replay(s)`) : ''),
    h('td', { dataset: { label: 'HTTP' }, class: 'num http-status' }, d.status_code ? String(d.status_code) : '–'),
    h('td', { dataset: { label: 'Latency' }, class: 'num latency' }, d.latency_ms === null ? '–' : `${Math.round(d.latency_ms)} ms`),
    h('td', { dataset: { label: 'Last attempt' } }, d.last_attempt_at ? age(d.last_attempt_at, ' ago') : '–'),
    h('td', { dataset: { label: 'Answer' } }, h('span', { class: 'clip answer', title: d.error || d.response }, d.error || d.response || '')),
    h('td', { dataset: { label: 'Actions' }, class: 'actions-cell' },
      h('button', { type: 'button', class: 'replay', onclick: () => replay(d) }, 'Replay')));
}

async function loadDeliveries() {
  if (!chosen) return;
  const id = chosen;
  try {
    const { deliveries } = await get(`/api/v1/webhooks/${encodeURIComponent(id)}/deliveries?limit=100`);
    if (chosen !== id) return;
    $('delivery-rows').replaceChildren(...deliveries.map(deliveryRow));
    $('deliveries-empty').hidden = deliveries.length > 0;
    tickAges();
  } catch (err) {
    if (err.status !== 0) showBanner($('deliveries-note'), `Could not read the deliveries: ${err.message}`, 'error');
  }
}

function choose(id) {
  chosen = id;
  $('deliveries').hidden = !id;
  $('deliveries-note').hidden = true;
  $('delivery-rows').replaceChildren();
  for (const tr of $('webhook-rows').querySelectorAll('tr')) tr.classList.toggle('chosen', tr.dataset.webhook === id);
  if (!id) return;
  const w = webhooks.find((x) => x.id === id);
  $('deliveries-title').textContent = `Deliveries to ${w ? w.url : id}`;
  loadDeliveries();
}

async function replay(d) {
  try {
    await post(`/api/v1/webhooks/${encodeURIComponent(d.webhook_id)}/deliveries/${encodeURIComponent(d.id)}/replay`);
    showBanner($('deliveries-note'), `Delivery ${d.id} is being sent again.`, 'info');
    await loadDeliveries();
  } catch (err) {
    showBanner($('deliveries-note'), `Could not replay delivery ${d.id}: ${err.message}`, 'error');
  }
}

async function replaySince(event) {
  event.preventDefault();
  const text = $('replay-since').value;
  const error = $('replay-since-error');
  error.hidden = true;
  if (!text) {
    error.textContent = 'since is required';
    error.hidden = false;
    return;
  }
  const since = new Date(text).getTime() / 1000; // the browser's local time
  try {
    const { replayed } = await post(`/api/v1/webhooks/${encodeURIComponent(chosen)}/replay`, { since });
    showBanner($('deliveries-note'), `${replayed} deliveries are being sent again.`, 'info');
    await loadDeliveries();
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
  }
}

// -- the form: required fields say so next to themselves; the server's refusal goes next to the field it names

const FIELDS = ['url', 'events', 'types', 'secret'];

function fieldError(field, text) {
  const el = $(`w-${field}-error`);
  el.textContent = text || '';
  el.hidden = !text;
}

function fieldOf(message) {
  const m = message.toLowerCase();
  if (m.startsWith('url')) return 'url';
  if (m.startsWith('events')) return 'events';
  if (m.startsWith('types')) return 'types';
  if (m.startsWith('secret')) return 'secret';
  return null;
}

async function submit(event) {
  event.preventDefault();
  const form = $('webhook-form');
  const data = new FormData(form);
  for (const f of FIELDS) fieldError(f, '');
  $('webhook-form-error').hidden = true;
  const url = String(data.get('url') || '').trim();
  const events = data.getAll('events');
  let bad = false;
  if (!url) {
    fieldError('url', 'url is required');
    bad = true;
  }
  if (!events.length) {
    fieldError('events', 'events is required: pick at least one state');
    bad = true;
  }
  if (bad) return;
  const body = { url, events, include_result: $('w-include-result').checked };
  const types = String(data.get('types') || '').split(',').map((t) => t.trim()).filter(Boolean);
  if (types.length) body.types = types;
  const secret = String(data.get('secret') || '').trim();
  if (secret) body.secret = secret;
  $('webhook-add').disabled = true;
  try {
    const added = await post('/api/v1/webhooks', body);
    form.reset();
    $('secret-id').textContent = added.id;
    $('secret-value').textContent = added.secret;
    $('webhook-secret').hidden = false;
    await load();
  } catch (err) {
    const field = fieldOf(err.message);
    if (field) fieldError(field, err.message);
    else showBanner($('webhook-form-error'), err.message, 'error');
  } finally {
    $('webhook-add').disabled = false;
  }
}

followBase();
$('webhook-form').addEventListener('submit', submit);
$('replay-since-form').addEventListener('submit', replaySince);
$('secret-done').addEventListener('click', () => {
  $('secret-value').textContent = '';
  $('webhook-secret').hidden = true;
});
$('secret-copy').addEventListener('click', () => navigator.clipboard?.writeText($('secret-value').textContent));
function refresh() {
  load();
  loadDeliveries();
}

function soon() {
  if (soonTimer) return;
  soonTimer = setTimeout(() => {
    soonTimer = null;
    loadDeliveries();
  }, SOON_MS);
}

await load();
const live = new Live();
live.on('task', soon).on('resync', refresh);
live.start();
setInterval(refresh, REFRESH_MS);
