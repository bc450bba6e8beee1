// app.js — the softphone: microphone, RTCPeerConnection, the SIP UA from
// sip.js, the page's controls, and window.mediarelay for tests.
//
// Query parameters (all optional):
//   ws=ws://host:port/path   SIP WebSocket URL (default: ws(s)://<this host>/ws)
//   target=sip:...           initial call target (default: sip:echo@<this host>)
//   user=name                our SIP user name (default: webphone)
//   password=secret          for digest challenges (REGISTER, INVITE)
//   domain=host              our SIP domain (default: this host)
//   register=1               register on load, to receive calls

import { UA } from './sip.js';

const params = new URLSearchParams(location.search);
const wsUrl = params.get('ws') || `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
const defaultTarget = params.get('target') || `sip:echo@${location.hostname}`;

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('dial'), target: $('target'), call: $('call'), answer: $('answer'), hangup: $('hangup'),
  status: $('status'), micbar: $('micbar'), farbar: $('farbar'),
  ci: { codec: $('ci-codec'), mode: $('ci-mode'), rtt: $('ci-rtt'), loss: $('ci-loss'), jitter: $('ci-jitter') }, keypad: $('keypad'), remote: $('remote'), log: $('log'),
  account: $('account'), user: $('user'), password: $('password'), register: $('register'), regStatus: $('regstatus'),
};

// How long to wait for ICE gathering before sending whatever candidates we have.
const GATHER_CAP_MS = 2000;
// The analyser looks at the telephone band; outside it G.711 carries nothing,
// which would drag the noise-floor estimate down to silence.
const BAND_LO_HZ = 100;
const BAND_HI_HZ = 3800;

const logLines = [];
function log(line) {
  const stamped = `${(performance.now() / 1000).toFixed(3)} ${line}`;
  logLines.push(stamped);
  if (logLines.length > 500) logLines.shift();
  console.log('[mediarelay] ' + line);
  if (ui.log) ui.log.textContent = logLines.join('\n');
}

const ua = new UA({
  wsUrl, log,
  user: params.get('user') || 'webphone',
  password: params.get('password') || '',
  domain: params.get('domain') || location.hostname,
});
ua.onincoming = onIncoming;
ua.onregistration = ({ registered, status, reason }) => {
  api.registered = registered;
  ui.regStatus.textContent = registered ? `Registered as ${ua.user}@${ua.domain}` : `Not registered${status ? ` (${status} ${reason})` : reason ? ` (${reason})` : ''}`;
  ui.register.textContent = registered ? 'Unregister' : 'Register';
};

let audioCtx = null;
let session = null; // the current call's media: {pc, local, remote, call, timers, ...}
const tone = { binHz: 0, lo: 0, hi: 0, sum: null, peak: 0, frames: 0 };

/** The object tests drive; see README-style notes on each member. */
const api = {
  state: 'idle',        // idle, connecting, calling, ringing, early, incoming, answering,
                        // established, ending, ended, failed
  lastCode: 0,          // last SIP status code of the INVITE (or 0 for a local failure)
  lastReason: '',
  endedBy: '',          // 'local' or 'remote' once the call is over
  hangupAcked: false,   // our BYE got a 2xx, or our CANCEL produced the 487
  media: 'new',         // RTCPeerConnection.connectionState
  micLevel: -Infinity,  // dBFS of the microphone, updated every 100 ms
  farLevel: -Infinity,  // dBFS of the far end's audio, updated every 100 ms
  relayMode: '',        // passthrough or transcode, as the relay's 200 OK says (calls we place)
  stats: {},            // a snapshot of getStats(), updated every second
  registered: false,    // our Contact is registered (see register())
  incoming: null,       // the caller while an incoming call rings: {display, uri}
  log: logLines,
  wsUrl,
  call,
  answer,
  hangup,
  dtmf,
  toneLevels,
  register,
  unregister,
};
window.mediarelay = api;

function setState(state, text, kind = '') {
  api.state = state;
  ui.status.textContent = text;
  ui.status.className = 'status' + (kind ? ' ' + kind : '');
  const busy = !['idle', 'ended', 'failed'].includes(state);
  ui.call.disabled = busy;
  ui.hangup.disabled = !busy;
  ui.hangup.textContent = state === 'incoming' ? 'Decline' : 'Hang up';
  ui.answer.hidden = state !== 'incoming';
  ui.call.hidden = state === 'incoming';
  for (const b of ui.keypad.querySelectorAll('button')) b.disabled = !['established', 'early'].includes(state);
  log(`state ${state}: ${text}`);
}

/**
 * Places a call to target. Resolves once the INVITE is sent; follow progress
 * through api.state. options.audioProcessing=false turns off echo
 * cancellation, noise suppression and AGC (tests send steady tones, which
 * those would remove).
 */
async function call(target = defaultTarget, options = {}) {
  if (session) throw new Error('a call is already in progress');
  target = normaliseTarget(target);
  const processing = options.audioProcessing !== false;
  Object.assign(api, { lastCode: 0, lastReason: '', endedBy: '', hangupAcked: false, media: 'new', stats: {}, relayMode: '' });
  const s = (session = { timers: [], aborted: false, earlySdp: '' });
  setState('connecting', `Preparing call to ${target}…`);
  try {
    const pc = await prepareMedia(s, processing);
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringDone(pc);
    if (s.aborted) return teardown(s); // hung up while we prepared

    await ua.connect();
    if (s.aborted) return teardown(s);
    setState('calling', `Calling ${target}…`);
    s.call = ua.invite(target, pc.localDescription.sdp, {
      progress: (ev) => onProgress(s, ev),
      answered: (ev) => onAnswered(s, ev),
      failed: (ev) => onFailed(s, ev),
      ended: (ev) => onEnded(s, ev),
      offer: (ev) => onOffer(s, ev),
    });
    s.timers.push(setInterval(() => collectStats(s), 1000));
  } catch (err) {
    api.lastReason = err.message;
    setState('failed', `Call failed: ${err.message}`, 'error');
    teardown(s);
    throw err;
  }
}

/** Turns what a person types ("echo", "bob@pbx", "sip:...") into a SIP URI. */
function normaliseTarget(target) {
  const t = String(target).trim();
  if (/^sips?:/i.test(t)) return t;
  return t.includes('@') ? `sip:${t}` : `sip:${t}@${location.hostname}`;
}

/** Gets the microphone and a peer connection sending it, for session s. */
async function prepareMedia(s, processing) {
  ensureAudioContext();
  s.local = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: processing, noiseSuppression: processing, autoGainControl: processing },
    video: false,
  });
  startMicMeter(s);
  const pc = (s.pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' }));
  for (const track of s.local.getAudioTracks()) pc.addTrack(track, s.local);
  pc.ontrack = (ev) => attachRemote(s, ev.streams[0] || new MediaStream([ev.track]));
  pc.onconnectionstatechange = () => {
    api.media = pc.connectionState;
    log(`media ${pc.connectionState}`);
  };
  return pc;
}

/** A call arrives: ring until answer() or hangup(). */
function onIncoming(incoming) {
  if (session) { // the UA only offers us one when it has no call, but be sure
    incoming.reject(486, 'Busy Here');
    return;
  }
  Object.assign(api, { lastCode: 0, lastReason: '', endedBy: '', hangupAcked: false, media: 'new', stats: {}, relayMode: '' });
  const s = (session = { timers: [], aborted: false, earlySdp: '', call: incoming });
  const who = incoming.caller.display || incoming.caller.uri;
  api.incoming = { display: incoming.caller.display, uri: incoming.caller.uri };
  incoming.events = {
    failed: (ev) => onFailed(s, ev),
    ended: (ev) => onEnded(s, ev),
    offer: (ev) => onOffer(s, ev),
    confirmed: (ev) => onConfirmed(s, ev),
  };
  setState('incoming', `Incoming call from ${who}`);
}

/**
 * Answers the ringing incoming call. options.audioProcessing as for call().
 * Resolves once the 200 OK is sent; api.state becomes 'established' on the ACK.
 */
async function answer(options = {}) {
  const s = session;
  if (!s || api.state !== 'incoming') throw new Error('no incoming call to answer');
  const incoming = s.call;
  api.incoming = null;
  setState('answering', 'Answering…');
  try {
    ensureAudioContext();
    const pc = await prepareMedia(s, options.audioProcessing !== false);
    if (incoming.offer) {
      await pc.setRemoteDescription({ type: 'offer', sdp: incoming.offer });
      await pc.setLocalDescription(await pc.createAnswer());
    } else {
      // No offer in the INVITE: ours goes in the 200, the answer comes in the ACK.
      await pc.setLocalDescription(await pc.createOffer());
      s.awaitingAnswer = true;
    }
    await iceGatheringDone(pc);
    if (incoming.done) return teardown(s); // the caller gave up meanwhile
    incoming.accept(pc.localDescription.sdp);
    s.timers.push(setInterval(() => collectStats(s), 1000));
  } catch (err) {
    api.lastReason = err.message;
    log(`cannot answer: ${err.message}`);
    incoming.reject(488, 'Not Acceptable Here');
    throw err;
  }
}

async function onConfirmed(s, { sdp }) {
  api.lastCode = 200;
  api.lastReason = 'OK';
  if (s.awaitingAnswer) {
    try {
      if (!sdp) throw new Error('the ACK carried no SDP answer');
      await s.pc.setRemoteDescription({ type: 'answer', sdp });
    } catch (err) {
      api.lastReason = err.message;
      setState('ending', `${err.message}; hanging up`, 'error');
      s.call.hangup();
      return;
    }
  }
  if (api.state === 'answering') setState('established', 'In call', 'ok');
}

/** Registers as user (default: the current one) to receive calls. */
async function register(user = ua.user, password = ua.password) {
  if (session) throw new Error('cannot change registration during a call');
  if (user !== ua.user) {
    if (ua.registered) await ua.register(0);
    ua.setUser(user);
  }
  ua.password = password;
  return ua.register();
}

/** Removes our registration. */
async function unregister() {
  if (!ua.registration && !ua.registered) return { registered: false, status: 0, reason: '' };
  return ua.register(0);
}

/** Hangs up (BYE, or CANCEL while ringing). Resolves when the call is over. */
function hangup() {
  const s = session;
  if (!s) return Promise.resolve();
  const over = new Promise((resolve) => { s.onOver = resolve; });
  if (!s.call) { // still preparing: nothing was sent yet
    s.aborted = true;
    setState('ended', 'Call abandoned');
    teardown(s);
    return Promise.resolve();
  }
  setState('ending', 'Hanging up…');
  s.call.hangup();
  return over;
}

/** Sends RFC 4733 DTMF digits on the audio sender. Returns false if it cannot. */
function dtmf(digits, duration = 100, gap = 70) {
  const sender = session && session.pc && session.pc.getSenders().find((x) => x.track && x.track.kind === 'audio');
  if (!sender || !sender.dtmf || !sender.dtmf.canInsertDTMF) {
    log('DTMF not possible now (no call, or telephone-event not negotiated)');
    return false;
  }
  sender.dtmf.ontonechange = (ev) => { if (ev.tone) log(`DTMF ${ev.tone}`); };
  sender.dtmf.insertDTMF(String(digits), duration, gap);
  return true;
}

/**
 * Returns, for each frequency in Hz, the level of the remote audio at it,
 * averaged over the call, in dB above the median level of the telephone band
 * (the noise floor). Averaging the power spectrum rather than keeping peaks
 * makes the onset clicks and codec transients vanish, while a tone that was
 * present for a good part of the call stands well out. null where nothing
 * was measured.
 */
function toneLevels(freqs) {
  return freqs.map((f) => {
    if (!tone.sum || tone.frames === 0) return null;
    const band = Array.from(tone.sum.subarray(tone.lo, tone.hi + 1)).sort((a, b) => a - b);
    const floor = band[band.length >> 1];
    const centre = Math.round(f / tone.binHz);
    let peak = 0;
    // ±2 bins (about ±12 Hz at 48 kHz) absorbs window leakage and clock drift.
    for (let i = Math.max(centre - 2, 0); i <= Math.min(centre + 2, tone.sum.length - 1); i++) {
      peak = Math.max(peak, tone.sum[i]);
    }
    if (peak <= 0) return null;
    // A floor of digital silence would make any trace of sound infinitely
    // loud; 120 dB below the loudest bin is as deep as we care to look.
    const db = 10 * Math.log10(peak / Math.max(floor, tone.peak * 1e-12));
    return Math.round(db * 10) / 10;
  });
}

function onProgress(s, { status, reason, sdp }) {
  api.lastCode = status;
  api.lastReason = reason;
  if (status === 100) return;
  if (sdp) {
    s.earlySdp = sdp;
    // Early media: a provisional answer lets audio flow before the 200.
    s.pc.setRemoteDescription({ type: 'pranswer', sdp })
      .catch((err) => log(`early SDP rejected: ${err.message}`));
  }
  if (status === 180) setState('ringing', `Ringing (${status} ${reason})`);
  else setState('early', `${status} ${reason}${sdp ? ' (early media)' : ''}`);
}

async function onAnswered(s, { sdp, res }) {
  api.lastCode = 200;
  api.lastReason = 'OK';
  api.relayMode = (res && res.get('x-mediarelay-mode')) || '';
  const answer = sdp || s.earlySdp;
  if (!answer) {
    api.lastReason = 'answer without SDP';
    setState('ending', 'The answer carried no SDP; hanging up', 'error');
    s.call.hangup();
    return;
  }
  try {
    await s.pc.setRemoteDescription({ type: 'answer', sdp: answer });
  } catch (err) {
    api.lastReason = `bad SDP answer: ${err.message}`;
    setState('ending', `Bad SDP answer (${err.message}); hanging up`, 'error');
    s.call.hangup();
    return;
  }
  if (api.state !== 'ending') setState('established', 'In call', 'ok');
}

function onFailed(s, { status, reason }) {
  api.lastCode = status;
  api.lastReason = reason;
  setState('failed', status ? `Call failed: ${status} ${reason}` : `Call failed: ${reason}`, 'error');
}

function onEnded(s, { by, status, reason }) {
  api.endedBy = by;
  api.incoming = null;
  if (status === 487) { // the INVITE's final answer after our CANCEL
    api.lastCode = status;
    api.lastReason = reason;
  }
  api.hangupAcked = by === 'local' && ((status >= 200 && status < 300) || status === 487);
  if (api.state !== 'failed') {
    let how = by === 'remote' ? 'by the other side' : api.hangupAcked ? '' : '(no answer to our BYE/CANCEL)';
    if (status === 487 && by === 'remote') how = '(the caller gave up)';
    if (status >= 300 && status !== 487 && by === 'local') how = `(declined: ${status} ${reason})`;
    setState('ended', `Call ended ${how}`.trim());
  }
  teardown(s);
}

async function onOffer(s, { sdp }) {
  await s.pc.setRemoteDescription({ type: 'offer', sdp });
  await s.pc.setLocalDescription(await s.pc.createAnswer());
  return s.pc.localDescription.sdp;
}

function teardown(s) {
  for (const t of s.timers) clearInterval(t);
  s.timers = [];
  if (s.pc) s.pc.close();
  if (s.local) for (const t of s.local.getTracks()) t.stop();
  ui.remote.srcObject = null;
  ui.micbar.style.width = '0';
  ui.farbar.style.width = '0';
  if (session === s) session = null;
  if (s.onOver) s.onOver();
}

function iceGatheringDone(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, GATHER_CAP_MS);
    function done() {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    }
    function check() { if (pc.iceGatheringState === 'complete') done(); }
    pc.addEventListener('icegatheringstatechange', check);
  });
}

function ensureAudioContext() {
  if (!audioCtx) audioCtx = new AudioContext();
  if (audioCtx.state === 'suspended') audioCtx.resume().catch(() => {});
}

function attachRemote(s, stream) {
  if (s.remote === stream) return;
  s.remote = stream;
  // Chromium feeds WebRTC audio into WebAudio only while the stream is also
  // attached to a media element, so the <audio> element is needed for both.
  ui.remote.srcObject = stream;
  ui.remote.play().catch((err) => log(`audio playback: ${err.message}`));

  const src = audioCtx.createMediaStreamSource(stream);
  const an = audioCtx.createAnalyser();
  an.fftSize = 8192;
  an.smoothingTimeConstant = 0;
  src.connect(an);
  // A silent path to the destination keeps the graph pulled in every browser.
  const sink = audioCtx.createGain();
  sink.gain.value = 0;
  an.connect(sink).connect(audioCtx.destination);
  startLevelMeter(s, src, ui.farbar, (db) => { api.farLevel = db; });

  const bins = new Float32Array(an.frequencyBinCount);
  tone.binHz = audioCtx.sampleRate / an.fftSize;
  tone.lo = Math.ceil(BAND_LO_HZ / tone.binHz);
  tone.hi = Math.floor(BAND_HI_HZ / tone.binHz);
  tone.sum = new Float64Array(bins.length);
  tone.peak = 0;
  tone.frames = 0;
  // Every 100 ms, add the power spectrum of the last 8192 samples (170 ms).
  s.timers.push(setInterval(() => {
    an.getFloatFrequencyData(bins);
    for (let i = 0; i < bins.length; i++) {
      if (!Number.isFinite(bins[i])) continue; // -Infinity: no energy at all
      tone.sum[i] += Math.pow(10, bins[i] / 10);
      if (tone.sum[i] > tone.peak) tone.peak = tone.sum[i];
    }
    tone.frames++;
  }, 100));
}

function startMicMeter(s) {
  startLevelMeter(s, audioCtx.createMediaStreamSource(s.local), ui.micbar, (db) => { api.micLevel = db; });
}

/** Shows the level of src on bar every 100 ms and reports it (dBFS) to set. */
function startLevelMeter(s, src, bar, set) {
  const an = audioCtx.createAnalyser();
  an.fftSize = 1024;
  src.connect(an);
  const buf = new Float32Array(an.fftSize);
  s.timers.push(setInterval(() => {
    an.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const x of buf) sum += x * x;
    const db = 10 * Math.log10(sum / buf.length || 1e-12);
    set(Math.round(db * 10) / 10);
    bar.style.width = `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;
  }, 100));
}

async function collectStats(s) {
  if (!s.pc) return;
  const out = {};
  const report = await s.pc.getStats();
  const codecs = new Map();
  const certs = new Map();
  report.forEach((r) => {
    if (r.type === 'codec') codecs.set(r.id, r.mimeType);
    if (r.type === 'certificate') certs.set(r.id, `${r.fingerprintAlgorithm} ${r.fingerprint}`);
  });
  // Whose certificate the DTLS handshake verified: the relay's, or on an
  // end-to-end call the far end's.
  report.forEach((r) => {
    if (r.type === 'transport' && r.remoteCertificateId) out.remoteCertFingerprint = certs.get(r.remoteCertificateId);
  });
  // The fingerprint the handshake was checked against (Chromium does not
  // always report the remote certificate in getStats()).
  const fp = /^a=fingerprint:(\S+) (\S+)/m.exec(s.pc.remoteDescription?.sdp || '');
  if (fp) out.remoteFingerprint = `${fp[1]} ${fp[2]}`;
  report.forEach((r) => {
    if (r.kind !== 'audio' && r.type !== 'candidate-pair') return;
    if (r.type === 'inbound-rtp') {
      Object.assign(out, {
        packetsReceived: r.packetsReceived, packetsLost: r.packetsLost, bytesReceived: r.bytesReceived,
        jitter: r.jitter, audioLevel: r.audioLevel, codecIn: codecs.get(r.codecId),
      });
    } else if (r.type === 'outbound-rtp') {
      Object.assign(out, { packetsSent: r.packetsSent, bytesSent: r.bytesSent, codecOut: codecs.get(r.codecId) });
    } else if (r.type === 'candidate-pair' && r.nominated) {
      out.iceState = r.state;
      out.rtt = r.currentRoundTripTime;
    }
  });
  api.stats = out;
  showCallInfo(out);
}

/** Fills the call's codec, mode, round-trip time, loss and jitter in. */
function showCallInfo(st) {
  const codec = (m) => (m || '').replace(/^audio\//, '');
  const codecs = [...new Set([codec(st.codecOut), codec(st.codecIn)].filter(Boolean))];
  ui.ci.codec.textContent = codecs.join(' / ') || '–';
  ui.ci.mode.textContent = api.relayMode || '–';
  ui.ci.rtt.textContent = st.rtt !== undefined ? `${Math.round(st.rtt * 1000)} ms` : '–';
  const got = st.packetsReceived || 0;
  const lost = Math.max(0, st.packetsLost || 0);
  ui.ci.loss.textContent = got + lost > 0 ? `${((100 * lost) / (got + lost)).toFixed(1)}%` : '–';
  ui.ci.jitter.textContent = st.jitter !== undefined ? `${(st.jitter * 1000).toFixed(1)} ms` : '–';
}

// --- the page's controls ---
ui.target.value = defaultTarget;
ui.form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  call(ui.target.value.trim()).catch(() => {});
});
ui.hangup.addEventListener('click', () => hangup());
ui.answer.addEventListener('click', () => answer().catch(() => {}));
ui.user.value = ua.user;
ui.password.value = ua.password;
ui.register.addEventListener('click', () => {
  const op = ua.registered ? unregister() : register(ui.user.value.trim() || 'webphone', ui.password.value);
  op.catch((err) => { ui.regStatus.textContent = `Registration failed: ${err.message}`; });
});
if (params.get('register') === '1') ui.register.click();
ui.keypad.addEventListener('click', (ev) => {
  const digit = ev.target.dataset && ev.target.dataset.digit;
  if (digit) dtmf(digit);
});
document.addEventListener('keydown', (ev) => {
  if (ev.target instanceof HTMLInputElement || !session) return;
  if (/^[0-9*#]$/.test(ev.key)) dtmf(ev.key);
});
setState('idle', 'Idle');
log(`SIP WebSocket: ${wsUrl}`);
