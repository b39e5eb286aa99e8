// One task: every field, its timeline, the error, the result (for fetch, the source with its size,
// status and content type, and a download), kill and delete. Live: re-read on each of its events.

import { ApiError, del, get, post } from './api.js';
import { Live } from './live.js';
import { loadGraph } from './graph.js';
import { jsonView, renderResult } from './result.js';
import { TERMINAL, confirmAction, followBase, fmtBytes, fmtExact, fmtSpan, h, pageLink, shortId, showBanner, stateBadge } from './ui.js';

const $ = (id) => document.getElementById(id);
const id = $('task').dataset.taskId;
const seen = []; // state changes received live while the page is open: {state, node, at}
let task = null;
let gone = false;
let timer = null;
let members = new Set(); // the tasks of its workflow drawn in the graph
let graphTimer = null;

const OUTCOME_STATE = { succeeded: 'SUCCEED', failed: 'RUNTIME_ERROR', 'timed out': 'RUNTIME_ERROR', killed: 'KILLED',
  'node lost': 'WAITING', 'handed back': 'WAITING', crashed: 'RUNTIME_ERROR', 'over limit': 'RUNTIME_ERROR' };

function field(label, ...value) {
  return [h('dt', {}, label), h('dd', {}, ...value)];
}

function renderFields(t) {
  const duration = t.started_at && t.finished_at ? fmtSpan(t.finished_at - t.started_at) : '–';
  $('fields').replaceChildren(
    ...field('ID', h('code', {}, t.id)),
    ...field('Name', t.name),
    ...field('Type', t.type),
    ...field('Target', h('span', { class: 'wrap' }, t.target)),
    ...field('State', stateBadge(t.state), t.waiting_for ? h('span', { class: 'hint waiting-for' }, ` ${t.waiting_for}`) : ''),
    ...field('Node', t.node || '–'),
    ...field('Attempts', `${t.attempts} (retries allowed: ${t.max_retries})`),
    ...field('Lost attempts', `${t.lost_attempts ?? 0} (quarantined at ${t.max_lost_attempts})`),
    ...field('Timeout', t.timeout_s ? `${t.timeout_s} s` : 'the type\'s default'),
    ...field('Memory limit', t.memory_mb ? `${t.memory_mb} MiB` : 'the type\'s, else the node\'s default'),
    ...field('CPU limit', t.cpu_s_limit ? `${t.cpu_s_limit} s` : 'the type\'s, else the node\'s default'),
    ...field('Created', fmtExact(t.created_at)),
    ...(t.run_at ? field('Due', fmtExact(t.run_at)) : []),
    ...(t.idempotency_key ? field('Idempotency key', h('code', { class: 'wrap' }, t.idempotency_key)) : []),
    ...field('Priority', String(t.priority ?? 5)),
    ...(t.requires && Object.keys(t.requires).length
      ? field('Requires', Object.entries(t.requires).map(([k, v]) => `${k}=${v}`).join(', ')) : []),
    ...(t.concurrency_key ? field('Concurrency key', h('code', { class: 'wrap' }, t.concurrency_key)) : []),
    ...(t.depends_on && t.depends_on.length ? field('Depends on', ...t.depends_on.flatMap((p, k) =>
      [k ? ', ' : '', pageLink(`/tasks/${p}`, h('code', {}, shortId(p)))]),
      t.on_parent_failure === 'run' ? ' (runs whatever they end)' : '') : []),
    ...(t.children && t.children.length ? field('Children', ...t.children.flatMap((c, k) =>
      [k ? ', ' : '', pageLink(`/tasks/${c}`, h('code', {}, shortId(c)))])) : []),
    ...(t.schedule ? field('Schedule', h('a', { href: `/schedules#${encodeURIComponent(t.schedule)}` }, t.schedule),
      ` tick ${fmtExact(t.tick)}`) : []),
    ...field('Started', fmtExact(t.started_at)),
    ...field('Finished', fmtExact(t.finished_at)),
    ...field('Run time', duration),
    ...field('Params', h('pre', { class: 'params' }, JSON.stringify(t.params, null, 2))),
    ...(t.args != null ? field('Args', jsonView(t.args, 'args')) : []),
    ...(t.kwargs != null ? field('Kwargs', jsonView(t.kwargs, 'kwargs')) : []),
  );
}

// What happened to the task, oldest first: from its record and attempts, plus what was seen live.
function timelineOf(t) {
  const entries = [{ at: t.created_at, state: 'WAITING', text: 'created', node: null }];
  for (const a of t.history || []) {
    entries.push({ at: a.started_at, state: 'RUNNING', text: `attempt ${a.number} started`, node: a.node });
    if (a.finished_at) {
      entries.push({ at: a.finished_at, state: OUTCOME_STATE[a.outcome] || 'RUNTIME_ERROR',
        text: `attempt ${a.number} ${a.outcome || 'ended'}`, node: a.node, error: a.error });
    }
  }
  const near = (state, at) => entries.some((e) => e.state === state && Math.abs(e.at - at) < 1);
  if (TERMINAL.has(t.state) && t.finished_at && !near(t.state, t.finished_at)) {
    entries.push({ at: t.finished_at, state: t.state, text: `ended ${t.state}`, node: t.node });
  }
  for (const ev of seen) {
    if (!near(ev.state, ev.at)) entries.push({ at: ev.at, state: ev.state, text: `became ${ev.state}`, node: ev.node, live: true });
  }
  return entries.sort((a, b) => a.at - b.at);
}

function renderTimeline(t) {
  $('timeline').replaceChildren(...timelineOf(t).map((e) => h('li', {},
    h('time', { datetime: new Date(e.at * 1000).toISOString() }, fmtExact(e.at)), ' ',
    stateBadge(e.state), ' ', e.text, e.node ? ` on ${e.node}` : '',
    e.live ? h('span', { class: 'hint' }, ' (seen live)') : '',
    e.error ? h('div', { class: 'error-text small' }, e.error) : '')));
}

// A measured duration: 850 ms, 1.25 s, then as fmtSpan; – where it was not measured.
function fmtSeconds(s) {
  if (s === null || s === undefined) return '–';
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(2)} s`;
  return fmtSpan(s);
}

// How an attempt ended, with how its worker process died when it crashed: "crashed (SIGSEGV)".
function outcomeText(a) {
  const how = a.signal ? ` (${a.signal})` : a.exit_code !== null && a.exit_code !== undefined ? ` (exit code ${a.exit_code})` : '';
  const held = a.loop_blocked_s ? `, held the node's loop ${a.loop_blocked_s.toFixed(1)}s` : '';
  return (a.outcome || 'running') + how + held;
}

function renderAttempts(t) {
  const dropped = t.attempts_dropped || 0;
  $('attempts-dropped').hidden = !dropped;
  $('attempts-dropped').textContent = `${dropped} attempt(s) between the first and the latest are not kept.`;
  $('attempt-rows').replaceChildren(...(t.history || []).map((a) => h('tr', { dataset: { attempt: a.number } },
    h('td', { dataset: { label: '#' } }, String(a.number)),
    h('td', { dataset: { label: 'Node' } }, a.node),
    h('td', { dataset: { label: 'Started' } }, fmtExact(a.started_at)),
    h('td', { dataset: { label: 'Outcome' } }, outcomeText(a)),
    h('td', { dataset: { label: 'Wall' }, class: 'num wall' }, fmtSeconds(a.wall_s)),
    h('td', { dataset: { label: 'CPU' }, class: 'num cpu' }, fmtSeconds(a.cpu_s)),
    h('td', { dataset: { label: 'Peak RSS' }, class: 'num rss' }, fmtBytes(a.max_rss_bytes)),
    h('td', { dataset: { label: 'Error' } }, a.error ? h('span', { class: 'error-text small' }, a.error) : ''))));
}

// Each late result with its code in full (text, never markup).
function renderLate(t) {
  const late = t.late_results || [];
  $('late-card').hidden = !late.length;
  $('late-results').replaceChildren(...late.map((r) => h('article', { class: 'late-result', dataset: { attempt: r.attempt } },
    h('p', {}, `Attempt ${r.attempt} on ${r.node}: ${r.outcome}, at ${fmtExact(r.finished_at)}`),
    r.error ? h('p', { class: 'error-text small' }, r.error) : '',
    r.code !== null && r.code !== undefined ? h('pre', { class: 'code late-code' }, r.code) : '')));
}

function render(t) {
  document.title = `${t.name} · shoal`;
  $('task-name').replaceChildren(t.name, ' ', h('code', { class: 'hint' }, shortId(t.id)));
  $('crumb').textContent = t.name;
  $('task-state').replaceChildren(stateBadge(t.state));
  renderFields(t);
  $('error-card').hidden = !t.error;
  $('error-text').textContent = t.error || '';
  renderTimeline(t);
  renderAttempts(t);
  renderLate(t);
  $('kill').disabled = TERMINAL.has(t.state);
  $('delete').disabled = false;
}

async function loadResult(t) {
  try {
    renderResult($('result'), t, await get(`/api/v1/tasks/${id}/result`));
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 404) throw err;
    const why = TERMINAL.has(t.state) ? `No result: the task ended ${t.state}.` : 'No result yet: the task has not finished.';
    $('result').replaceChildren(h('p', { class: 'hint' }, why));
  }
}

function showGone() {
  gone = true;
  showBanner($('task-message'), 'This task no longer exists: it was deleted.', 'error');
  $('kill').disabled = true;
  $('delete').disabled = true;
  $('task-message').append(' ', pageLink('/', 'Back to the tasks'));
}

async function load() {
  if (gone) return;
  try {
    task = await get(`/api/v1/tasks/${id}`);
  } catch (err) {
    if (err.status === 404) showGone();
    else if (err.status !== 0) showBanner($('task-message'), `Could not load the task: ${err.message}`, 'error');
    return;
  }
  render(task);
  await loadResult(task);
  await drawWorkflow();
}

async function drawWorkflow() {
  try {
    members = await loadGraph($('workflow-card'), $('workflow-graph'), task);
  } catch (err) {
    if (err.status !== 0 && err.status !== 404) showBanner($('task-message'), `Could not load the workflow: ${err.message}`, 'error');
  }
}

// Another task of the workflow changed: draw the graph again (once for a burst of events).
function graphSoon() {
  if (graphTimer) return;
  graphTimer = setTimeout(() => {
    graphTimer = null;
    if (!gone && task) drawWorkflow();
  }, 250);
}

function soon() {
  if (timer) return;
  timer = setTimeout(() => {
    timer = null;
    load();
  }, 100);
}

async function kill() {
  const ok = await confirmAction({ title: 'Kill this task?', body: h('p', {}, `${task.name} (${shortId(id)}) is ${task.state}.`), ok: 'Kill' });
  if (!ok) return;
  try {
    task = await post(`/api/v1/tasks/${id}/kill`);
    showBanner($('task-message'), 'Killed.', 'info');
    render(task);
  } catch (err) {
    showBanner($('task-message'), `Not killed: ${err.message}`, 'error');
  }
}

async function remove() {
  const ok = await confirmAction({ title: 'Delete this task?', body: h('p', {}, `${task.name} (${shortId(id)}) and its result will be removed for good.`), ok: 'Delete' });
  if (!ok) return;
  try {
    await del(`/api/v1/tasks/${id}`);
    showGone();
  } catch (err) {
    showBanner($('task-message'), `Not deleted: ${err.message}`, 'error');
  }
}

followBase();
$('kill').addEventListener('click', kill);
$('delete').addEventListener('click', remove);
await load();
const live = new Live();
live.on('task', (ev) => {
  if (ev.id !== id) {
    if (members.has(ev.id)) graphSoon();
    return;
  }
  seen.push({ state: ev.state, node: ev.node, at: ev.at });
  soon();
}).on('resync', load);
live.start();
