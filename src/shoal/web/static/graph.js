// A task's workflow as a graph: its tasks in columns by depth (parents left of their children), each a
// link to its page coloured by its state, arrows from parent to child, the task of the page outlined.
// Drawn with SVG built here (no library); every text is set as text, never markup. Live: re-read when a
// task of the workflow changes state.

import { get, pageUrl } from './api.js';
import { h, pageLink, shortId } from './ui.js';

const SVG = 'http://www.w3.org/2000/svg';
const W = 190; // a task's box
const BOX_H = 40;
const GAP_X = 60;
const GAP_Y = 14;
// A workflow larger than this shows only the page's task, its parents and its children.
const MOST_SHOWN = 150;

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

function clip(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

// Depth of each task: 0 for one without a parent in the graph, else one more than its deepest parent.
function depths(tasks, edges) {
  const parents = new Map(tasks.map((t) => [t.id, []]));
  for (const e of edges) if (parents.has(e.child) && parents.has(e.parent)) parents.get(e.child).push(e.parent);
  const depth = new Map();
  const visit = (id, trail) => {
    if (depth.has(id)) return depth.get(id);
    if (trail.has(id)) return 0; // cannot happen (the store refuses cycles); never loop on it
    trail.add(id);
    const d = Math.max(-1, ...parents.get(id).map((p) => visit(p, trail))) + 1;
    trail.delete(id);
    depth.set(id, d);
    return d;
  };
  for (const t of tasks) visit(t.id, new Set());
  return depth;
}

// The part of the workflow shown: all of it, or around the page's task when it is large.
function shown(workflow, taskId) {
  if (workflow.tasks.length <= MOST_SHOWN) return workflow;
  const near = new Set([taskId]);
  for (const e of workflow.edges) {
    if (e.child === taskId) near.add(e.parent);
    if (e.parent === taskId) near.add(e.child);
  }
  return {
    ...workflow,
    tasks: workflow.tasks.filter((t) => near.has(t.id)),
    edges: workflow.edges.filter((e) => near.has(e.parent) && near.has(e.child)),
    partial: true,
  };
}

export function drawGraph(container, workflow, taskId) {
  const part = shown(workflow, taskId);
  const depth = depths(part.tasks, part.edges);
  const columns = [];
  for (const t of part.tasks) {
    const d = depth.get(t.id);
    (columns[d] = columns[d] || []).push(t);
  }
  const where = new Map();
  columns.forEach((col, x) => col.forEach((t, y) => where.set(t.id, { x: x * (W + GAP_X), y: y * (BOX_H + GAP_Y) })));
  const width = columns.length * (W + GAP_X) - GAP_X + 2;
  const height = Math.max(...columns.map((c) => c.length)) * (BOX_H + GAP_Y) - GAP_Y + 2;
  const marker = svg('marker', { id: 'wf-arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7,
    markerHeight: 7, orient: 'auto-start-reverse' }, svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'wf-arrowhead' }));
  const lines = part.edges.map((e) => {
    const a = where.get(e.parent);
    const b = where.get(e.child);
    const x1 = a.x + W + 1;
    const y1 = a.y + BOX_H / 2 + 1;
    const x2 = b.x + 1;
    const y2 = b.y + BOX_H / 2 + 1;
    const mid = (x1 + x2) / 2;
    return svg('path', { d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`, class: 'wf-edge',
      'marker-end': 'url(#wf-arrow)', 'data-parent': e.parent, 'data-child': e.child });
  });
  const boxes = part.tasks.map((t) => {
    const { x, y } = where.get(t.id);
    const label = svg('text', { x: x + 10, y: y + 17, class: 'wf-name' });
    label.textContent = clip(t.name, 24);
    const state = svg('text', { x: x + 10, y: y + 33, class: `wf-state s-${t.state}` });
    state.textContent = `${t.state} · ${shortId(t.id)}`;
    const title = svg('title');
    title.textContent = `${t.name} (${t.id}): ${t.state}${t.waiting_for ? `, ${t.waiting_for}` : ''}${t.error ? `: ${t.error}` : ''}`;
    const rect = svg('rect', { x: x + 1, y: y + 1, width: W, height: BOX_H, rx: 6,
      class: `wf-box s-${t.state}${t.id === taskId ? ' wf-here' : ''}` });
    const path = `/tasks/${encodeURIComponent(t.id)}`;
    const link = svg('a', { href: pageUrl(path), class: 'wf-node', 'data-path': path, 'data-task-id': t.id,
      'data-state': t.state }, title, rect, label, state);
    return link;
  });
  const picture = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': `workflow of ${part.tasks.length} tasks` }, svg('defs', {}, marker), ...lines, ...boxes);
  const counts = {};
  for (const t of workflow.tasks) counts[t.state] = (counts[t.state] || 0) + 1;
  const summary = Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(', ');
  container.replaceChildren(
    h('p', { class: 'hint' }, `Workflow `, pageLink(`/tasks/${workflow.id}`, h('code', {}, shortId(workflow.id))),
      `: ${workflow.tasks.length} task(s), ${summary}.`,
      part.partial ? ' Only this task, its parents and its children are drawn.' : ''),
    h('div', { class: 'wf-scroll' }, picture));
}

// Show the workflow of task `t` in `card` (hidden when it belongs to none); returns the ids drawn, so the
// page knows which tasks' events to follow.
export async function loadGraph(card, container, t) {
  if (!t.workflow) {
    card.hidden = true;
    return new Set();
  }
  const workflow = await get(`/api/v1/workflows/${encodeURIComponent(t.workflow)}`);
  card.hidden = false;
  drawGraph(container, workflow, t.id);
  return new Set(workflow.tasks.map((m) => m.id));
}
