// The switchyard dashboard: reads the admin API's JSON every 2 s and draws it. Everything it
// shows goes in with textContent or SVG attributes (never as HTML), and it fetches nothing but
// this admin listener's own paths.
'use strict';

const REFRESH_MS = 2000;
const FETCH_TIMEOUT_MS = 5000;
const TOKEN_KEY = 'switchyard.admin.token';
const SOON_DAYS = 30;
const SVG_NS = 'http://www.w3.org/2000/svg';

const tokenRequired =
  document.querySelector('meta[name="switchyard-token"]').content === 'required';
let token = sessionStorage.getItem(TOKEN_KEY);
let timer = null;

class Unauthorized extends Error {}

function $(id) { return document.getElementById(id); }

// el('td', {class: 'num'}, 'text', child, ...): an element with attributes and children.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function fill(id, rows) { $(id).replaceChildren(...rows); }

async function api(path) {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
  try {
    const headers = token ? { authorization: 'Bearer ' + token } : {};
    const r = await fetch(path, { headers, signal: ctl.signal, cache: 'no-store', credentials: 'omit' });
    if (r.status === 401) throw new Unauthorized(path);
    if (!r.ok) throw new Error(path + ' answered ' + r.status);
    return await r.json();
  } finally {
    clearTimeout(t);
  }
}

function ago(iso) {
  if (!iso) return 'never';
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return Math.max(s, 0) + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' d ago';
}

function when(iso) { return el('span', { title: iso || '' }, ago(iso)); }

function sum(a) { return (a || []).reduce((x, y) => x + (y || 0), 0); }

function errorArrays(errors) { return Object.values(errors || {}); }

function errorTotal(errors) { return errorArrays(errors).reduce((x, a) => x + sum(a), 0); }

function pct(n, d) { return d ? (100 * n / d).toFixed(n && 100 * n / d < 0.1 ? 2 : 1) + ' %' : '–'; }

function lastNonNull(a) {
  for (let i = (a || []).length - 1; i >= 0; i--) if (a[i] !== null && a[i] !== undefined) return a[i];
  return null;
}

function ms(v) { return v === null || v === undefined ? '–' : (v < 10 ? v.toFixed(2) : v.toFixed(0)) + ' ms'; }

// A small chart of one series: requests per second per bucket (blue) and errors per second
// (red), over the last 5 minutes.
function spark(series, bucketSeconds) {
  const w = 150, h = 30;
  const req = series.requests || [];
  const err = req.map((_, i) => errorArrays(series.errors).reduce((x, a) => x + (a[i] || 0), 0));
  const max = Math.max(1, ...req);
  const pts = (a) => a.map((v, i) =>
    (i * (w - 2) / Math.max(1, a.length - 1) + 1).toFixed(1) + ',' + (h - 1 - v * (h - 2) / max).toFixed(1)).join(' ');
  const s = svg('svg', { class: 'spark', width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: 'img' });
  const title = svg('title', {});
  title.textContent = `peak ${(max / bucketSeconds).toFixed(1)} req/s; ` +
    `${sum(req)} requests, ${sum(err)} errors in 5 min`;
  s.append(title,
    svg('line', { x1: 0, y1: h - 0.5, x2: w, y2: h - 0.5, stroke: '#d9dee5' }),
    svg('polyline', { points: pts(req), fill: 'none', stroke: '#0b5cad', 'stroke-width': 1.5 }),
    svg('polyline', { points: pts(err), fill: 'none', stroke: '#c4291c', 'stroke-width': 1.5 }));
  return s;
}

function rateCells(series, bucketSeconds) {
  if (!series) return [el('td', { class: 'num muted' }, '–'), el('td', { class: 'num muted' }, '–'),
    el('td', { class: 'num muted' }, '–'), el('td', {}, '')];
  const req = series.requests || [];
  const last = req.length ? req[req.length - 1] : 0;
  const errs = errorTotal(series.errors);
  const share = sum(req) ? errs / sum(req) : 0;
  const errorClass = share >= 0.05 ? 'num bad' : errs ? 'num warn' : 'num';
  return [
    el('td', { class: 'num' }, (last / bucketSeconds).toFixed(1)),
    el('td', { class: errorClass, title: `${errs} of ${sum(req)} requests` }, pct(errs, sum(req))),
    el('td', { class: 'num' }, ms(lastNonNull(series.p99_ms))),
    el('td', {}, spark(series, bucketSeconds)),
  ];
}

function matchText(r) {
  const parts = [];
  if (r.hosts && r.hosts.length) parts.push('host ' + r.hosts.join(', '));
  const m = r.match || {};
  if (m.path !== undefined) parts.push('path = ' + m.path);
  if (m.path_prefix !== undefined) parts.push('prefix ' + m.path_prefix);
  if (m.path_regex !== undefined) parts.push('regex ' + m.path_regex);
  if (r.methods && r.methods.length) parts.push(r.methods.join('|'));
  for (const [k, v] of Object.entries(r.headers || {})) parts.push(`${k}: ${v}`);
  for (const [k, v] of Object.entries(r.query || {})) parts.push(`?${k}=${v}`);
  return parts.join(' · ');
}

function targetText(t) {
  if (t.upstream !== undefined) return '→ ' + t.upstream;
  if (t.split) return '→ ' + t.split.map((s) => `${s.upstream} ${s.weight}%`).join(', ');
  if (t.respond) return 'respond ' + t.respond.status;
  if (t.redirect) return `redirect ${t.redirect.status} ${t.redirect.to}`;
  return JSON.stringify(t);
}

function byName(list) {
  const m = new Map();
  for (const x of list || []) m.set(x.name, x);
  return m;
}

function errorBox(e, label) {
  return el('div', { class: 'error-box', 'data-error': label },
    el('span', { class: 'bad' }, label + ': '),
    el('code', {}, `${e.file}:${e.line}:${e.column}`), ' ', e.message,
    e.at ? el('span', { class: 'muted' }, ' (', when(e.at), ')') : null);
}

function renderConfig(cfg) {
  const rows = [
    el('div', { class: 'meta' },
      el('span', {}, 'version ', el('b', { id: 'config-version' }, cfg.version)),
      el('span', {}, 'loaded ', when(cfg.loaded_at)),
      el('span', { class: 'muted' }, (cfg.files || []).length + ' route files')),
  ];
  if (cfg.last_error) rows.push(errorBox(cfg.last_error, 'last reload failed, still serving version ' + cfg.version));
  else rows.push(el('div', { class: 'ok', id: 'reload-ok' }, 'last reload succeeded'));
  for (const e of cfg.tls_errors || []) rows.push(errorBox(e, 'TLS'));
  $('reload-body').replaceChildren(...rows);
}

function renderRoutes(routes, stats) {
  const bs = stats.bucket_seconds || 10;
  const st = byName(stats.routes);
  fill('routes-body', routes.map((r, i) => el('tr', { 'data-route': r.name },
    el('td', { class: 'num muted' }, i + 1),
    el('td', { title: `${r.file}:${r.line}` }, el('b', {}, r.name)),
    el('td', { class: 'mono' }, matchText(r)),
    el('td', {}, targetText(r.target)),
    ...rateCells(st.get(r.name), bs))));
}

function health(ep) {
  if (ep.ejected_until) return el('span', { class: 'badge warn' }, 'ejected');
  const cls = { healthy: 'ok', unhealthy: 'bad', unknown: 'muted' }[ep.health] || 'muted';
  return el('span', { class: 'badge ' + cls }, ep.health);
}

function renderUpstreams(ups, stats) {
  const bs = stats.bucket_seconds || 10;
  const st = byName(stats.upstreams);
  $('upstreams-body').replaceChildren(...ups.map((u) => {
    const d = u.discovery || {};
    const s = st.get(u.name);
    const rates = rateCells(s, bs);
    return el('div', { class: 'upstream', 'data-upstream': u.name },
      el('h3', {}, u.name),
      el('div', { class: 'meta' },
        el('span', {}, 'balance ', u.balance),
        el('span', { 'data-discovery': d.type }, 'discovery ', d.type, ': ',
          d.last_error ? el('span', { class: 'bad' }, 'error: ' + d.last_error) : el('span', { class: 'ok' }, 'ok'),
          ', updated ', when(d.last_update)),
        u.panic ? el('span', { class: 'badge bad' }, 'panic mode') : null,
        s ? el('span', {}, rates[0].textContent + ' req/s, errors ' + rates[1].textContent) : null,
        s ? spark(s, bs) : null),
      el('div', { class: 'scroll' }, el('table', {},
        el('thead', {}, el('tr', {}, ...['endpoint', 'weight', 'health', 'ejected until', 'in flight', 'EWMA']
          .map((h) => el('th', {}, h)))),
        el('tbody', {}, ...(u.endpoints || []).map((ep) => el('tr', { 'data-endpoint': ep.address },
          el('td', { class: 'mono' }, ep.address),
          el('td', { class: 'num' }, ep.weight),
          el('td', { class: 'health', 'data-health': ep.ejected_until ? 'ejected' : ep.health }, health(ep)),
          el('td', {}, ep.ejected_until ? el('span', { title: ep.ejected_until }, new Date(ep.ejected_until).toLocaleTimeString()) : '–'),
          el('td', { class: 'num' }, ep.in_flight),
          el('td', { class: 'num' }, ms(ep.ewma_ms))))))));
  }));
}

function renderCertificates(certs) {
  const now = Date.now();
  const rows = [];
  for (const c of certs || []) {
    const left = (Date.parse(c.not_after) - now) / 86400000;
    const cls = left < 0 ? 'expired' : left < SOON_DAYS ? 'soon' : '';
    rows.push(el('tr', { class: cls, 'data-cert': c.name },
      el('td', { class: 'mono', title: c.dir }, c.name),
      el('td', { class: 'mono' }, (c.names || []).join(', ')),
      el('td', { title: c.not_after }, new Date(c.not_after).toISOString().slice(0, 10)),
      el('td', { class: left < 0 ? 'num bad' : left < SOON_DAYS ? 'num warn' : 'num' },
        left < 0 ? 'expired' : Math.floor(left) + ' days')));
  }
  if (!rows.length) rows.push(el('tr', {}, el('td', { colspan: 4, class: 'muted' }, 'no TLS listener')));
  fill('certificates-body', rows);
}

function renderFleet(source, fleet) {
  $('fleet').hidden = !source;
  if (!source) return;
  const problems = [];
  if (source.source_error) problems.push('source unreachable: ' + source.source_error.message);
  if (source.last_error) problems.push('published set refused: ' + source.last_error);
  if (fleet && fleet.error) problems.push('members: ' + fleet.error);
  $('fleet-source').replaceChildren(el('div', { class: 'meta' },
    el('span', {}, 'source ', source.type),
    el('span', {}, 'published ', source.published_version ?? '–'),
    el('span', {}, 'applied ', source.applied_version ?? '–')),
  ...problems.map((p) => el('div', { class: 'bad', 'data-fleet-error': '' }, p)));
  fill('fleet-body', ((fleet && fleet.members) || []).map((m) => el('tr', { 'data-member': m.id },
    el('td', { class: 'mono' }, m.id),
    el('td', {}, m.hostname),
    el('td', { class: 'mono' }, (m.listeners || []).map((l) => `${l.name} ${l.address}`).join(', ')),
    el('td', { class: 'mono' }, m.admin || '–'),
    el('td', { class: 'num' }, m.routes_version ?? '–'),
    el('td', { class: m.last_error ? 'bad' : 'muted' }, m.last_error || 'none'),
    el('td', {}, when(m.started_at)))));
}

function setStatus(text, bad) {
  const s = $('status');
  s.textContent = text;
  s.className = bad ? 'status bad' : 'status';
}

function askForToken(rejected) {
  clearTimeout(timer);
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $('main').hidden = true;
  $('token-error').hidden = !rejected;
  $('token-form').hidden = false;
  setStatus('token needed', rejected);
  $('token-input').focus();
}

async function refresh() {
  try {
    // One after another, not at once: the browser then needs only one keep-alive connection,
    // and the admin API serves at most 64 (dashboards must not crowd out metric scrapers).
    const cfg = await api('/config');
    const routes = await api('/routes');
    const ups = await api('/upstreams');
    const stats = await api('/stats');
    // The members come from the fleet's source: when it cannot be read, the rest of the page
    // still refreshes, and the fleet section says why.
    const fleet = cfg.source
      ? await api('/fleet').catch((e) => {
        if (e instanceof Unauthorized) throw e;
        return { error: e.message };
      })
      : null;
    renderConfig(cfg);
    renderRoutes(routes.routes || [], stats);
    renderUpstreams(ups.upstreams || [], stats);
    renderCertificates(cfg.certificates);
    renderFleet(cfg.source, fleet);
    $('token-form').hidden = true;
    $('main').hidden = false;
    setStatus('updated ' + new Date().toLocaleTimeString() + ', every ' + REFRESH_MS / 1000 + ' s', false);
  } catch (e) {
    if (e instanceof Unauthorized) {
      askForToken(true);
      return;
    }
    setStatus('cannot reach the admin API: ' + e.message + ' (retrying)', true);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  token = $('token-input').value.trim();
  $('token-input').value = '';
  sessionStorage.setItem(TOKEN_KEY, token);
  $('token-form').hidden = true;
  setStatus('loading…', false);
  refresh();
});

if (tokenRequired && !token) askForToken(false);
else refresh();
