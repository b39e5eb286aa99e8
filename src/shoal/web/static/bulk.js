// Selection of task rows and the bulk kill / delete, with a confirmation and each task's outcome
// (the seed's `succeed` map, shown to the user).

import { post } from './api.js';
import { confirmAction, h, shortId } from './ui.js';

const ACTIONS = {
  kill: {
    path: '/api/v1/tasks/kill',
    verb: 'Kill',
    done: 'killed',
    notDone: 'not killed: it had already ended, or is gone',
    explain: 'Tasks not yet running become KILLED at once; running ones are stopped on their node.',
  },
  delete: {
    path: '/api/v1/tasks/delete',
    verb: 'Delete',
    done: 'deleted',
    notDone: 'not deleted: it was already gone',
    explain: 'Each task and its result are removed for good (a running task is killed first).',
  },
};

export class Selection {
  // visible() -> the tasks on screen, in order; changed() is called after every change.
  constructor({ visible, changed }) {
    this.ids = new Set();
    this.visible = visible;
    this.changed = changed;
  }

  has(id) {
    return this.ids.has(id);
  }

  set(id, on) {
    if (on) this.ids.add(id);
    else this.ids.delete(id);
    this.changed();
  }

  all() {
    for (const t of this.visible()) this.ids.add(t.id);
    this.changed();
  }

  invert() {
    for (const t of this.visible()) {
      if (this.ids.has(t.id)) this.ids.delete(t.id);
      else this.ids.add(t.id);
    }
    this.changed();
  }

  clear() {
    this.ids.clear();
    this.changed();
  }

  // Forget ids no longer on screen (after a refresh, a new filter or page).
  keepVisible() {
    const seen = new Set(this.visible().map((t) => t.id));
    for (const id of [...this.ids]) if (!seen.has(id)) this.ids.delete(id);
  }
}

// Ask, run the action on the selected tasks, and show what happened to each. Returns the succeed map
// (or null when cancelled).
export async function runBulk(kind, tasks, outcome) {
  const action = ACTIONS[kind];
  const n = tasks.length;
  const noun = n === 1 ? 'task' : 'tasks';
  const names = tasks.slice(0, 8).map((t) => h('li', {}, `${t.name} (${shortId(t.id)}, ${t.state})`));
  if (n > 8) names.push(h('li', {}, `and ${n - 8} more`));
  const ok = await confirmAction({
    title: `${action.verb} ${n} ${noun}?`,
    body: [h('p', {}, action.explain), h('ul', {}, names)],
    ok: `${action.verb} ${n} ${noun}`,
  });
  if (!ok) return null;
  let succeed;
  try {
    ({ succeed } = await post(action.path, { ids: tasks.map((t) => t.id) }));
  } catch (err) {
    showOutcome(outcome, `${action.verb} failed: ${err.message}`, []);
    return null;
  }
  const done = tasks.filter((t) => succeed[t.id]).length;
  const items = tasks.map((t) => {
    const worked = Boolean(succeed[t.id]);
    return h('li', { class: worked ? 'ok' : 'fail', dataset: { id: t.id, outcome: worked ? 'ok' : 'fail' } },
      h('strong', {}, t.name), ` (${shortId(t.id)}): `, worked ? action.done : action.notDone);
  });
  showOutcome(outcome, `${action.done[0].toUpperCase()}${action.done.slice(1)} ${done} of ${n} ${noun}`, items);
  return succeed;
}

function showOutcome(outcome, title, items) {
  outcome.querySelector('h2').textContent = title;
  outcome.querySelector('ul').replaceChildren(...items);
  outcome.hidden = false;
  outcome.focus();
}
