// Relais status page. Everything from the API is untrusted text (product and customer names come
// from central, barcodes from whatever was scanned): it only ever reaches the DOM as textContent.
'use strict';

const HEALTH_EVERY_MS = 2000;
const MAX_READS = 60;
// The agent sends a comment every 15 s on an idle stream; silence well beyond that means the
// connection died without closing (a phone changing networks), so it is reopened.
const STREAM_SILENCE_MS = 40000;
const MAX_BUFFER = 1 << 20;
const TOKEN_KEY = 'relais.token';
// What the agent accepts (printable ASCII); anything else could not even travel in a header.
const TOKEN_SHAPE = /^[\x21-\x7e]{1,512}$/;

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function setText(id, text) { $(id).textContent = text === undefined || text === null || text === '' ? '—' : String(text); }

// ---- token --------------------------------------------------------------------------------

let memoryToken = null; // when sessionStorage is unavailable (some private modes)

function saveToken(token) {
  memoryToken = token;
  try { sessionStorage.setItem(TOKEN_KEY, token); } catch (_) { /* memory only */ }
}

function token() {
  try { return sessionStorage.getItem(TOKEN_KEY) || memoryToken; } catch (_) { return memoryToken; }
}

// A token in the fragment never reaches the server or its logs; it is moved out of the address
// bar at once so it is not left in history, screenshots or a shared link.
function takeTokenFromFragment() {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (!m) return;
  let value = m[1];
  try { value = decodeURIComponent(value); } catch (_) { /* keep it raw */ }
  if (TOKEN_SHAPE.test(value)) saveToken(value);
  history.replaceState(null, '', location.pathname + location.search);
}

function headers() {
  const t = token();
  return t ? { Authorization: 'Bearer ' + t } : {};
}

let needsToken = false;

function askForToken() {
  if (needsToken) return;
  needsToken = true;
  stopAll();
  setConn('bad', token() ? 'Token refused' : 'Token needed');
  $('auth').hidden = false;
  $('token').focus();
}

// ---- formatting ---------------------------------------------------------------------------

const numberFmt = new Intl.NumberFormat();

function fmtCount(n) { return typeof n === 'number' ? numberFmt.format(n) : '—'; }

function fmtAge(seconds) {
  if (typeof seconds !== 'number' || !isFinite(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + ' s';
  const m = Math.floor(s / 60);
  if (m < 60) return m + ' min';
  const h = Math.floor(m / 60);
  if (h < 48) return h + ' h ' + (m % 60) + ' min';
  return Math.floor(h / 24) + ' d ' + (h % 24) + ' h';
}

function ageSince(ms) { return typeof ms === 'number' && ms > 0 ? (Date.now() - ms) / 1000 : null; }

function fmtSince(ms) {
  const age = ageSince(ms);
  return age === null ? '—' : fmtAge(age) + ' ago';
}

function fmtClock(ms) {
  const d = new Date(ms);
  return isNaN(d) ? '' : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
}

function fmtDateTime(ms) {
  const d = new Date(ms);
  return isNaN(d) ? '' : d.toLocaleString([], { hour12: false });
}

function fmtBytes(n) {
  if (typeof n !== 'number') return '—';
  if (n < 1024) return n + ' B';
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
  return (n / 1024 / 1024).toFixed(1) + ' MiB';
}

function fmtMoney(minor, currency) {
  if (typeof minor !== 'number') return null;
  try {
    const f = new Intl.NumberFormat(undefined, { style: 'currency', currency: currency });
    const digits = f.resolvedOptions().maximumFractionDigits;
    return f.format(minor / Math.pow(10, digits));
  } catch (_) {
    return (minor / 100).toFixed(2) + ' ' + String(currency || '');
  }
}

function badge(text, tone) { return el('span', 'badge' + (tone ? ' ' + tone : ''), text); }

const STATE_TONE = { connected: 'ok', disconnected: 'warn', faulty: 'bad' };

// ---- connection indicator -----------------------------------------------------------------

let streamOpen = false;
let healthOk = false;

function setConn(tone, text) {
  $('conn').className = 'conn ' + tone;
  $('conn-text').textContent = text;
}

function showConn() {
  if (needsToken) return;
  if (streamOpen) setConn('live', 'Live');
  else if (healthOk) setConn('wait', 'Reconnecting…');
  else setConn('bad', 'Agent unreachable · retrying');
}

// ---- health -------------------------------------------------------------------------------

let healthTimer = null;
let healthGen = 0;
let healthAt = 0;
let devices = new Map();

function tile(id, tone) { $('tile-' + id).className = 'tile ' + tone; }

async function pollHealth(gen) {
  try {
    const res = await fetch('/v1/health', { headers: headers(), cache: 'no-store' });
    if (gen !== healthGen) return;
    if (res.status === 401) { askForToken(); return; }
    if (!res.ok) throw new Error('HTTP ' + res.status);
    const health = await res.json();
    if (gen !== healthGen) return;
    renderHealth(health);
    healthOk = true;
    healthAt = Date.now();
    document.body.dataset.health = '1';
  } catch (_) {
    healthOk = false;
  }
  if (gen !== healthGen) return;
  showConn();
  renderUpdated();
  healthTimer = setTimeout(() => pollHealth(gen), HEALTH_EVERY_MS);
}

function renderUpdated() {
  const age = healthAt ? (Date.now() - healthAt) / 1000 : null;
  setText('updated', age === null ? 'never' : age < 3 ? 'just now' : fmtAge(age) + ' ago');
}

function renderHealth(h) {
  setText('agent', h.agent);
  setText('version', h.version ? 'v' + h.version : '');
  setText('uptime', fmtAge(h.uptime_s));

  const degraded = h.status !== 'ok';
  setText('status', degraded ? 'Degraded' : 'OK');
  tile('status', degraded ? 'warn' : 'ok');
  setText('status-note', degraded ? 'an alarm is raised or a stream is stale' : 'all checks pass');

  renderSync(h.sync || {});
  renderOutbox(h.outbox || {}, h.oldest_unsent_store_fact_age_s, h.dead_letters);
  renderAlarms(h.alarms || []);
  renderReplica(h.replica || []);
  renderConfig(h.config);

  devices = new Map((h.devices || []).map((d) => [d.device, d]));
  renderDevices();
}

function renderSync(s) {
  let state;
  let tone;
  if (!s.configured) { state = 'No broker'; tone = 'idle'; }
  else if (s.connected) { state = 'Online'; tone = 'ok'; }
  // `connected` means the broker acknowledges: a link that is up but silent says so.
  else if (s.link === 'stalled') { state = 'Stalled'; tone = 'bad'; }
  else if (s.link === 'refused') { state = 'Refused'; tone = 'bad'; }
  else if (s.link === 'connecting') { state = 'Connecting'; tone = 'warn'; }
  else { state = 'Offline'; tone = 'bad'; }
  setText('sync', state);
  tile('sync', tone);
  $('sync-note').textContent = !s.configured
    ? 'sync not configured: facts wait here'
    : s.since_ms ? 'for ' + fmtAge(ageSince(s.since_ms)) : '';

  const link = $('sync-link');
  link.replaceChildren(badge(state, tone));
  if (s.configured && s.since_ms) link.append(' ', el('span', 'muted small', fmtSince(s.since_ms)));
  setText('sync-delivered', fmtCount(s.delivered_since_start));
  setText('sync-error', s.last_error);
  const paused = s.paused_streams || [];
  const p = $('sync-paused');
  if (!paused.length) { p.textContent = 'none'; return; }
  p.replaceChildren(...paused.map((x) => {
    const d = el('div');
    d.append(badge(x.stream, 'warn'), ' ', el('span', 'small', x.reason));
    return d;
  }));
}

function renderOutbox(o, oldestFactAge, deadLetters) {
  const facts = o.store_fact || {};
  const tele = o.telemetry || {};
  const total = (facts.depth || 0) + (tele.depth || 0);
  setText('backlog', fmtCount(total));
  setText('backlog-note', fmtCount(facts.depth || 0) + ' store facts · ' + fmtCount(tele.depth || 0) + ' telemetry');
  tile('backlog', total === 0 ? 'ok' : facts.depth > 0 ? 'warn' : 'idle');

  if (typeof oldestFactAge === 'number') {
    setText('oldest', fmtAge(oldestFactAge));
    setText('oldest-note', 'waiting for central');
    tile('oldest', oldestFactAge > 3600 ? 'bad' : oldestFactAge > 300 ? 'warn' : 'idle');
  } else {
    setText('oldest', 'None');
    $('oldest-note').textContent = 'every store fact was delivered';
    tile('oldest', 'ok');
  }

  setText('dead', fmtCount(deadLetters || 0));
  $('dead-note').textContent = deadLetters ? 'refused by the broker: fix, then requeue' : 'nothing refused';
  tile('dead', deadLetters ? 'bad' : 'ok');

  const body = $('outbox');
  body.replaceChildren(
    outboxRow('Store facts', facts),
    outboxRow('Telemetry', tele),
  );
}

function outboxRow(name, c) {
  const tr = el('tr');
  tr.append(
    el('td', null, name),
    el('td', 'num', fmtCount(c.depth || 0)),
    el('td', 'num', fmtBytes(c.bytes || 0)),
    el('td', 'num', c.oldest_unsent_ms ? fmtAge(ageSince(c.oldest_unsent_ms)) : '—'),
  );
  return tr;
}

function renderAlarms(alarms) {
  setText('alarm-count', fmtCount(alarms.length));
  tile('alarms', alarms.length ? 'bad' : 'ok');
  $('alarm-note').textContent = alarms.length ? alarms.map((a) => a.code).join(', ') : 'nothing to act on';
  const list = $('alarms');
  if (!alarms.length) { list.replaceChildren(el('li', 'empty', 'No alarm')); return; }
  list.replaceChildren(...alarms.map((a) => {
    const li = el('li', 'row');
    const head = el('div', 'row-head');
    head.append(badge(a.code, 'bad'), el('span', 'muted small', 'since ' + fmtDateTime(a.raised_ms)));
    head.lastChild.title = fmtSince(a.raised_ms);
    li.append(head, el('div', 'row-sub', a.message));
    return li;
  }));
}

function renderReplica(streams) {
  const body = $('replica');
  if (!streams.length) { body.replaceChildren(); return; }
  body.replaceChildren(...streams.map((s) => {
    const tr = el('tr');
    const flag = el('td', 'num');
    if (s.age_s === null || s.age_s === undefined) flag.append(badge('never loaded', 'bad'));
    else if (s.stale) flag.append(badge('stale', 'warn'));
    else flag.append(badge('fresh', 'ok'));
    tr.append(
      el('td', null, s.stream),
      el('td', 'num', fmtCount(s.version)),
      el('td', 'num', s.age_s === null || s.age_s === undefined ? '—' : fmtAge(s.age_s)),
      flag,
    );
    return tr;
  }));
}

function renderConfig(c) {
  setText('config-hash', c && c.hash);
  setText('config-source', c && c.source);
}

function renderDevices() {
  const list = $('devices');
  const all = Array.from(devices.values());
  const up = all.filter((d) => d.state === 'connected').length;
  $('devices-count').textContent = all.length ? up + ' of ' + all.length + ' connected' : '';
  if (!all.length) { list.replaceChildren(el('li', 'empty', 'No device configured')); return; }
  list.replaceChildren(...all.map((d) => {
    const li = el('li', 'row');
    const head = el('div', 'row-head');
    head.append(el('span', 'row-name', d.device), badge(d.state, STATE_TONE[d.state] || ''));
    const parts = [];
    if (d.detail) parts.push(d.detail);
    parts.push(fmtCount(d.reads) + ' reads');
    if (d.since_ms) parts.push(d.state + ' for ' + fmtAge(ageSince(d.since_ms)));
    li.append(head, el('div', 'row-sub', parts.join(' · ')));
    return li;
  }));
}

// ---- live reads ---------------------------------------------------------------------------

let readCount = 0;

const KIND = {
  scan: ['Scan', 'info'],
  card: ['Card', 'info'],
  card_removed: ['Card removed', ''],
  tag_arrived: ['Tag in', 'ok'],
  tag_departed: ['Tag out', ''],
  status: ['Status', 'warn'],
  lagged: ['Missed', 'bad'],
};

function describe(kind, read) {
  const d = read.detail || {};
  switch (kind) {
    case 'scan': {
      if (d.withheld) return { main: 'Scan withheld', sub: ['looks like a card number: neither shown nor kept'] };
      const dec = d.decoded || {};
      const sym = dec.symbology && dec.symbology.name;
      if (d.error) return { main: 'Invalid code', sub: [d.error, d.data ? 'data ' + d.data : null] };
      const gtin = dec.gtin ? 'GTIN ' + dec.gtin : null;
      if (d.found && d.product) {
        const p = d.product;
        const price = p.price ? fmtMoney(p.price.price_minor, p.price.currency) : null;
        const promo = p.price && p.price.kind === 'promo' ? 'promotion' : null;
        const stock = p.stock ? 'stock ' + fmtCount(p.stock.available) : null;
        const sc = d.scan || {};
        const charge = sc.price_to_charge ? 'charge ' + fmtMoney(sc.price_to_charge.amount_minor, sc.price_to_charge.currency) : null;
        const weight = sc.net_weight_kg ? sc.net_weight_kg + ' kg' : null;
        const expired = sc.expired ? 'EXPIRED ' + sc.expiry_date : null;
        return { main: p.name, sub: [sym, gtin, p.sku, charge || price, weight, promo, expired, stock, p.stale ? 'replica stale' : null] };
      }
      const what = gtin || dec.bracketed || dec.sscc || dec.text || d.data;
      return { main: gtin ? 'Not in the replica' : 'Scanned', sub: [sym, what] };
    }
    case 'card': {
      const c = d.customer;
      const via = d.via === 'scanner' ? 'read by a scanner' : null;
      if (!d.known || !c) return { main: 'Unknown card', sub: ['no customer for this card', via] };
      const balance = typeof c.loyalty_balance === 'number' ? fmtCount(c.loyalty_balance) + ' points' : null;
      return { main: c.display_name || 'Known customer', sub: [c.tier, balance, via] };
    }
    case 'card_removed':
      return { main: 'Card taken away', sub: [] };
    case 'tag_arrived':
    case 'tag_departed': {
      const rssi = typeof d.rssi_dbm === 'number' ? d.rssi_dbm + ' dBm' : null;
      const reads = typeof d.reads === 'number' ? fmtCount(d.reads) + ' reads' : null;
      return {
        main: d.gtin ? 'GTIN ' + d.gtin : 'EPC ' + (d.epc || '?'),
        sub: [d.scheme, d.gtin ? 'EPC ' + d.epc : null, d.antenna !== undefined ? 'antenna ' + d.antenna : null, rssi, reads],
      };
    }
    case 'status':
      return { main: 'Device ' + (d.state || 'changed'), sub: [d.detail] };
    case 'lagged':
      return { main: fmtCount(read.missed) + ' reads not shown', sub: ['this page fell behind the devices'] };
    default:
      return { main: kind, sub: [] };
  }
}

function addRead(kind, read) {
  const [label, kindTone] = KIND[kind] || [kind, ''];
  const tone = kind === 'status' ? STATE_TONE[(read.detail || {}).state] || kindTone : kindTone;
  const { main, sub } = describe(kind, read);
  const li = el('li', 'read fresh kind-' + kind);
  li.dataset.kind = kind;
  li.append(badge(label, tone), el('span', 'main', main), el('span', 'when', fmtClock(read.at_ms || Date.now())));
  if (read.device) li.append(el('span', 'dev', read.device));
  const parts = sub.filter((x) => x !== null && x !== undefined && x !== '');
  if (parts.length) li.append(el('span', 'sub', parts.join(' · ')));

  const list = $('reads');
  const empty = $('reads-empty');
  if (empty) empty.remove();
  list.prepend(li);
  while (list.children.length > MAX_READS) list.lastElementChild.remove();
  readCount += 1;
  $('reads-count').textContent = fmtCount(readCount) + ' since this page opened';
}

function onEvent(kind, data) {
  let read;
  try { read = JSON.parse(data); } catch (_) { return; }
  if (!read || typeof read !== 'object') return;
  addRead(kind, read);
  // The board in /v1/health catches up every 2 s; a device's change shows at once meanwhile.
  const d = read.device && devices.get(read.device);
  if (kind === 'status' && read.detail) {
    devices.set(read.device, Object.assign({}, d || { device: read.device, reads: 0 }, {
      state: read.detail.state, detail: read.detail.detail, since_ms: read.at_ms,
    }));
    renderDevices();
  } else if (d && (kind === 'scan' || kind === 'card' || kind === 'tag_arrived')) {
    d.reads = (d.reads || 0) + 1;
    renderDevices();
  }
}

// ---- event stream (fetch, because EventSource cannot send the Authorization header) --------

let streamGen = 0;
let streamAbort = null;
let retryMs = 2000;
let lastByteAt = 0;

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

function setLive(open) {
  streamOpen = open;
  document.body.dataset.live = open ? '1' : '0';
  showConn();
}

// Server-Sent Events framing (HTML standard, "event stream interpretation"), enough of it for
// this agent: `event`, `data`, `retry`, comments; any line ending.
async function readFrames(body, dispatch) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let event = '';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    lastByteAt = Date.now();
    buf += value;
    if (buf.length > MAX_BUFFER) throw new Error('event line too long');
    for (;;) {
      const nl = buf.search(/[\r\n]/);
      if (nl < 0) break;
      // A CR at the end may be the first half of a CRLF split across chunks.
      if (buf[nl] === '\r' && nl + 1 === buf.length) break;
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
      if (line === '') {
        if (data.length) dispatch(event || 'message', data.join('\n'));
        event = '';
        data = [];
        continue;
      }
      if (line[0] === ':') continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? '' : line.slice(colon + 1);
      if (val[0] === ' ') val = val.slice(1);
      if (field === 'event') event = val;
      else if (field === 'data') data.push(val);
      else if (field === 'retry' && /^\d+$/.test(val)) retryMs = Number(val);
    }
  }
}

async function runStream() {
  const gen = ++streamGen;
  let failures = 0;
  while (gen === streamGen) {
    const abort = new AbortController();
    streamAbort = abort;
    let opened = false;
    try {
      const res = await fetch('/v1/events', { headers: headers(), cache: 'no-store', signal: abort.signal });
      if (res.status === 401) { askForToken(); return; }
      if (!res.ok || !res.body) throw new Error('HTTP ' + res.status);
      opened = true;
      failures = 0;
      lastByteAt = Date.now();
      setLive(true);
      await readFrames(res.body, onEvent);
    } catch (_) {
      // Network error, agent restart or our own abort: all end in a reconnection below.
    }
    if (gen !== streamGen) return;
    setLive(false);
    if (!opened) failures += 1;
    // The server's `retry:` first, doubling while the agent stays unreachable; jitter keeps a
    // room full of open tabs from reconnecting in step after an agent restart.
    const wait = Math.min(30000, retryMs * Math.pow(2, Math.min(failures, 4)));
    await sleep(wait * (0.8 + Math.random() * 0.4));
  }
}

setInterval(() => {
  if (streamOpen && streamAbort && Date.now() - lastByteAt > STREAM_SILENCE_MS) streamAbort.abort();
  renderUpdated();
}, 5000);

// ---- start / stop -------------------------------------------------------------------------

// Stopping bumps the generations, so a poll or stream begun before ends instead of running twice.
function stopAll() {
  streamGen += 1;
  healthGen += 1;
  if (streamAbort) streamAbort.abort();
  clearTimeout(healthTimer);
  setLive(false);
}

function startAll() {
  needsToken = false;
  $('auth').hidden = true;
  setConn('wait', 'Connecting…');
  healthGen += 1;
  pollHealth(healthGen);
  runStream();
}

$('auth-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = $('token');
  const value = input.value.trim();
  if (!TOKEN_SHAPE.test(value)) {
    input.setCustomValidity('A token is printable characters without spaces.');
    input.reportValidity();
    return;
  }
  saveToken(value);
  $('token').value = '';
  startAll();
});

$('token').addEventListener('input', () => $('token').setCustomValidity(''));

window.addEventListener('hashchange', () => {
  if (/(?:^#|&)token=/.test(location.hash)) {
    takeTokenFromFragment();
    stopAll();
    startAll();
  }
});

takeTokenFromFragment();
startAll();
