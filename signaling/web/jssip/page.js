// page.js — a JsSIP user agent that registers with the relay and answers
// one incoming call, exposing the window.mediarelay object that
// signaling/web/browsertest's run.mjs drives (answer mode). Bundled with
// esbuild by signaling/jssip_test.go; JsSIP ships no browser build.
//
// Query parameters: ws=ws://host:port/ws (the relay's SIP WebSocket),
// domain=host (SIP domain, default the WebSocket's host).

import JsSIP from 'jssip';

const params = new URLSearchParams(location.search);
const wsUrl = params.get('ws');
const domain = params.get('domain') || new URL(wsUrl).hostname;
const BAND_LO_HZ = 100;
const BAND_HI_HZ = 3800;

const logLines = [];
function log(line) {
  logLines.push(`${(performance.now() / 1000).toFixed(3)} ${line}`);
  console.log('[jssip-page] ' + line);
  document.getElementById('log').textContent = logLines.join('\n');
}

let ua = null;
let session = null;
let audioCtx = null;
const tone = { binHz: 0, lo: 0, hi: 0, sum: null, peak: 0, frames: 0 };
const timers = [];

const api = {
  state: 'idle', lastCode: 0, lastReason: '', media: 'new', endedBy: '', hangupAcked: false,
  stats: {}, incoming: null, registered: false, log: logLines,
  register, unregister, answer, hangup, toneLevels,
  dtmf: () => false,
  call: () => Promise.reject(new Error('this page only answers')),
};
window.mediarelay = api;

function register(user, password) {
  return new Promise((resolve) => {
    const socket = new JsSIP.WebSocketInterface(wsUrl);
    ua = new JsSIP.UA({
      sockets: [socket], uri: `sip:${user}@${domain}`, password, register: false,
      session_timers: false, user_agent: 'JsSIP test page',
    });
    ua.on('registered', () => { api.registered = true; log('registered'); resolve({ registered: true, status: 200, reason: 'OK' }); });
    ua.on('registrationFailed', (e) => {
      const code = e.response ? e.response.status_code : 0;
      log(`registration failed: ${code} ${e.cause}${e.response ? ' challenges: ' + e.response.getHeaders('www-authenticate').join(' | ') : ''}`);
      resolve({ registered: false, status: code, reason: e.cause });
    });
    ua.on('newRTCSession', (e) => {
      if (e.originator !== 'remote' || session) return;
      session = e.session;
      api.incoming = { uri: e.request.from.uri.toString() };
      api.state = 'incoming';
      log(`incoming call from ${api.incoming.uri}`);
      session.on('peerconnection', (ev) => watchPC(ev.peerconnection));
      session.on('confirmed', () => { api.state = 'established'; api.lastCode = 200; log('confirmed'); });
      session.on('ended', (ev) => ended(ev, 'ended'));
      session.on('failed', (ev) => ended(ev, 'failed'));
    });
    // Register once the WebSocket is up (earlier, JsSIP fails it with a
    // connection error).
    ua.on('connected', () => ua.register());
    ua.start();
  });
}

function ended(ev, state) {
  api.endedBy = ev.originator === 'local' ? 'local' : 'remote';
  if (ev.originator === 'local') api.hangupAcked = true;
  api.state = state;
  log(`${state}: ${ev.cause}`);
  timers.forEach(clearInterval);
}

function watchPC(pc) {
  pc.addEventListener('connectionstatechange', () => {
    api.media = pc.connectionState;
    log(`connection ${pc.connectionState}`);
  });
  pc.addEventListener('track', (ev) => attachRemote(ev.streams[0] || new MediaStream([ev.track])));
}

async function answer(options = {}) {
  if (!session) throw new Error('no incoming call');
  audioCtx = new AudioContext();
  await audioCtx.resume();
  const processing = options.audioProcessing !== false;
  session.answer({
    mediaConstraints: { audio: { echoCancellation: processing, noiseSuppression: processing, autoGainControl: processing }, video: false },
  });
  api.state = 'answering';
}

function attachRemote(stream) {
  const el = document.getElementById('remote');
  if (el.srcObject === stream) return;
  el.srcObject = stream;
  el.play().catch((err) => log(`audio playback: ${err.message}`));
  const src = audioCtx.createMediaStreamSource(stream);
  const an = audioCtx.createAnalyser();
  an.fftSize = 8192;
  an.smoothingTimeConstant = 0;
  src.connect(an);
  const sink = audioCtx.createGain();
  sink.gain.value = 0;
  an.connect(sink).connect(audioCtx.destination);
  const bins = new Float32Array(an.frequencyBinCount);
  tone.binHz = audioCtx.sampleRate / an.fftSize;
  tone.lo = Math.ceil(BAND_LO_HZ / tone.binHz);
  tone.hi = Math.floor(BAND_HI_HZ / tone.binHz);
  tone.sum = new Float64Array(bins.length);
  timers.push(setInterval(() => {
    an.getFloatFrequencyData(bins);
    for (let i = 0; i < bins.length; i++) {
      if (!Number.isFinite(bins[i])) continue;
      tone.sum[i] += Math.pow(10, bins[i] / 10);
      if (tone.sum[i] > tone.peak) tone.peak = tone.sum[i];
    }
    tone.frames++;
  }, 100));
}

// Level of each frequency over the call, in dB above the median of the
// telephone band (the same measure as the relay's own page).
function toneLevels(freqs) {
  return freqs.map((f) => {
    if (!tone.sum || tone.frames === 0) return null;
    const band = Array.from(tone.sum.subarray(tone.lo, tone.hi + 1)).sort((a, b) => a - b);
    const floor = band[band.length >> 1];
    const centre = Math.round(f / tone.binHz);
    let peak = 0;
    for (let i = Math.max(centre - 2, 0); i <= Math.min(centre + 2, tone.sum.length - 1); i++) peak = Math.max(peak, tone.sum[i]);
    if (peak <= 0) return null;
    return Math.round(10 * Math.log10(peak / Math.max(floor, tone.peak * 1e-12)) * 10) / 10;
  });
}

async function hangup() {
  if (!session) return;
  const done = new Promise((resolve) => { session.on('ended', resolve); session.on('failed', resolve); setTimeout(resolve, 3000); });
  try { session.terminate(); } catch (e) { log(`terminate: ${e.message}`); }
  await done;
}

async function unregister() {
  if (!ua) return;
  ua.unregister();
  await new Promise((r) => setTimeout(r, 300));
  ua.stop();
}

log(`JsSIP ${JsSIP.version} page ready, ws ${wsUrl}`);
