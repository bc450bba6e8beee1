// page.js — a JsSIP user agent that registers with the relay and answers
// one incoming call, or places one, exposing the window.mediarelay object
// that signaling/web/browsertest's run.mjs drives (pagekit.js there holds
// what this page shares with the SIP.js one). Bundled with esbuild by
// signaling/jssip_test.go; JsSIP ships no browser build.
//
// Query parameters: ws=ws://host:port/ws (the relay's SIP WebSocket),
// domain=host (SIP domain, default the WebSocket's host), user and
// password (for placing calls; register() is given its own), register
// (any value: register as user before placing a call, as a deployed
// softphone does with its SIP proxy).

import JsSIP from 'jssip';

import { audioConstraints, createPage, markAck, startAudio, watchPeerConnection } from '../browsertest/pagekit.js';

const params = new URLSearchParams(location.search);
const wsUrl = params.get('ws');
const domain = params.get('domain') || new URL(wsUrl).hostname;

const { api, log } = createPage('jssip-page');
Object.assign(api, { register, unregister, answer, hangup, call });

let ua = null;
let session = null;

// startUA starts a user agent as user and resolves once its WebSocket is up.
function startUA(user, password) {
  return new Promise((resolve) => {
    const socket = new JsSIP.WebSocketInterface(wsUrl);
    ua = new JsSIP.UA({
      sockets: [socket], uri: `sip:${user}@${domain}`, password, register: false,
      session_timers: false, user_agent: 'JsSIP test page',
    });
    ua.on('newRTCSession', (e) => {
      if (session) return;
      session = e.session;
      if (e.originator === 'remote') {
        api.incoming = { uri: e.request.from.uri.toString() };
        api.state = 'incoming';
        log(`incoming call from ${api.incoming.uri}`);
      }
      // An outgoing session has its RTCPeerConnection already.
      if (session.connection) watchPeerConnection(api, session.connection, log);
      else session.on('peerconnection', (ev) => watchPeerConnection(api, ev.peerconnection, log));
      session.on('progress', (ev) => {
        if (e.originator !== 'local') return;
        api.lastCode = ev.response ? ev.response.status_code : 0;
        api.state = 'ringing';
      });
      session.on('accepted', () => { api.lastCode = 200; });
      // UAS: the ACK arrived; UAC: JsSIP sent it.
      session.on('confirmed', () => { markAck(api); api.state = 'established'; api.lastCode = 200; log('confirmed'); });
      session.on('ended', (ev) => ended(ev, 'ended'));
      session.on('failed', (ev) => ended(ev, 'failed'));
    });
    // Register only once the WebSocket is up (earlier, JsSIP fails it with
    // a connection error).
    ua.on('connected', () => resolve());
    ua.start();
  });
}

async function register(user, password) {
  await startUA(user, password);
  return new Promise((resolve) => {
    ua.on('registered', () => { api.registered = true; log('registered'); resolve({ registered: true, status: 200, reason: 'OK' }); });
    ua.on('registrationFailed', (e) => {
      const code = e.response ? e.response.status_code : 0;
      log(`registration failed: ${code} ${e.cause}${e.response ? ' challenges: ' + e.response.getHeaders('www-authenticate').join(' | ') : ''}`);
      resolve({ registered: false, status: code, reason: e.cause });
    });
    ua.register();
  });
}

function ended(ev, state) {
  api.endedBy = ev.originator === 'local' ? 'local' : 'remote';
  if (ev.originator === 'local') api.hangupAcked = true;
  if (ev.message && ev.message.status_code) api.lastCode = ev.message.status_code;
  api.lastReason = ev.cause;
  api.state = state;
  log(`${state}: ${ev.cause}`);
}

async function answer(options = {}) {
  if (!session) throw new Error('no incoming call');
  await startAudio();
  session.answer({ mediaConstraints: audioConstraints(options), pcConfig: { iceServers: [] } });
  api.state = 'answering';
}

// call places a call to target as the page's user (query parameters).
async function call(target, options = {}) {
  if (session) throw new Error('a call is already in progress');
  if (!ua) {
    const user = params.get('user') || 'webphone';
    const password = params.get('password') || '';
    if (params.has('register')) {
      const reg = await register(user, password);
      if (!reg.registered) throw new Error(`registration as ${user} failed: ${reg.status} ${reg.reason}`);
    } else {
      await startUA(user, password);
    }
  }
  await startAudio();
  api.state = 'calling';
  ua.call(target, { mediaConstraints: audioConstraints(options), pcConfig: { iceServers: [] } });
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
