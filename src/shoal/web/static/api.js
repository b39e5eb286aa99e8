// The REST API as the pages call it: JSON in and out, the session cookie for auth (it holds a session
// id that every node of the cluster knows, never the token), the session's CSRF header on every call
// that may change something. `base` is '' (the node that served the page) until the live connection
// moves to another node of the cluster (see live.js).

const csrfMeta = document.querySelector('meta[name="csrf-token"]');
const csrf = csrfMeta ? csrfMeta.content : '';

let base = '';
const baseListeners = [];

export function apiBase() {
  return base;
}

// Make every later call (and page link) go to another node: an origin like 'http://127.0.0.1:8081'.
export function setApiBase(origin) {
  base = origin || '';
  for (const fn of baseListeners) fn(base);
}

export function onBaseChange(fn) {
  baseListeners.push(fn);
}

// A page path on the node the API calls go to now.
export function pageUrl(path) {
  return base + path;
}

export class ApiError extends Error {
  constructor(status, kind, message) {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

function signInAgain() {
  const here = location.pathname + location.search;
  location.assign('/signin?next=' + encodeURIComponent(here));
}

// One call. Throws ApiError: status 0 when the node could not be reached at all.
export async function call(method, path, body, { timeoutMs = 10000, origin = base } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrf;
  let response;
  try {
    response = await fetch(origin + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: origin ? 'include' : 'same-origin',
      cache: 'no-store',
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    throw new ApiError(0, 'unreachable', `cannot reach ${origin || 'this node'}: ${err.message}`);
  }
  if (response.status === 401 && !origin) {
    signInAgain();
    throw new ApiError(401, 'unauthorized', 'signed out: sign in again');
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const kind = (data && data.error) || 'http_error';
    const message = (data && data.message) || `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, kind, message);
  }
  return data;
}

export const get = (path, opts) => call('GET', path, undefined, opts);
export const post = (path, body, opts) => call('POST', path, body, opts);
export const del = (path, opts) => call('DELETE', path, undefined, opts);

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const text = q.toString();
  return text ? '?' + text : '';
}
