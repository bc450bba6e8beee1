// sip.js — a minimal SIP user agent over WebSocket (RFC 3261, RFC 7118).
//
// It does exactly what a softphone with one call at a time needs: INVITE
// with an SDP offer, provisional and final responses (with early media),
// ACK for 2xx and non-2xx, CANCEL, BYE in both directions, OPTIONS,
// REGISTER, digest authentication (MD5), and incoming calls that the user
// accepts or declines. WebSocket is a reliable transport, so no
// request retransmission timers are needed (RFC 3261 §17.1.1.2); the only
// retransmission we still meet is a 2xx to INVITE from the far end, which we
// re-ACK.

const USER_AGENT = 'mediarelay-softphone/1';
const ALLOW = 'INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY, UPDATE';

// Compact header forms (RFC 3261 §7.3.3 and later RFCs).
const COMPACT = {
  a: 'accept-contact', b: 'referred-by', c: 'content-type', d: 'request-disposition',
  e: 'content-encoding', f: 'from', i: 'call-id', j: 'reject-contact', k: 'supported',
  l: 'content-length', m: 'contact', o: 'event', r: 'refer-to', s: 'subject', t: 'to',
  u: 'allow-events', v: 'via', x: 'session-expires', y: 'identity',
};

// Headers whose values may be joined with commas on one line. Only those we
// read per value are listed; others are kept as the peer wrote them.
const COMMA_LISTS = new Set(['via', 'route', 'record-route', 'contact']);

// How long a reliable-transport INVITE may go without any response (Timer B).
const TIMER_B_MS = 32000;
// How long we wait for the response to BYE or CANCEL before giving up on it.
const NON_INVITE_TIMEOUT_MS = 5000;

/** Returns a random token of base-36 characters. */
export function randomToken(n = 10) {
  const bytes = crypto.getRandomValues(new Uint8Array(n));
  return Array.from(bytes, (b) => (b % 36).toString(36)).join('');
}

function newBranch() {
  return 'z9hG4bK' + randomToken(14);
}

/** Splits a header value on commas that are outside quotes and <>. */
export function splitCommas(value) {
  const out = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    if (quoted) {
      if (ch === '\\') i++;
      else if (ch === '"') quoted = false;
    } else if (ch === '"') quoted = true;
    else if (ch === '<') depth++;
    else if (ch === '>') depth = Math.max(0, depth - 1);
    else if (ch === ',' && depth === 0) {
      out.push(value.slice(start, i).trim());
      start = i + 1;
    }
  }
  out.push(value.slice(start).trim());
  return out.filter((v) => v !== '');
}

/** Parses ";a=b;c" into a Map with lower-case names ('' for valueless ones). */
export function parseParams(text) {
  const params = new Map();
  for (const part of text.split(';')) {
    const p = part.trim();
    if (!p) continue;
    const eq = p.indexOf('=');
    if (eq < 0) params.set(p.toLowerCase(), '');
    else params.set(p.slice(0, eq).trim().toLowerCase(), p.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1'));
  }
  return params;
}

/**
 * Parses a name-addr or addr-spec header value (From, To, Contact, Route):
 * '"Alice" <sip:alice@x;transport=ws>;tag=1' gives
 * {display: 'Alice', uri: 'sip:alice@x;transport=ws', params: Map{tag: '1'}}.
 */
export function parseNameAddr(value) {
  let v = value.trim();
  let display = '';
  // A quoted display name may itself contain '<', so skip it first.
  if (v.startsWith('"')) {
    let i = 1;
    for (; i < v.length && v[i] !== '"'; i++) if (v[i] === '\\') i++;
    display = v.slice(1, i).replace(/\\(.)/g, '$1');
    v = v.slice(i + 1).trim();
  }
  const lt = v.indexOf('<');
  if (lt >= 0) {
    const gt = v.indexOf('>', lt);
    if (gt < 0) throw new Error('unterminated <uri> in ' + JSON.stringify(value));
    if (!display) display = v.slice(0, lt).trim();
    return { display, uri: v.slice(lt + 1, gt).trim(), params: parseParams(v.slice(gt + 1)) };
  }
  // In an addr-spec, parameters after the URI belong to the header (§20.10).
  const semi = v.indexOf(';');
  if (semi < 0) return { display, uri: v, params: new Map() };
  return { display, uri: v.slice(0, semi).trim(), params: parseParams(v.slice(semi)) };
}

/** Parses a Via value "SIP/2.0/WSS host:port;branch=..." . */
export function parseVia(value) {
  const m = /^\s*SIP\s*\/\s*2\.0\s*\/\s*([A-Za-z]+)\s+([^;\s]+)\s*(.*)$/i.exec(value);
  if (!m) throw new Error('bad Via: ' + JSON.stringify(value));
  return { transport: m[1].toUpperCase(), sentBy: m[2], params: parseParams(m[3]) };
}

/** Parses a CSeq value "314 INVITE". */
export function parseCSeq(value) {
  const m = /^\s*(\d+)\s+([A-Za-z]+)\s*$/.exec(value || '');
  if (!m) throw new Error('bad CSeq: ' + JSON.stringify(value));
  return { seq: Number(m[1]), method: m[2].toUpperCase() };
}

/** Counts the bytes of a string in UTF-8, which is what Content-Length counts. */
export function byteLength(s) {
  return new TextEncoder().encode(s).length;
}

// MD5 (RFC 1321) is what SIP digest authentication uses, and WebCrypto
// does not offer it.
const MD5_S = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
const MD5_K = Array.from({ length: 64 }, (_, i) => Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32) >>> 0);

/** Returns the MD5 of a string's UTF-8 bytes as lower-case hex. */
export function md5hex(str) {
  const msg = new TextEncoder().encode(str);
  const len = msg.length;
  const blocks = ((len + 8) >> 6) + 1;
  const w = new Uint32Array(blocks * 16);
  for (let i = 0; i < len; i++) w[i >> 2] |= msg[i] << ((i % 4) * 8);
  w[len >> 2] |= 0x80 << ((len % 4) * 8);
  w[blocks * 16 - 2] = (len * 8) >>> 0;
  w[blocks * 16 - 1] = Math.floor(len / 0x20000000);
  let h = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
  for (let off = 0; off < w.length; off += 16) {
    let [a, b, c, d] = h;
    for (let i = 0; i < 64; i++) {
      let f, g;
      if (i < 16) { f = (b & c) | (~b & d); g = i; }
      else if (i < 32) { f = (d & b) | (~d & c); g = (5 * i + 1) % 16; }
      else if (i < 48) { f = b ^ c ^ d; g = (3 * i + 5) % 16; }
      else { f = c ^ (b | ~d); g = (7 * i) % 16; }
      const x = (a + f + MD5_K[i] + w[off + g]) >>> 0;
      const r = MD5_S[(i >> 4) * 4 + (i % 4)];
      [a, d, c] = [d, c, b];
      b = (b + ((x << r) | (x >>> (32 - r)))) >>> 0;
    }
    h = [(h[0] + a) >>> 0, (h[1] + b) >>> 0, (h[2] + c) >>> 0, (h[3] + d) >>> 0];
  }
  return h.map((v) => [0, 8, 16, 24].map((sh) => ((v >>> sh) & 0xff).toString(16).padStart(2, '0')).join('')).join('');
}

/** Parses a 'Digest realm="x", nonce="y", qop="auth"' challenge into a Map. */
export function parseChallenge(value) {
  const m = /^\s*Digest\s+(.*)$/is.exec(value || '');
  if (!m) throw new Error('not a Digest challenge: ' + JSON.stringify(value));
  const params = new Map();
  for (const part of splitCommas(m[1])) {
    const eq = part.indexOf('=');
    if (eq > 0) params.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim().replace(/^"(.*)"$/s, '$1'));
  }
  return params;
}

/**
 * Builds the Authorization (or Proxy-Authorization) value answering a
 * digest challenge (RFC 2617 / RFC 3261 §22.4), MD5 with or without qop=auth.
 */
export function digestAuthorization({ method, uri, user, password, challenge, cnonce = randomToken(16), nc = 1 }) {
  const c = parseChallenge(challenge);
  const algorithm = c.get('algorithm') || 'MD5';
  if (algorithm.toUpperCase() !== 'MD5') throw new Error(`unsupported digest algorithm ${algorithm}`);
  const realm = c.get('realm') || '';
  const nonce = c.get('nonce') || '';
  const ha1 = md5hex(`${user}:${realm}:${password}`);
  const ha2 = md5hex(`${method}:${uri}`);
  const qops = (c.get('qop') || '').split(',').map((q) => q.trim().toLowerCase());
  let value = `Digest username="${user}", realm="${realm}", nonce="${nonce}", uri="${uri}"`;
  if (qops.includes('auth')) {
    const ncHex = nc.toString(16).padStart(8, '0');
    value += `, response="${md5hex(`${ha1}:${nonce}:${ncHex}:${cnonce}:auth:${ha2}`)}", qop=auth, nc=${ncHex}, cnonce="${cnonce}"`;
  } else {
    value += `, response="${md5hex(`${ha1}:${nonce}:${ha2}`)}"`;
  }
  value += ', algorithm=MD5';
  if (c.has('opaque')) value += `, opaque="${c.get('opaque')}"`;
  return value;
}

/** Returns the [header, value] answering a 401 or 407 response to method on uri. */
function authHeader(res, method, uri, user, password) {
  const proxy = res.status === 407;
  // A server may offer several algorithms (RFC 8760: SHA-256 first); this
  // UA answers the MD5 one.
  const all = res.getAll(proxy ? 'proxy-authenticate' : 'www-authenticate');
  const challenge = all.find((v) => {
    try { return (parseChallenge(v).get('algorithm') || 'MD5').toUpperCase() === 'MD5'; } catch { return false; }
  }) ?? all[0];
  return [proxy ? 'Proxy-Authorization' : 'Authorization',
    digestAuthorization({ method, uri, user, password, challenge })];
}

/** A parsed SIP message. Header names are stored in lower case, long form. */
export class SipMessage {
  constructor() {
    this.method = '';   // requests
    this.uri = '';      // requests
    this.status = 0;    // responses
    this.reason = '';   // responses
    this.headers = [];  // [name, value] in order, comma lists split
    this.body = '';
  }

  get isResponse() { return this.status !== 0; }

  /** The first value of a header, or undefined. */
  get(name) {
    const n = canonicalName(name);
    const h = this.headers.find(([k]) => k === n);
    return h ? h[1] : undefined;
  }

  /** Every value of a header, in order. */
  getAll(name) {
    const n = canonicalName(name);
    return this.headers.filter(([k]) => k === n).map(([, v]) => v);
  }

  get callId() { return this.get('call-id'); }
  get cseq() { return parseCSeq(this.get('cseq')); }
  get from() { return parseNameAddr(this.get('from')); }
  get to() { return parseNameAddr(this.get('to')); }
  get topVia() { return parseVia(this.get('via')); }
}

function canonicalName(name) {
  const n = name.toLowerCase();
  return COMPACT[n] || n;
}

/**
 * Parses one SIP message as received in one WebSocket frame (RFC 7118 §5:
 * a frame carries exactly one message). Returns null for keep-alive CRLFs.
 * Throws on anything malformed.
 */
export function parseMessage(text) {
  if (/^\s*$/.test(text)) return null;
  let sep = text.indexOf('\r\n\r\n');
  let sepLen = 4;
  if (sep < 0) { // tolerate bare LF line ends from sloppy peers
    sep = text.indexOf('\n\n');
    sepLen = 2;
  }
  const head = sep < 0 ? text : text.slice(0, sep);
  let body = sep < 0 ? '' : text.slice(sep + sepLen);
  const lines = head.replace(/^(\r?\n)+/, '').split(/\r?\n/);

  const msg = new SipMessage();
  const start = lines.shift();
  let m;
  if ((m = /^SIP\/2\.0\s+(\d{3})(?:\s+(.*))?$/i.exec(start))) {
    msg.status = Number(m[1]);
    msg.reason = (m[2] || '').trim();
  } else if ((m = /^([A-Za-z!%*_+`'~.-]+)\s+(\S+)\s+SIP\/2\.0$/i.exec(start))) {
    msg.method = m[1].toUpperCase();
    msg.uri = m[2];
  } else {
    throw new Error('bad start line: ' + JSON.stringify(start));
  }

  // Unfold continuation lines (RFC 3261 §7.3.1) before splitting headers.
  const unfolded = [];
  for (const line of lines) {
    if (/^[ \t]/.test(line) && unfolded.length) unfolded[unfolded.length - 1] += ' ' + line.trim();
    else if (line !== '') unfolded.push(line);
  }
  for (const line of unfolded) {
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error('bad header line: ' + JSON.stringify(line));
    const name = canonicalName(line.slice(0, colon).trim());
    const value = line.slice(colon + 1).trim();
    if (COMMA_LISTS.has(name) && !(name === 'contact' && value === '*')) {
      for (const v of splitCommas(value)) msg.headers.push([name, v]);
    } else {
      msg.headers.push([name, value]);
    }
  }

  for (const h of ['call-id', 'cseq', 'from', 'to', 'via']) {
    if (msg.get(h) === undefined) throw new Error('missing ' + h + ' header');
  }
  parseCSeq(msg.get('cseq'));

  const cl = msg.get('content-length');
  if (cl !== undefined) {
    const n = Number(cl);
    if (!Number.isInteger(n) || n < 0) throw new Error('bad Content-Length: ' + cl);
    const bytes = new TextEncoder().encode(body);
    if (bytes.length < n) throw new Error(`short body: ${bytes.length} of ${n} bytes`);
    body = new TextDecoder().decode(bytes.subarray(0, n));
  }
  msg.body = body;
  return msg;
}

/** Serialises a request or response; Content-Length is computed here. */
function serialise(startLine, headers, body = '') {
  const lines = [startLine];
  for (const [name, value] of headers) lines.push(`${name}: ${value}`);
  lines.push(`Content-Length: ${byteLength(body)}`);
  return lines.join('\r\n') + '\r\n\r\n' + body;
}

/** Builds a response to req; headers is a list of [name, value]. */
export function buildResponse(req, status, reason, { toTag = '', headers = [], body = '' } = {}) {
  const h = [];
  for (const v of req.getAll('via')) h.push(['Via', v]);
  h.push(['From', req.get('from')]);
  let to = req.get('to');
  if (status > 100 && toTag && !req.to.params.has('tag')) to += ';tag=' + toTag;
  h.push(['To', to]);
  h.push(['Call-ID', req.callId]);
  h.push(['CSeq', req.get('cseq')]);
  h.push(['User-Agent', USER_AGENT]);
  return serialise(`SIP/2.0 ${status} ${reason}`, h.concat(headers), body);
}

/**
 * UA is a SIP user agent on one WebSocket. It places at most one call at a
 * time (see Call) and answers requests outside a dialog.
 */
export class UA {
  /**
   * @param {object} o
   * @param {string} o.wsUrl   ws:// or wss:// URL of the SIP WebSocket
   * @param {string} o.user    user part of our From and Contact
   * @param {function} [o.log] called with one line per event and message
   */
  constructor({ wsUrl, user = 'webphone', password = '', domain = '', log = () => {} }) {
    this.wsUrl = wsUrl;
    this.log = log;
    this.password = password;   // for digest challenges; '' means we cannot answer them
    this.domain = domain || (typeof location !== 'undefined' ? location.hostname : 'localhost');
    // RFC 7118 §5.2: the UA cannot know its address, so it uses a random
    // .invalid domain in Via and Contact; responses come back on the socket.
    this.viaHost = randomToken(12) + '.invalid';
    this.setUser(user);
    this.registration = null;     // {expires, callId, seq, tag} while we want to be registered
    this.registered = false;
    this.onincoming = null;       // called with an IncomingCall; without it, INVITEs get 486
    this.onregistration = null;   // called with {registered, status, reason}
    this.ws = null;
    this.transactions = new Map(); // branch -> handler(response)
    this.call = null;
    this.onclose = null;
    this.timers = new Set();
  }

  /** Changes our user name (and so our Contact). */
  setUser(user) {
    this.user = user;
    this.contact = `<sip:${user}@${this.viaHost};transport=ws>`;
  }

  /**
   * Registers our Contact for sip:user@domain (expires 0 unregisters), with
   * digest authentication if challenged, and keeps refreshing it. Resolves
   * with {status, reason} of the final response (status 0: no response).
   */
  async register(expires = 600) {
    await this.connect();
    const reg = this.registration || { callId: randomToken(20), seq: 1 + Math.floor(Math.random() * 10000), tag: randomToken(10) };
    reg.expires = expires;
    this.registration = expires > 0 ? reg : null;
    if (reg.refresh) this.cancel(reg.refresh);
    const aor = `sip:${this.user}@${this.domain}`;
    const uri = `sip:${this.domain}`;
    let auth = null;
    for (let attempt = 0; ; attempt++) {
      const seq = reg.seq++;
      const res = await this.requestNonInvite((branch) => serialise(`REGISTER ${uri} SIP/2.0`, [
        ['Via', `SIP/2.0/WSS ${this.viaHost};branch=${branch};rport`],
        ['Max-Forwards', '70'],
        ['To', `<${aor}>`],
        ['From', `<${aor}>;tag=${reg.tag}`],
        ['Call-ID', reg.callId],
        ['CSeq', `${seq} REGISTER`],
        ['Contact', `${this.contact};expires=${expires}`],
        ['Expires', String(expires)],
        ['Allow', ALLOW],
        ['User-Agent', USER_AGENT],
        ...(auth ? [auth] : []),
      ]));
      if (!res) return this.registrationResult(false, 0, 'No response');
      if ((res.status === 401 || res.status === 407) && attempt === 0 && this.password) {
        try {
          auth = authHeader(res, 'REGISTER', uri, this.user, this.password);
          continue;
        } catch (err) {
          this.log(`cannot answer the challenge: ${err.message}`);
        }
      }
      if (res.status < 200 || res.status >= 300 || expires === 0) {
        if (expires > 0) this.registration = null;
        return this.registrationResult(false, res.status, res.reason);
      }
      // Refresh well before the registrar's expiry (the Expires it granted).
      const granted = Number(res.get('expires')) || expires;
      reg.refresh = this.later(() => {
        if (this.registration === reg) this.register(reg.expires).catch((err) => this.log(err.message));
      }, Math.max(granted * 800, 5000));
      return this.registrationResult(true, res.status, res.reason);
    }
  }

  registrationResult(registered, status, reason) {
    this.registered = registered;
    const r = { registered, status, reason };
    this.log(`registration: ${registered ? 'registered' : 'not registered'} (${status} ${reason})`);
    if (this.onregistration) this.onregistration(r);
    return r;
  }

  /** setTimeout that close() can cancel. */
  later(fn, ms) {
    const id = setTimeout(() => { this.timers.delete(id); fn(); }, ms);
    this.timers.add(id);
    return id;
  }

  /** Cancels a timer from later(). */
  cancel(id) {
    clearTimeout(id);
    this.timers.delete(id);
  }

  /** Opens the WebSocket if it is not open; resolves once it is. */
  connect() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) return Promise.resolve();
    if (this.connecting) return this.connecting;
    this.connecting = new Promise((resolve, reject) => {
      this.log(`connecting to ${this.wsUrl}`);
      const ws = new WebSocket(this.wsUrl, 'sip');
      let opened = false;
      ws.onopen = () => {
        if (ws.protocol !== 'sip') this.log(`warning: server chose subprotocol "${ws.protocol}"`);
        opened = true;
        this.ws = ws;
        this.connecting = null;
        resolve();
      };
      ws.onerror = () => { if (!opened) { this.connecting = null; reject(new Error(`cannot connect to ${this.wsUrl}`)); } };
      ws.onclose = (ev) => {
        this.log(`websocket closed (${ev.code})`);
        if (this.ws === ws) this.ws = null;
        if (!opened) { this.connecting = null; reject(new Error(`cannot connect to ${this.wsUrl}`)); return; }
        if (this.call) this.call.transportLost();
        if (this.registered) this.registrationResult(false, 0, 'Connection lost');
        // A registration is kept up across a lost socket: retry after a pause.
        const reg = this.registration;
        if (reg) {
          this.later(() => {
            if (this.registration === reg) this.register(reg.expires).catch((err) => this.log(err.message));
          }, 5000);
        }
        if (this.onclose) this.onclose(ev);
      };
      ws.onmessage = (ev) => this.receive(ev.data);
    });
    return this.connecting;
  }

  /** Closes the socket and cancels every pending timer. */
  close() {
    this.registration = null;
    for (const id of this.timers) clearTimeout(id);
    this.timers.clear();
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }

  /** Sends a serialised message. Throws if the socket is gone. */
  send(text) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) throw new Error('not connected');
    this.log('>>> ' + text.split('\r\n')[0]);
    this.ws.send(text);
  }

  async receive(data) {
    const text = typeof data === 'string' ? data : new TextDecoder().decode(
      data instanceof Blob ? await data.arrayBuffer() : data);
    let msg;
    try {
      msg = parseMessage(text);
    } catch (err) {
      this.log('dropped malformed message: ' + err.message);
      return;
    }
    if (!msg) return;
    this.log('<<< ' + (msg.isResponse ? `${msg.status} ${msg.reason} (${msg.get('cseq')})` : `${msg.method} ${msg.uri}`));
    try {
      if (msg.isResponse) this.receiveResponse(msg);
      else this.receiveRequest(msg);
    } catch (err) {
      this.log('error handling message: ' + (err.stack || err));
    }
  }

  receiveResponse(res) {
    let branch;
    try { branch = res.topVia.params.get('branch'); } catch { return; }
    const handler = this.transactions.get(branch);
    if (handler) handler(res);
    else this.log(`no transaction for response ${res.status} (branch ${branch})`);
  }

  receiveRequest(req) {
    const call = this.call;
    if (call && call.matches(req)) {
      call.receiveRequest(req);
      return;
    }
    if (req.method === 'CANCEL' && call instanceof IncomingCall && call.matchesCancel(req)) {
      call.receiveCancel(req);
      return;
    }
    const respond = (code, reason, headers = []) =>
      this.send(buildResponse(req, code, reason, { toTag: randomToken(10), headers }));
    const inDialog = req.to.params.has('tag');
    switch (req.method) {
      case 'ACK':
        return; // for a response we sent; nothing to do
      case 'OPTIONS':
        return respond(200, 'OK', [['Allow', ALLOW], ['Accept', 'application/sdp'], ['Contact', this.contact]]);
      case 'INVITE': {
        if (inDialog) return respond(481, 'Call/Transaction Does Not Exist');
        if (!this.onincoming || (call && !call.done)) return respond(486, 'Busy Here');
        const incoming = new IncomingCall(this, req);
        this.call = incoming;
        incoming.ring();
        this.onincoming(incoming);
        return;
      }
      case 'CANCEL':
      case 'BYE':
        return respond(481, 'Call/Transaction Does Not Exist');
      default:
        if (inDialog) return respond(481, 'Call/Transaction Does Not Exist');
        return respond(405, 'Method Not Allowed', [['Allow', ALLOW]]);
    }
  }

  /**
   * Places a call. events receives callbacks (all optional):
   *   progress({status, reason, sdp})  1xx; sdp is '' when there is none
   *   answered({sdp, res})             2xx (res: the response), after the ACK went out
   *   failed({status, reason})         3xx-6xx, or a local failure (status 0 or 408)
   *   ended({by, status, reason})      the call is over: by 'local' or 'remote'; status is
   *                                    the answer to our BYE, or the 487 after our CANCEL
   *   offer({sdp}) -> Promise<sdp>     in-dialog re-INVITE/UPDATE carrying an offer
   */
  invite(target, sdp, events = {}) {
    if (this.call && !this.call.done) throw new Error('a call is already in progress');
    this.call = new Call(this, target, events);
    this.call.start(sdp);
    return this.call;
  }

  /** Sends a non-INVITE request; resolves with the final response or null on timeout. */
  requestNonInvite(build) {
    const branch = newBranch();
    return new Promise((resolve) => {
      const timer = this.later(() => { this.transactions.delete(branch); resolve(null); }, NON_INVITE_TIMEOUT_MS);
      this.transactions.set(branch, (res) => {
        if (res.status < 200) return;
        this.cancel(timer);
        this.transactions.delete(branch);
        resolve(res);
      });
      try {
        this.send(build(branch));
      } catch (err) {
        this.cancel(timer);
        this.transactions.delete(branch);
        this.log(err.message);
        resolve(null);
      }
    });
  }
}

/** Call is one outgoing INVITE and the dialog it creates. */
class Call {
  constructor(ua, target, events) {
    this.ua = ua;
    this.events = events;
    this.target = target;                 // Request-URI of the INVITE
    this.callId = randomToken(20);
    this.localTag = randomToken(10);
    this.localSeq = 1 + Math.floor(Math.random() * 10000);
    this.inviteSeq = this.localSeq;
    this.inviteBranch = newBranch();
    const host = hostOf(target) || location.hostname;
    this.fromValue = `<sip:${ua.user}@${host}>;tag=${this.localTag}`;
    this.toValue = `<${target}>`;
    this.remoteToValue = '';              // To of the dialog-creating response, with tag
    this.remoteTag = '';
    this.remoteTarget = '';
    this.routeSet = [];
    this.ack = '';                        // the ACK we sent for the 2xx, kept for re-ACK
    this.provisional = false;             // a 1xx has arrived, so CANCEL is allowed
    this.cancelWanted = false;
    this.state = 'calling';               // calling, early, confirmed, ended
    this.done = false;
  }

  start(sdp, extra = []) {
    this.sdp = sdp;
    this.ua.transactions.set(this.inviteBranch, (res) => this.inviteResponse(res));
    this.timerB = this.ua.later(() => {
      if (this.state === 'calling' && !this.provisional) this.fail(408, 'Request Timeout (no response)');
    }, TIMER_B_MS);
    const headers = [
      ['Via', `SIP/2.0/WSS ${this.ua.viaHost};branch=${this.inviteBranch};rport`],
      ['Max-Forwards', '70'],
      ['To', this.toValue],
      ['From', this.fromValue],
      ['Call-ID', this.callId],
      ['CSeq', `${this.inviteSeq} INVITE`],
      ['Contact', this.ua.contact],
      ['Allow', ALLOW],
      ['User-Agent', USER_AGENT],
      ...extra,
      ['Content-Type', 'application/sdp'],
    ];
    this.ua.send(serialise(`INVITE ${this.target} SIP/2.0`, headers, sdp));
  }

  /** Whether an incoming request belongs to this dialog. */
  matches(req) {
    if (req.callId !== this.callId) return false;
    const to = req.to.params.get('tag');
    const from = req.from.params.get('tag');
    return to === this.localTag && (!this.remoteTag || from === this.remoteTag);
  }

  inviteResponse(res) {
    const { seq, method } = res.cseq;
    if (method !== 'INVITE' || seq !== this.inviteSeq) return;
    const status = res.status;
    const sdp = isSdp(res) ? res.body : '';

    if (status < 200) {
      if (this.state !== 'calling' && this.state !== 'early') return;
      this.provisional = true;
      this.ua.cancel(this.timerB);
      if (status > 100) {
        this.state = 'early';
        if (res.to.params.has('tag')) this.remoteToValue = res.get('to');
      }
      this.emit('progress', { status, reason: res.reason, sdp });
      if (this.cancelWanted) this.sendCancel();
      return;
    }

    if (status < 300) {
      const tag = res.to.params.get('tag') || '';
      if (this.ack) {
        // A retransmitted 2xx (our ACK was lost or slow): ACK it again. A 2xx
        // from another fork gets its own ACK and an immediate BYE.
        if (tag === this.remoteTag) this.ua.send(this.ack);
        else this.ackAndByeFork(res);
        return;
      }
      if (this.state === 'ended') { // 2xx crossed our CANCEL/timeout: confirm and end it
        this.establish(res);
        this.ua.send(this.ack);
        this.sendBye();
        return;
      }
      this.ua.cancel(this.timerB);
      this.establish(res);
      this.ua.send(this.ack);
      this.state = 'confirmed';
      if (this.cancelWanted) {
        this.hangup();
        return;
      }
      this.emit('answered', { sdp, res });
      return;
    }

    // 3xx-6xx: the INVITE transaction ends; ACK it on the same branch (§17.1.1.3).
    const ack = serialise(`ACK ${this.target} SIP/2.0`, [
      ['Via', `SIP/2.0/WSS ${this.ua.viaHost};branch=${this.inviteBranch};rport`],
      ['Max-Forwards', '70'],
      ['To', res.get('to')],
      ['From', this.fromValue],
      ['Call-ID', this.callId],
      ['CSeq', `${this.inviteSeq} ACK`],
    ]);
    try { this.ua.send(ack); } catch (err) { this.ua.log(err.message); }
    if (this.done) return;
    this.ua.cancel(this.timerB);
    if ((status === 401 || status === 407) && !this.authTried && this.ua.password && !this.cancelWanted) {
      // Try once more with credentials: same dialog identifiers, next CSeq,
      // new transaction (RFC 3261 §22.2).
      this.authTried = true;
      try {
        const auth = authHeader(res, 'INVITE', this.target, this.ua.user, this.ua.password);
        this.ua.transactions.delete(this.inviteBranch);
        this.localSeq = this.inviteSeq = this.inviteSeq + 1;
        this.inviteBranch = newBranch();
        this.provisional = false;
        this.state = 'calling';
        this.start(this.sdp, [auth]);
        return;
      } catch (err) {
        this.ua.log(`cannot answer the challenge: ${err.message}`);
      }
    }
    if (this.cancelWanted && status === 487) {
      this.finish('local', status, res.reason);
    } else {
      this.fail(status, res.reason);
    }
  }

  /** Records dialog state from a 2xx and builds the ACK for it (§13.2.2.4). */
  establish(res) {
    this.remoteToValue = res.get('to');
    this.remoteTag = res.to.params.get('tag') || '';
    const contact = res.get('contact');
    this.remoteTarget = contact ? parseNameAddr(contact).uri : this.target;
    // The UAC's route set is the Record-Route list in reverse (§12.1.2).
    this.routeSet = res.getAll('record-route').reverse();
    this.ack = this.inDialogRequest('ACK', newBranch(), this.inviteSeq);
  }

  ackAndByeFork(res) {
    const fork = Object.create(this);
    fork.establish(res);
    this.ua.send(fork.ack);
    fork.localSeq = this.inviteSeq;
    this.ua.requestNonInvite((branch) => fork.inDialogRequest('BYE', branch, fork.inviteSeq + 1));
  }

  /** Builds a request inside the dialog: Request-URI is the remote target, Route the route set. */
  inDialogRequest(method, branch, seq, extra = [], body = '') {
    const headers = [['Via', `SIP/2.0/WSS ${this.ua.viaHost};branch=${branch};rport`], ['Max-Forwards', '70']];
    for (const r of this.routeSet) headers.push(['Route', r]);
    headers.push(
      ['To', this.remoteToValue],
      ['From', this.fromValue],
      ['Call-ID', this.callId],
      ['CSeq', `${seq} ${method}`],
      ['User-Agent', USER_AGENT],
    );
    return serialise(`${method} ${this.remoteTarget} SIP/2.0`, headers.concat(extra), body);
  }

  receiveRequest(req) {
    const respond = (status, reason, headers = [], body = '') =>
      this.ua.send(buildResponse(req, status, reason, { toTag: this.localTag, headers, body }));
    switch (req.method) {
      case 'ACK':
        return;
      case 'BYE':
        respond(200, 'OK');
        this.finish('remote', 0);
        return;
      case 'OPTIONS':
        respond(200, 'OK', [['Allow', ALLOW], ['Accept', 'application/sdp'], ['Contact', this.ua.contact]]);
        return;
      case 'INFO':
      case 'NOTIFY':
        respond(200, 'OK');
        return;
      case 'INVITE':
      case 'UPDATE':
        this.reoffer(req, respond);
        return;
      default:
        respond(405, 'Method Not Allowed', [['Allow', ALLOW]]);
    }
  }

  /** Handles a re-INVITE or UPDATE: answer an SDP offer; accept a bare refresh. */
  async reoffer(req, respond) {
    if (this.state !== 'confirmed') {
      respond(491, 'Request Pending');
      return;
    }
    if (!isSdp(req)) {
      // An offerless re-INVITE wants our offer in the 200; a softphone this
      // small does not do that. A bare UPDATE is a session refresh: accept.
      if (req.method === 'UPDATE') respond(200, 'OK', [['Contact', this.ua.contact]]);
      else respond(488, 'Not Acceptable Here');
      return;
    }
    if (!this.events.offer) {
      respond(488, 'Not Acceptable Here');
      return;
    }
    try {
      const answer = await this.events.offer({ sdp: req.body });
      respond(200, 'OK', [['Contact', this.ua.contact], ['Content-Type', 'application/sdp']], answer);
    } catch (err) {
      this.ua.log('re-offer rejected: ' + err.message);
      respond(488, 'Not Acceptable Here');
    }
  }

  /** Ends the call from our side: CANCEL before the answer, BYE after. */
  hangup() {
    if (this.done) return;
    if (this.state === 'confirmed') {
      this.state = 'ended';
      this.sendBye();
      return;
    }
    // RFC 3261 §9.1: CANCEL only once a provisional response has arrived.
    this.cancelWanted = true;
    if (this.provisional) this.sendCancel();
    // If the far end never answers the CANCEL or INVITE, end locally anyway.
    this.ua.later(() => { if (!this.done) this.finish('local', 0); }, NON_INVITE_TIMEOUT_MS);
  }

  sendCancel() {
    if (this.cancelSent) return;
    this.cancelSent = true;
    // CANCEL copies the INVITE's Request-URI, Via branch, From, To and Call-ID (§9.1).
    this.ua.requestNonInvite(() => serialise(`CANCEL ${this.target} SIP/2.0`, [
      ['Via', `SIP/2.0/WSS ${this.ua.viaHost};branch=${this.inviteBranch};rport`],
      ['Max-Forwards', '70'],
      ['To', this.toValue],
      ['From', this.fromValue],
      ['Call-ID', this.callId],
      ['CSeq', `${this.inviteSeq} CANCEL`],
      ['User-Agent', USER_AGENT],
    ])).then((res) => this.ua.log(`CANCEL answered ${res ? res.status : 'never'}`));
  }

  async sendBye() {
    this.localSeq = Math.max(this.localSeq, this.inviteSeq) + 1;
    const seq = this.localSeq;
    const res = await this.ua.requestNonInvite((branch) => this.inDialogRequest('BYE', branch, seq));
    this.byeStatus = res ? res.status : 0;
    this.finish('local', this.byeStatus);
  }

  transportLost() {
    if (!this.done) this.fail(0, 'Connection lost');
  }

  fail(status, reason) {
    if (this.done) return;
    this.emit('failed', { status, reason });
    this.finish(status === 0 && this.state === 'confirmed' ? 'remote' : 'local', status);
  }

  finish(by, status, reason = '') {
    if (this.done) return;
    this.done = true;
    this.state = 'ended';
    this.ua.cancel(this.timerB);
    // Keep the INVITE transaction a little longer so a late 2xx still gets ACKed and BYEd.
    this.ua.later(() => this.ua.transactions.delete(this.inviteBranch), TIMER_B_MS);
    this.emit('ended', { by, status, reason });
  }

  emit(name, arg) {
    const fn = this.events[name];
    if (!fn) return;
    try {
      const r = fn(arg);
      if (r && r.catch) r.catch((err) => this.ua.log(`${name} handler: ${err.stack || err}`));
    } catch (err) {
      this.ua.log(`${name} handler: ${err.stack || err}`);
    }
  }
}

/**
 * IncomingCall is an INVITE we received and the dialog it creates (we are
 * the UAS). The application sets .events (as for UA.invite, plus
 * confirmed({sdp}) when the ACK arrives, carrying the answer if the INVITE
 * had no offer), then calls accept(sdp) or reject().
 */
class IncomingCall extends Call {
  constructor(ua, invite) {
    super(ua, invite.uri, {});
    this.invite = invite;
    this.callId = invite.callId;
    this.localTag = randomToken(10);
    this.remoteTag = invite.from.params.get('tag') || '';
    // Requests we send in this dialog go from the INVITE's To to its From.
    this.fromValue = `${invite.get('to')};tag=${this.localTag}`;
    this.remoteToValue = invite.get('from');
    const contact = invite.get('contact');
    this.remoteTarget = contact ? parseNameAddr(contact).uri : invite.from.uri;
    // The UAS keeps the Record-Route order (§12.1.1).
    this.routeSet = invite.getAll('record-route');
    this.inviteSeq = invite.cseq.seq;
    this.offer = isSdp(invite) ? invite.body : '';
    this.caller = invite.from;
    this.state = 'incoming';
  }

  respondInvite(status, reason, headers = [], body = '') {
    const text = buildResponse(this.invite, status, reason, { toTag: this.localTag, headers, body });
    this.ua.send(text);
    return text;
  }

  ring() {
    this.respondInvite(180, 'Ringing', [['Contact', this.ua.contact]]);
  }

  /** Answers with our SDP (an answer, or an offer if the INVITE had none). */
  accept(sdp) {
    if (this.state !== 'incoming') throw new Error(`cannot accept in state ${this.state}`);
    this.state = 'answering';
    const ok = this.respondInvite(200, 'OK', [
      ['Contact', this.ua.contact], ['Allow', ALLOW], ['Content-Type', 'application/sdp']], sdp);
    // The UAS core retransmits its 2xx until the ACK, whatever the
    // transport (§13.3.1.4): T1, doubling up to T2, giving up after 64*T1.
    let interval = 500;
    let waited = 0;
    const resend = () => {
      if (this.state !== 'answering') return;
      if (waited >= 32000) {
        this.ua.log('no ACK for our 200; ending the call');
        this.state = 'confirmed';
        this.hangup();
        return;
      }
      try { this.ua.send(ok); } catch { return; }
      waited += interval;
      interval = Math.min(interval * 2, 4000);
      this.retransmit = this.ua.later(resend, interval);
    };
    this.retransmit = this.ua.later(resend, interval);
  }

  /** Declines the call while it rings (603 Decline unless told otherwise). */
  reject(status = 603, reason = 'Decline') {
    if (this.state !== 'incoming') return;
    this.respondInvite(status, reason);
    this.finish('local', status, reason);
  }

  matchesCancel(req) {
    return req.callId === this.callId &&
      req.topVia.params.get('branch') === this.invite.topVia.params.get('branch');
  }

  receiveCancel(req) {
    this.ua.send(buildResponse(req, 200, 'OK', { toTag: this.localTag }));
    if (this.state !== 'incoming') return; // too late: answered already
    this.respondInvite(487, 'Request Terminated');
    this.finish('remote', 487, 'Request Terminated');
  }

  receiveRequest(req) {
    if (req.method === 'ACK' && this.state === 'answering') {
      this.ua.cancel(this.retransmit);
      this.state = 'confirmed';
      this.emit('confirmed', { sdp: isSdp(req) ? req.body : '' });
      if (this.byeWanted) this.hangup();
      return;
    }
    super.receiveRequest(req);
  }

  hangup() {
    if (this.done) return;
    if (this.state === 'incoming') this.reject();
    else if (this.state === 'answering') this.byeWanted = true; // BYE once the ACK is in
    else super.hangup();
  }
}

function isSdp(msg) {
  const ct = (msg.get('content-type') || '').toLowerCase();
  return msg.body.trim() !== '' && ct.startsWith('application/sdp');
}

/** Returns the host part of a SIP URI, or '' if there is none. */
export function hostOf(uri) {
  const m = /^sips?:(?:[^@]*@)?(\[[^\]]+\]|[^;:?>]+)/i.exec(uri.trim());
  return m ? m[1] : '';
}
