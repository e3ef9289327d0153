// Postern's dashboard. Plain JavaScript, no build step, served from the binary.
//
// Every value from the server (user names, senders, log fields: all chosen by
// clients) reaches the page as text: element.append(string) and textContent
// create text nodes, never markup. This file never uses innerHTML.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = 'http://www.w3.org/2000/svg';
  let csrf = null;

  /** An element with attributes and children (strings become text nodes). */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'onclick') e.addEventListener('click', v);
      else e.setAttribute(k, v);
    }
    e.append(...children.filter((c) => c !== null && c !== undefined).map(node));
    return e;
  }
  /** A node as it is; anything else as a text node's string. */
  function node(c) { return typeof c === 'object' ? c : String(c); }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function show(id, on) { $(id).hidden = !on; }

  function note(id, text) {
    $(id).textContent = text || '';
    show(id, Boolean(text));
  }

  /** One API call; `{status, ok, data}`. A 401 means the session ended. */
  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (method !== 'GET') headers['X-CSRF-Token'] = csrf;
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    let data = null;
    try { data = await r.json(); } catch (_) { data = null; }
    if (r.status === 401) {
      signedOut();
      throw new Error('signed out');
    }
    return { status: r.status, ok: r.ok, data };
  }

  function failed(what, r) {
    const why = r.data && r.data.error ? r.data.error : 'HTTP ' + r.status;
    note('status', what + ': ' + why);
  }

  // ---- sign-in ----

  function signedOut() {
    csrf = null;
    show('dashboard', false);
    show('nav', false);
    show('signin', true);
    const reason = new URLSearchParams(location.search).get('signin');
    note('signin-error', reason === 'failed' ? 'Wrong token.' : '');
    $('token').focus();
  }

  async function start() {
    $('signout').addEventListener('click', signOut);
    $('flush').addEventListener('click', flush);
    $('log-search').addEventListener('submit', (e) => { e.preventDefault(); loadLog(); });
    const r = await fetch('/session', { credentials: 'same-origin', cache: 'no-store' });
    if (!r.ok) { signedOut(); return; }
    csrf = (await r.json()).csrf;
    if (location.search) history.replaceState(null, '', '/');
    show('signin', false);
    show('nav', true);
    show('dashboard', true);
    await refresh();
    setInterval(() => { refresh().catch(() => {}); }, 30000);
  }

  async function signOut() {
    await fetch('/signout', {
      method: 'POST', credentials: 'same-origin', headers: { 'X-CSRF-Token': csrf },
    });
    location.replace('/');
  }

  async function refresh() {
    await Promise.all([loadTraffic(), loadUsers(), loadQueue(), loadLog()]);
  }

  // ---- traffic charts ----

  async function loadTraffic() {
    const r = await api('GET', '/api/v1/stats/traffic');
    const t = r.ok && r.data ? r.data : { per_minute: [], per_hour: [] };
    const now = Math.floor(Date.now() / 1000);
    drawChart($('chart-minutes'), t.per_minute || [], 60, 360, now, minuteLabel);
    drawChart($('chart-hours'), t.per_hour || [], 3600, 168, now, hourLabel);
  }

  const pad2 = (n) => String(n).padStart(2, '0');
  function minuteLabel(d) { return pad2(d.getHours()) + ':' + pad2(d.getMinutes()); }
  function hourLabel(d) {
    return d.toLocaleDateString(undefined, { weekday: 'short' }) + ' ' + pad2(d.getHours()) + 'h';
  }

  /** The last `count` intervals of `step` seconds up to now, zero where unknown. */
  function buckets(points, step, count, now) {
    const byStart = new Map(points.map((p) => [p.start, p]));
    const last = Math.floor(now / step) * step;
    const out = [];
    for (let i = count - 1; i >= 0; i--) {
      const start = last - i * step;
      const p = byStart.get(start);
      out.push({ start, accepted: p ? p.accepted : 0, refused: p ? p.refused : 0 });
    }
    return out;
  }

  function niceMax(n) {
    if (n <= 4) return 4;
    const mag = Math.pow(10, Math.floor(Math.log10(n)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= n) return m * mag;
    return 10 * mag;
  }

  /** A stacked bar chart: accepted at the bottom, refused on top. */
  function drawChart(root, points, step, count, now, label) {
    const W = 800, H = 200, L = 44, R = 8, T = 10, B = 26;
    const data = buckets(points, step, count, now);
    const max = niceMax(Math.max(0, ...data.map((p) => p.accepted + p.refused)));
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const bw = (W - L - R) / count;
    root.replaceChildren(svg('rect', { class: 'bg', x: 0, y: 0, width: W, height: H }));
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      root.append(svg('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      root.append(svg('text', { class: 'axis', x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, String(v)));
    }
    data.forEach((p, i) => {
      const x = L + i * bw;
      const w = Math.max(bw - (bw > 3 ? 1 : 0), 0.8);
      if (p.accepted > 0) {
        root.append(svg('rect', { class: 'accepted', x, y: y(p.accepted), width: w, height: y(0) - y(p.accepted) }));
      }
      if (p.refused > 0) {
        const top = p.accepted + p.refused;
        root.append(svg('rect', { class: 'refused', x, y: y(top), width: w, height: y(p.accepted) - y(top) }));
      }
      const every = Math.ceil(count / 6);
      if ((count - 1 - i) % every === 0) {
        root.append(svg('line', { class: 'tick', x1: x + bw / 2, x2: x + bw / 2, y1: H - B, y2: H - B + 4 }));
        const anchor = i === count - 1 ? 'end' : 'middle';
        root.append(svg('text', { class: 'axis', x: x + bw / 2, y: H - 8, 'text-anchor': anchor },
          label(new Date(p.start * 1000))));
      }
    });
    root.append(svg('line', { class: 'baseline', x1: L, x2: W - R, y1: y(0), y2: y(0) }));
    if (data.every((p) => p.accepted + p.refused === 0)) {
      root.append(svg('text', { class: 'nodata', x: W / 2, y: H / 2, 'text-anchor': 'middle' },
        'No messages in this period'));
    }
  }

  // ---- users ----

  function usageCell(used, limit) {
    if (limit === null || limit === undefined) return el('td', {}, String(used), el('span', { class: 'muted' }, ' (no limit)'));
    const meter = el('meter', { min: 0, max: limit, value: Math.min(used, limit), low: limit * 0.7, high: limit * 0.9, optimum: 0 });
    return el('td', {}, meter, ' ' + used + ' / ' + limit);
  }

  function userState(u) {
    if (u.suspended) {
      const why = u.suspension ? ' (' + u.suspension.reason + ')' : '';
      return el('td', {}, el('span', { class: 'badge bad' }, 'suspended'), why);
    }
    if (u.disabled) return el('td', {}, el('span', { class: 'badge muted' }, 'disabled'));
    return el('td', {}, el('span', { class: 'badge good' }, 'active'));
  }

  async function loadUsers() {
    const r = await api('GET', '/api/v1/users');
    if (!r.ok) { failed('Users', r); return; }
    const rows = r.data.map((u) => {
      const path = '/api/v1/users/' + encodeURIComponent(u.name) + (u.suspended ? '/unsuspend' : '/suspend');
      const button = el('button', {
        type: 'button',
        class: u.suspended ? 'unsuspend' : 'suspend',
        'data-user': u.name,
        onclick: () => suspend(path, u.suspended),
      }, u.suspended ? 'Unsuspend' : 'Suspend');
      const lim = u.rate_limits || {};
      return el('tr', { 'data-user': u.name },
        el('td', { class: 'name' }, u.name),
        el('td', {}, (u.senders || []).join(', ')),
        userState(u),
        usageCell(u.usage.messages_last_hour, lim.messages_per_hour),
        usageCell(u.usage.recipients_last_hour, lim.recipients_per_hour),
        usageCell(u.usage.recipients_last_day, lim.recipients_per_day),
        el('td', {}, button));
    });
    $('users-body').replaceChildren(...rows);
    show('users-empty', rows.length === 0);
  }

  async function suspend(path, lifting) {
    const r = lifting ? await api('POST', path) : await api('POST', path, { reason: 'suspended from the dashboard' });
    if (!r.ok) failed(lifting ? 'Unsuspend' : 'Suspend', r);
    else note('status', '');
    await loadUsers();
  }

  // ---- queue ----

  function age(seconds) {
    if (seconds < 120) return seconds + ' s';
    if (seconds < 7200) return Math.round(seconds / 60) + ' min';
    if (seconds < 172800) return Math.round(seconds / 3600) + ' h';
    return Math.round(seconds / 86400) + ' d';
  }

  async function loadQueue() {
    const r = await api('GET', '/api/v1/queue');
    if (r.status === 409) {
      note('queue-note', 'No queue: messages go to the smarthost while the client waits (passthrough mode).');
      show('queue-table', false);
      show('flush', false);
      return;
    }
    if (!r.ok) { failed('Queue', r); return; }
    show('queue-table', r.data.length > 0);
    show('flush', r.data.length > 0);
    note('queue-note', r.data.length === 0 ? 'The queue is empty.' : '');
    $('queue-body').replaceChildren(...r.data.map((m) => el('tr', {},
      el('td', { class: 'mono' }, m.id),
      el('td', {}, m.user),
      el('td', {}, m.from || '<>'),
      el('td', {}, m.recipients.join(', ')),
      el('td', {}, m.size),
      el('td', {}, age(m.age_seconds)),
      el('td', {}, m.attempts),
      el('td', {}, m.last_error || ''),
      el('td', {}, el('button', { type: 'button', onclick: () => removeQueued(m.id) }, 'Delete')))));
  }

  async function flush() {
    const r = await api('POST', '/api/v1/queue/flush');
    if (!r.ok) failed('Flush', r);
    else note('queue-note', r.data.scheduled + ' message(s) scheduled for delivery now.');
    setTimeout(() => { loadQueue().catch(() => {}); }, 1000);
  }

  async function removeQueued(id) {
    if (!confirm('Delete queued message ' + id + '? It will not be delivered.')) return;
    const r = await api('DELETE', '/api/v1/queue/' + encodeURIComponent(id));
    if (!r.ok) failed('Delete', r);
    await loadQueue();
  }

  // ---- delivery log ----

  async function loadLog() {
    const user = $('log-user').value.trim();
    const q = new URLSearchParams({ limit: '100' });
    if (user) q.set('user', user);
    const r = await api('GET', '/api/v1/messages?' + q.toString());
    if (r.status === 404) {
      note('log-note', 'The delivery log is not available on this server.');
      show('log-table', false);
      return;
    }
    if (!r.ok) { failed('Delivery log', r); return; }
    const entries = Array.isArray(r.data) ? r.data : (r.data && r.data.messages) || [];
    show('log-table', entries.length > 0);
    note('log-note', entries.length === 0 ? (user ? 'No messages from ' + user + '.' : 'No messages yet.') : '');
    $('log-body').replaceChildren(...entries.map((m) => el('tr', {},
      el('td', { class: 'mono' }, m.time),
      el('td', {}, m.user),
      el('td', {}, m.client_ip || ''),
      el('td', {}, m.from || '<>'),
      el('td', {}, m.size),
      el('td', {}, el('span', { class: 'badge ' + statusClass(m.status) }, m.status)),
      el('td', {}, el('ul', { class: 'rcpts' }, ...(m.recipients || []).map((rc) => el('li', {},
        rc.address + ': ', el('span', { class: 'badge ' + statusClass(rc.status) }, rc.status),
        rc.reply ? ' ' + rc.reply : '')))))));
  }

  function statusClass(s) {
    if (s === 'delivered' || s === 'accepted' || s === 'queued') return 'good';
    if (s === 'deferred' || s === 'partial') return 'warn';
    return 'bad';
  }

  document.addEventListener('DOMContentLoaded', () => { start().catch((e) => note('status', String(e))); });
})();
