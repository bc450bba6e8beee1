// pagekit.js — what the test pages built on third-party SIP stacks share
// (signaling/web/jssip for JsSIP, sipjs/ here for SIP.js): the
// window.mediarelay object that run.mjs drives, the page log, the analysis
// of the received audio, getStats() summaries, and the first-audio timing.
// The pages bundle it with esbuild; the relay's own softphone (web/static)
// has its own copy of the analysis and is not built.
//
// Timing (api.timing, milliseconds of performance.now()):
//   ack       the ACK: received, on an answered call; sent, on a placed one
//   connected the RTCPeerConnection's connectionState became "connected"
//             (ICE and DTLS done)
//   firstRtp  getStats() first showed an inbound audio packet; it is polled
//             every few milliseconds until then, so this is at most a poll
//             (and one getStats() call) late

const BAND_LO_HZ = 100;
const BAND_HI_HZ = 3800;
const FIRST_RTP_POLL_MS = 5;
const FIRST_RTP_GIVE_UP_MS = 60000;

/**
 * Makes window.mediarelay for a page named name, with the members run.mjs
 * reads; the page adds register, answer, call, hangup and the like.
 * Returns {api, log}.
 */
export function createPage(name) {
  const logLines = [];
  const log = (line) => {
    logLines.push(`${(performance.now() / 1000).toFixed(3)} ${line}`);
    console.log(`[${name}] ${line}`);
    const el = document.getElementById('log');
    if (el) el.textContent = logLines.join('\n');
  };
  const api = {
    state: 'idle', lastCode: 0, lastReason: '', media: 'new', endedBy: '', hangupAcked: false,
    stats: {}, incoming: null, registered: false, log: logLines,
    timing: { ack: null, connected: null, firstRtp: null },
    dtmf: () => false,
    toneLevels,
    refreshStats: async () => api.stats,
  };
  window.mediarelay = api;
  return { api, log };
}

/** Records the ACK of the call's INVITE transaction. */
export function markAck(api) {
  if (api.timing.ack === null) api.timing.ack = performance.now();
}

/**
 * Follows a call's RTCPeerConnection: its state in api.media, its remote
 * audio into the analyser and an <audio id="remote"> element, the first
 * inbound packet in api.timing, and api.refreshStats() for a fresh
 * getStats() summary in api.stats.
 */
export function watchPeerConnection(api, pc, log) {
  pc.addEventListener('connectionstatechange', () => {
    api.media = pc.connectionState;
    if (pc.connectionState === 'connected' && api.timing.connected === null) api.timing.connected = performance.now();
    log(`connection ${pc.connectionState}`);
  });
  pc.addEventListener('track', (ev) => attachRemote(ev.streams[0] || new MediaStream([ev.track]), log));
  api.refreshStats = async () => {
    api.stats = await statsOf(pc);
    return api.stats;
  };
  (async () => {
    const start = performance.now();
    while (api.timing.firstRtp === null && pc.signalingState !== 'closed' && performance.now() - start < FIRST_RTP_GIVE_UP_MS) {
      const s = await statsOf(pc).catch(() => ({}));
      if (s.packetsReceived > 0) {
        api.timing.firstRtp = performance.now();
        log(`first inbound RTP (getStats: ${s.packetsReceived} packets)`);
        break;
      }
      await new Promise((r) => setTimeout(r, FIRST_RTP_POLL_MS));
    }
  })();
}

/** A getStats() summary: audio in and out, and the nominated pair. */
async function statsOf(pc) {
  const out = {};
  const report = await pc.getStats();
  const codecs = new Map();
  report.forEach((r) => { if (r.type === 'codec') codecs.set(r.id, r.mimeType); });
  report.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'audio') {
      Object.assign(out, {
        packetsReceived: r.packetsReceived, packetsLost: r.packetsLost, bytesReceived: r.bytesReceived,
        jitter: r.jitter, codecIn: codecs.get(r.codecId),
      });
    } else if (r.type === 'outbound-rtp' && r.kind === 'audio') {
      Object.assign(out, { packetsSent: r.packetsSent, bytesSent: r.bytesSent, codecOut: codecs.get(r.codecId) });
    } else if (r.type === 'candidate-pair' && r.nominated) {
      out.iceState = r.state;
      out.rtt = r.currentRoundTripTime;
    }
  });
  return out;
}

// The received audio's power spectrum, summed every 100 ms.
let audioCtx = null;
const tone = { binHz: 0, lo: 0, hi: 0, sum: null, peak: 0, frames: 0, stream: null };

/** Creates (and resumes) the AudioContext; call it from answer() or call(). */
export async function startAudio() {
  if (!audioCtx) audioCtx = new AudioContext();
  await audioCtx.resume();
}

function attachRemote(stream, log) {
  if (tone.stream === stream || !audioCtx) return;
  tone.stream = stream;
  // Chromium feeds WebRTC audio into WebAudio only while the stream is also
  // attached to a media element.
  const el = document.getElementById('remote');
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
  setInterval(() => {
    an.getFloatFrequencyData(bins);
    for (let i = 0; i < bins.length; i++) {
      if (!Number.isFinite(bins[i])) continue;
      tone.sum[i] += Math.pow(10, bins[i] / 10);
      if (tone.sum[i] > tone.peak) tone.peak = tone.sum[i];
    }
    tone.frames++;
  }, 100);
}

/**
 * Level of each frequency over the call, in dB above the median of the
 * telephone band (the same measure as the relay's own page).
 */
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

/** The getUserMedia constraints for options.audioProcessing (default on). */
export function audioConstraints(options = {}) {
  const processing = options.audioProcessing !== false;
  return { audio: { echoCancellation: processing, noiseSuppression: processing, autoGainControl: processing }, video: false };
}
