// The "New task" form: checks what it can before sending (the same words the server uses), sends,
// and puts the server's refusals next to the fields they are about.

import { get, post } from './api.js';

const FIELDS = ['name', 'type', 'target', 'params', 'timeout_s', 'max_retries', 'max_lost_attempts', 'memory_mb', 'cpu_s_limit',
  'delay_s', 'priority', 'requires'];
const LABEL_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}=[A-Za-z0-9_.:-]{0,63}$/;
const URL_RE = /^https?:\/\/[^/\s?#]+/i;
const DURATION_RE = /^[0-9]+(\.[0-9]+)?(ms|s|m|h|d|w)?$/;

// Which fields a server message is about: "name and target are required" names two, "params.delay_s
// must be..." names params, "unknown task type" names type, a refused address names target.
export function fieldsOf(message) {
  const m = message.trim().toLowerCase();
  const required = /^([a-z_]+(?: and [a-z_]+)*) (?:is|are) required/.exec(m);
  if (required) return required[1].split(' and ').filter((f) => FIELDS.includes(f));
  if (m.startsWith('unknown task type')) return ['type'];
  if (m.startsWith('refused')) return ['target'];
  const first = /^([a-z_]+)/.exec(m);
  if (first && FIELDS.includes(first[1])) return [first[1]];
  return [];
}

export class CreateForm {
  constructor({ onCreated }) {
    this.onCreated = onCreated;
    this.dialog = document.getElementById('create-dialog');
    this.form = document.getElementById('create-form');
    this.submitButton = document.getElementById('create-submit');
    this.typesLoaded = false;
    document.getElementById('new-task').addEventListener('click', () => this.open());
    document.getElementById('create-cancel').addEventListener('click', () => this.dialog.close());
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });
    for (const f of FIELDS) {
      const input = this.input(f);
      input.addEventListener('input', () => this.clearError(f));
    }
  }

  input(field) {
    return this.form.elements.namedItem(field);
  }

  async loadTypes() {
    const select = this.input('type');
    try {
      const { types } = await get('/api/v1/types');
      const keep = select.value;
      select.replaceChildren(new Option('Choose a type…', ''), ...types.map((t) => new Option(t, t)));
      select.value = types.includes(keep) ? keep : types.includes('fetch') ? 'fetch' : '';
      this.typesLoaded = true;
    } catch (err) {
      select.replaceChildren(new Option('no types: ' + err.message, ''));
    }
  }

  open() {
    this.clearErrors();
    if (!this.typesLoaded) this.loadTypes();
    this.dialog.showModal();
    this.input('name').focus();
  }

  showError(field, message) {
    const el = document.getElementById(field ? `${field}-error` : 'form-error');
    el.textContent = message;
    el.hidden = false;
    if (field) this.input(field).setAttribute('aria-invalid', 'true');
  }

  clearError(field) {
    const el = document.getElementById(`${field}-error`);
    el.hidden = true;
    el.textContent = '';
    this.input(field).removeAttribute('aria-invalid');
  }

  clearErrors() {
    for (const f of FIELDS) this.clearError(f);
    const formError = document.getElementById('form-error');
    formError.hidden = true;
    formError.textContent = '';
  }

  // The body to send, and what is wrong with it already (field -> message).
  read() {
    const value = (f) => this.input(f).value.trim();
    const body = { name: value('name'), type: value('type'), target: value('target') };
    const errors = {};
    if (!body.name) errors.name = 'name is required';
    if (!body.type) errors.type = 'type is required';
    if (!body.target) errors.target = 'target is required';
    else if (body.type === 'fetch' && !URL_RE.test(body.target)) {
      errors.target = 'target must be an absolute http:// or https:// URL with a host';
    }
    const params = value('params');
    if (params) {
      try {
        const parsed = JSON.parse(params);
        if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
          errors.params = 'params must be a JSON object';
        } else body.params = parsed;
      } catch (err) {
        errors.params = `params is not valid JSON: ${err.message}`;
      }
    }
    const timeout = value('timeout_s');
    if (timeout) {
      const n = Number(timeout);
      if (!Number.isFinite(n) || n <= 0) errors.timeout_s = 'timeout_s must be a number of seconds above 0';
      else body.timeout_s = n;
    }
    const retries = value('max_retries');
    if (retries) {
      const n = Number(retries);
      if (!Number.isInteger(n) || n < 0 || n > 100) errors.max_retries = 'max_retries must be between 0 and 100';
      else body.max_retries = n;
    }
    const lost = value('max_lost_attempts');
    if (lost) {
      const n = Number(lost);
      if (!Number.isInteger(n) || n < 1 || n > 100) errors.max_lost_attempts = 'max_lost_attempts must be between 1 and 100';
      else body.max_lost_attempts = n;
    }
    const memory = value('memory_mb');
    if (memory) {
      const n = Number(memory);
      if (!Number.isInteger(n) || n < 64 || n > 1048576) errors.memory_mb = 'memory_mb must be between 64 and 1048576';
      else body.memory_mb = n;
    }
    const cpu = value('cpu_s_limit');
    if (cpu) {
      const n = Number(cpu);
      if (!Number.isFinite(n) || n <= 0 || n > 86400) errors.cpu_s_limit = 'cpu_s_limit must be above 0 and at most 86400 seconds';
      else body.cpu_s_limit = n;
    }
    const delay = value('delay_s');
    if (delay) {
      if (!DURATION_RE.test(delay)) errors.delay_s = 'delay_s must be seconds or a duration such as 90s, 15m or 2h';
      else body.delay_s = delay; // the server reads "15m" as it reads 900, and bounds it
    }
    const priority = Number(value('priority') || 5);
    if (priority !== 5) body.priority = priority;
    const requires = value('requires');
    if (requires) {
      const pairs = requires.split(',').map((p) => p.trim()).filter(Boolean);
      const bad = pairs.find((p) => !LABEL_RE.test(p));
      if (bad) errors.requires = `requires: ${JSON.stringify(bad)} is not LABEL=VALUE (letters, digits, _ . - and : in values)`;
      else body.requires = Object.fromEntries(pairs.map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]));
    }
    return { body, errors };
  }

  async submit() {
    this.clearErrors();
    const { body, errors } = this.read();
    const wrong = FIELDS.filter((f) => errors[f]);
    if (wrong.length) {
      for (const f of wrong) this.showError(f, errors[f]);
      this.input(wrong[0]).focus();
      return;
    }
    this.submitButton.disabled = true;
    try {
      const task = await post('/api/v1/tasks', body);
      this.form.reset();
      this.input('type').value = body.type;
      this.dialog.close();
      this.onCreated(task);
    } catch (err) {
      this.serverError(err);
    } finally {
      this.submitButton.disabled = false;
    }
  }

  serverError(err) {
    const fields = err.status === 400 ? fieldsOf(err.message) : [];
    if (!fields.length) {
      this.showError(null, err.message);
      return;
    }
    const required = fields.length > 1 && /required/.test(err.message);
    for (const f of fields) this.showError(f, required ? `${f} is required` : err.message);
    this.input(fields[0]).focus();
  }
}
