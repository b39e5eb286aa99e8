// The tasks page: counts per state, filter, search, pages, selection and bulk actions, the create
// form, and live updates (a row changes state the moment its event arrives; the page re-reads the
// list and counts right after, coalescing bursts of events into one read).

import { get, query } from './api.js';
import { Selection, runBulk } from './bulk.js';
import { CreateForm } from './form.js';
import { Live } from './live.js';
import { age, followBase, fmtNumber, h, isShortcut, pageLink, shortId, stateBadge, tickAges } from './ui.js';

const PAGE_SIZE = 50;
const REFRESH_DELAY_MS = 80;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const st = {
  state: params.get('state') || '',
  q: params.get('q') || '',
  cursors: [null],
  index: 0,
  tasks: [],
  next: null,
  loading: false,
  dirty: false,
  timer: null,
  fresh: null,
};
const rows = new Map();
const selection = new Selection({ visible: () => st.tasks, changed: showSelection });

function cell(label, ...children) {
  return h('td', { dataset: { label } }, ...children);
}

// The state, and why a waiting task waits ("due at ..."), when it says.
function stateOf(task) {
  return task.waiting_for ? [stateBadge(task.state), h('div', { class: 'hint small waiting-for' }, task.waiting_for)]
    : [stateBadge(task.state)];
}

function buildRow(task) {
  const box = h('input', { type: 'checkbox', 'aria-label': `Select task ${task.name}` });
  box.addEventListener('change', () => selection.set(task.id, box.checked));
  const tr = h('tr', { dataset: { id: task.id } },
    h('td', { class: 'check' }, box),
    cell('ID', pageLink(`/tasks/${task.id}`, h('code', { title: task.id }, shortId(task.id)))),
    cell('Name', h('span', { class: 'name' }, task.name)),
    cell('Type', task.type),
    cell('Target', h('span', { class: 'clip', title: task.target }, task.target)),
    cell('State', ...stateOf(task)),
    cell('Node', task.node || '–'),
    h('td', { dataset: { label: 'Attempts' }, class: 'num' }, String(task.attempts)),
    cell('Age', age(task.created_at)),
  );
  return { tr, box, task };
}

function updateRow(row, task) {
  const [, , , , , stateTd, nodeTd, attemptsTd] = row.tr.children;
  if (row.task.state !== task.state || row.task.waiting_for !== task.waiting_for) {
    stateTd.replaceChildren(...stateOf(task));
    if (row.task.state !== task.state) flash(row.tr);
  }
  if (nodeTd.textContent !== (task.node || '–')) nodeTd.textContent = task.node || '–';
  if (attemptsTd.textContent !== String(task.attempts)) attemptsTd.textContent = String(task.attempts);
  row.task = task;
}

function flash(tr) {
  tr.classList.remove('changed');
  void tr.offsetWidth; // restart the animation
  tr.classList.add('changed');
}

// Put the rows of `tasks` in the table, reusing the rows already there, so focus and checkboxes stay.
function renderRows(tasks) {
  const body = $('task-rows');
  const wanted = new Set(tasks.map((t) => t.id));
  for (const [id, row] of rows) {
    if (!wanted.has(id)) {
      row.tr.remove();
      rows.delete(id);
    }
  }
  let at = body.firstElementChild;
  for (const task of tasks) {
    let row = rows.get(task.id);
    if (row) updateRow(row, task);
    else {
      row = buildRow(task);
      rows.set(task.id, row);
      if (task.id === st.fresh) row.tr.classList.add('fresh');
    }
    if (row.tr !== at) body.insertBefore(row.tr, at);
    else at = at.nextElementSibling;
    row.box.checked = selection.has(task.id);
  }
}

function renderPage(page) {
  st.tasks = page.tasks;
  st.next = page.next_cursor;
  selection.keepVisible();
  renderRows(page.tasks);
  $('empty').hidden = page.tasks.length > 0;
  const first = st.index * PAGE_SIZE + 1;
  const last = st.index * PAGE_SIZE + page.tasks.length;
  const what = st.q ? 'matching' : 'tasks';
  $('page-info').textContent = page.tasks.length
    ? `${fmtNumber(first)}–${fmtNumber(last)} of ${fmtNumber(page.total)} ${what}`
    : `0 of ${fmtNumber(page.total)} ${what}`;
  const note = $('search-note');
  note.hidden = !(st.q && page.complete === false);
  note.textContent = 'Searched the newest tasks only; narrow the search or filter by state to look further back.';
  $('newer').disabled = st.index === 0;
  $('older').disabled = !st.next;
  showSelection();
}

function renderCounts(counts) {
  for (const el of document.querySelectorAll('[data-count]')) {
    el.textContent = fmtNumber(counts[el.dataset.count] ?? 0);
  }
}

function showSelection() {
  const n = selection.ids.size;
  $('selected-count').textContent = `${n} selected`;
  $('kill-selected').disabled = n === 0;
  $('delete-selected').disabled = n === 0;
  const pageBox = $('check-page');
  const onPage = st.tasks.filter((t) => selection.has(t.id)).length;
  pageBox.checked = st.tasks.length > 0 && onPage === st.tasks.length;
  pageBox.indeterminate = onPage > 0 && onPage < st.tasks.length;
  for (const [id, row] of rows) row.box.checked = selection.has(id);
}

async function refresh() {
  if (st.loading) {
    st.dirty = true;
    return;
  }
  st.loading = true;
  try {
    const cursor = st.cursors[st.index];
    const [page, counts] = await Promise.all([
      get('/api/v1/tasks' + query({ limit: PAGE_SIZE, state: st.state, q: st.q, cursor })),
      get('/api/v1/tasks/counts'),
    ]);
    renderPage(page);
    renderCounts(counts);
    $('list-error').hidden = true;
  } catch (err) {
    if (err.status !== 0) {
      $('list-error').textContent = `Could not load the tasks: ${err.message}`;
      $('list-error').hidden = false;
    }
  } finally {
    st.loading = false;
    if (st.dirty) {
      st.dirty = false;
      soon();
    }
  }
}

function soon() {
  if (st.timer) return;
  st.timer = setTimeout(() => {
    st.timer = null;
    refresh();
  }, REFRESH_DELAY_MS);
}

function restart() {
  st.cursors = [null];
  st.index = 0;
  selection.ids.clear();
  const q = query({ state: st.state, q: st.q });
  history.replaceState(null, '', '/' + q);
  for (const b of document.querySelectorAll('#counts button')) {
    b.setAttribute('aria-pressed', String(b.dataset.state === st.state));
  }
  refresh();
}

function onTask(event) {
  const row = rows.get(event.id);
  if (row) updateRow(row, { ...row.task, state: event.state, node: event.node || row.task.node });
  soon();
}

async function bulk(kind) {
  const chosen = st.tasks.filter((t) => selection.has(t.id));
  const succeed = await runBulk(kind, chosen, $('outcome'));
  if (succeed) {
    for (const [id, worked] of Object.entries(succeed)) if (worked && kind === 'delete') selection.ids.delete(id);
    showSelection();
    refresh();
  }
}

function bind() {
  followBase();
  for (const b of document.querySelectorAll('#counts button')) {
    b.addEventListener('click', () => {
      st.state = b.dataset.state;
      restart();
    });
  }
  const search = $('q');
  search.value = st.q;
  let typing = null;
  search.addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      st.q = search.value.trim();
      restart();
    }, 250);
  });
  $('search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    clearTimeout(typing);
    st.q = search.value.trim();
    restart();
  });
  $('select-all').addEventListener('click', () => selection.all());
  $('invert').addEventListener('click', () => selection.invert());
  $('clear-selection').addEventListener('click', () => selection.clear());
  $('check-page').addEventListener('change', (e) => (e.target.checked ? selection.all() : selection.clear()));
  $('kill-selected').addEventListener('click', () => bulk('kill'));
  $('delete-selected').addEventListener('click', () => bulk('delete'));
  $('outcome-close').addEventListener('click', () => {
    $('outcome').hidden = true;
  });
  $('older').addEventListener('click', () => {
    st.cursors[st.index + 1] = st.next;
    st.index += 1;
    refresh();
  });
  $('newer').addEventListener('click', () => {
    st.index = Math.max(0, st.index - 1);
    refresh();
  });
  const form = new CreateForm({
    onCreated: (task) => {
      st.fresh = task.id;
      if (st.state && st.state !== task.state) st.state = '';
      st.q = '';
      search.value = '';
      restart();
      $('new-task').focus();
    },
  });
  if ($('new-task').dataset.open === 'yes') form.open();
  document.addEventListener('keydown', (e) => {
    if (!isShortcut(e)) return;
    if (e.key === '/') {
      e.preventDefault();
      search.focus();
    } else if (e.key === 'n') {
      e.preventDefault();
      form.open();
    }
  });
  for (const b of document.querySelectorAll('#counts button')) {
    b.setAttribute('aria-pressed', String(b.dataset.state === st.state));
  }
}

bind();
await refresh();
const live = new Live();
live.on('task', onTask).on('resync', refresh).on('moved', refresh);
live.start();
setInterval(() => tickAges($('task-rows')), 1000);
