// The schedules page: every schedule with its cron, time zone, next three ticks, paused state (with pause
// and resume), latest runs linking to their tasks, and delete; and the form that adds one. The list is read
// again when a task event may be a schedule's new run (at most once a second) and every few seconds, so the
// next ticks move on.

import { del, get, post } from './api.js';
import { Live } from './live.js';
import { confirmAction, followBase, h, pageLink, shortId, showBanner, tickAges } from './ui.js';

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 5000;
const SOON_MS = 1000;
const SHOW_RUNS = 5;
let lastLoad = 0;
let soonTimer = null;

// A Unix time as wall-clock time in the schedule's time zone: 2026-12-06 10:05:00.
function inZone(t, zone) {
  const parts = new Intl.DateTimeFormat('en-CA', {
    timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
  }).formatToParts(new Date(t * 1000));
  const p = Object.fromEntries(parts.map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
}

function nextFires(s) {
  if (s.paused) return h('span', { class: 'hint' }, 'paused');
  if (!s.next_fire_times.length) return h('span', { class: 'hint' }, '–');
  return h('ol', { class: 'ticks' }, ...s.next_fire_times.map((t) =>
    h('li', {}, h('time', { datetime: new Date(t * 1000).toISOString() }, inZone(t, s.timezone)))));
}

function runItem(s, run) {
  const when = h('time', { datetime: new Date(run.tick * 1000).toISOString() }, inZone(run.tick, s.timezone));
  if (run.skipped) return h('li', { class: 'skipped' }, when, ' ', h('span', { class: 'hint' }, `skipped (${run.skipped})`));
  return h('li', {}, when, ' ', pageLink(`/tasks/${run.task_id}`, h('code', {}, shortId(run.task_id))),
    run.catch_up ? h('span', { class: 'hint', title: 'this tick had been missed and was fired late' }, ' (catch-up)') : '');
}

async function act(name, action) {
  try {
    if (action === 'delete') await del(`/api/v1/schedules/${encodeURIComponent(name)}`);
    else await post(`/api/v1/schedules/${encodeURIComponent(name)}/${action}`);
    await load();
  } catch (err) {
    showBanner($('schedules-error'), `Could not ${action} ${name}: ${err.message}`, 'error');
  }
}

async function remove(name) {
  const ok = await confirmAction({
    title: `Delete schedule ${name}?`,
    body: h('p', {}, 'It stops firing. The tasks it fired stay.'),
    ok: 'Delete',
  });
  if (ok) await act(name, 'delete');
}

function row(s) {
  const task = s.task || {};
  const toggle = s.paused
    ? h('button', { type: 'button', class: 'resume', onclick: () => act(s.name, 'resume') }, 'Resume')
    : h('button', { type: 'button', class: 'pause warn', onclick: () => act(s.name, 'pause') }, 'Pause');
  return h('tr', { dataset: { schedule: s.name, paused: s.paused ? 'yes' : 'no' } },
    h('td', { dataset: { label: 'Name' } }, h('strong', {}, s.name),
      h('div', { class: 'hint' }, `catch up: ${s.catch_up} · overlap: ${s.overlap}`)),
    h('td', { dataset: { label: 'Cron' } }, h('code', {}, s.cron)),
    h('td', { dataset: { label: 'Time zone' } }, s.timezone),
    h('td', { dataset: { label: 'Task' } }, h('span', {}, task.type || ''), ' ',
      h('span', { class: 'clip', title: task.target || '' }, task.target || '')),
    h('td', { dataset: { label: 'Next fires' }, class: 'next-fires' }, nextFires(s)),
    h('td', { dataset: { label: 'State' } },
      h('span', { class: `sched-state ${s.paused ? 'is-paused' : 'is-active'}` }, s.paused ? 'paused' : 'active')),
    h('td', { dataset: { label: 'Last runs' }, class: 'runs' },
      s.runs.length ? h('ul', { class: 'run-list' }, ...s.runs.slice(0, SHOW_RUNS).map((r) => runItem(s, r)))
        : h('span', { class: 'hint' }, 'none yet')),
    h('td', { dataset: { label: 'Actions' }, class: 'actions-cell' }, toggle, ' ',
      h('button', { type: 'button', class: 'danger', onclick: () => remove(s.name) }, 'Delete')));
}

async function load() {
  lastLoad = Date.now();
  try {
    const { schedules } = await get('/api/v1/schedules');
    $('schedule-rows').replaceChildren(...schedules.map(row));
    $('schedules-empty').hidden = schedules.length > 0;
    $('schedules-error').hidden = true;
    tickAges();
  } catch (err) {
    if (err.status !== 0) showBanner($('schedules-error'), `Could not read the schedules: ${err.message}`, 'error');
  }
}

function soon() {
  if (soonTimer) return;
  soonTimer = setTimeout(() => {
    soonTimer = null;
    load();
  }, Math.max(0, SOON_MS - (Date.now() - lastLoad)));
}

// The form: required fields say so next to themselves; the server's refusal goes next to the field it names.
const FIELDS = ['name', 'cron', 'timezone', 'type', 'target', 'params'];

function fieldError(field, text) {
  const el = $(`s-${field}-error`);
  el.textContent = text || '';
  el.hidden = !text;
}

function fieldOf(message) {
  const m = message.toLowerCase();
  if (m.startsWith('name') || m.includes('schedule named')) return 'name';
  if (m.includes('time zone') || m.startsWith('timezone')) return 'timezone';
  if (m.includes('cron') || m.includes('interval') || m.includes('@every')) return 'cron';
  if (m.includes('params')) return 'params';
  if (m.includes('task type') || m.startsWith('task: type')) return 'type';
  if (m.startsWith('task:') || m.startsWith('refused')) return 'target';
  return null;
}

async function submit(event) {
  event.preventDefault();
  const form = $('schedule-form');
  const data = Object.fromEntries(new FormData(form).entries());
  for (const f of FIELDS) fieldError(f, '');
  $('schedule-form-error').hidden = true;
  let bad = false;
  for (const f of ['name', 'cron', 'type', 'target']) {
    if (!String(data[f] || '').trim()) {
      fieldError(f, `${f} is required`);
      bad = true;
    }
  }
  let params;
  if (String(data.params || '').trim()) {
    try {
      params = JSON.parse(data.params);
      if (typeof params !== 'object' || Array.isArray(params) || params === null) throw new Error('not an object');
    } catch {
      fieldError('params', 'params must be a JSON object');
      bad = true;
    }
  }
  if (bad) return;
  const task = { type: data.type.trim(), target: data.target.trim() };
  if (params) task.params = params;
  const body = { name: data.name.trim(), cron: data.cron.trim(), task, catch_up: data.catch_up, overlap: data.overlap };
  if (data.timezone.trim()) body.timezone = data.timezone.trim();
  $('schedule-add').disabled = true;
  try {
    await post('/api/v1/schedules', body);
    form.reset();
    await load();
  } catch (err) {
    const field = fieldOf(err.message);
    if (field) fieldError(field, err.message);
    else showBanner($('schedule-form-error'), err.message, 'error');
  } finally {
    $('schedule-add').disabled = false;
  }
}

followBase();
$('schedule-form').addEventListener('submit', submit);
await load();
const live = new Live();
live.on('task', soon).on('resync', load);
live.start();
setInterval(() => {
  if (Date.now() - lastLoad >= REFRESH_MS) load();
}, 1000);
