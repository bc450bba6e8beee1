// page.js — a SIP.js (npm sip.js 0.21) user agent that registers with the
// relay and answers one incoming call, or places one, exposing the
// window.mediarelay object that run.mjs drives (see ../pagekit.js, shared
// with the JsSIP page). Bundled with esbuild (both from this package's
// package.json) by the signaling tests.
//
// Query parameters: ws=ws://host:port/ws (the relay's SIP WebSocket),
// domain=host (SIP domain, default the WebSocket's host), user and
// password (for placing calls; register() is given its own).
//
// SIP.js answers MD5 digest challenges only, and only the first one of a
// response: the relay must offer MD5 first (sip.digest_algorithms).

import { Inviter, Registerer, SessionState, UserAgent, Web } from 'sip.js';

import { audioConstraints, createPage, markAck, startAudio, watchPeerConnection } from '../pagekit.js';

const params = new URLSearchParams(location.search);
const wsUrl = params.get('ws');
const domain = params.get('domain') || new URL(wsUrl).hostname;

const { api, log } = createPage('sipjs-page');
Object.assign(api, { register, unregister, answer, hangup, call });

let ua = null;
let registerer = null;
let session = null;
let invitation = null;

// Every session's RTCPeerConnection is watched as SIP.js creates it.
const baseFactory = Web.defaultSessionDescriptionHandlerFactory();
function sdhFactory(s, options) {
  const sdh = baseFactory(s, options);
  watchPeerConnection(api, sdh.peerConnection, log);
  return sdh;
}

async function startUA(user, password) {
  ua = new UserAgent({
    uri: UserAgent.makeURI(`sip:${user}@${domain}`),
    transportOptions: { server: wsUrl },
    authorizationUsername: user,
    authorizationPassword: password,
    userAgentString: 'SIP.js test page',
    logLevel: 'warn',
    sessionDescriptionHandlerFactory: sdhFactory,
    sessionDescriptionHandlerFactoryOptions: { peerConnectionConfiguration: { iceServers: [] }, iceGatheringTimeout: 2000 },
    delegate: { onInvite },
  });
  await ua.start();
}

async function register(user, password) {
  await startUA(user, password);
  registerer = new Registerer(ua);
  return new Promise((resolve) => {
    registerer.register({
      requestDelegate: {
        onAccept: () => { api.registered = true; log('registered'); resolve({ registered: true, status: 200, reason: 'OK' }); },
        onReject: (res) => {
          const m = res.message;
          log(`registration failed: ${m.statusCode} ${m.reasonPhrase}`);
          resolve({ registered: false, status: m.statusCode, reason: m.reasonPhrase });
        },
      },
    }).catch((err) => resolve({ registered: false, status: 0, reason: err.message }));
  });
}

// follow mirrors a session's state into api.
function follow(s) {
  session = s;
  s.stateChange.addListener((state) => {
    log(`session ${state}`);
    if (state === SessionState.Established) {
      api.state = 'established';
      api.lastCode = 200;
      if (s instanceof Inviter) markAck(api); // SIP.js sends the ACK, then changes state
    } else if (state === SessionState.Terminated) {
      if (!api.endedBy) api.endedBy = 'remote';
      api.state = api.state === 'established' || api.state === 'ending' ? 'ended' : 'failed';
    }
  });
}

function onInvite(inv) {
  if (session) {
    inv.reject({ statusCode: 486 });
    return;
  }
  invitation = inv;
  follow(inv);
  inv.delegate = { onAck: () => { markAck(api); log('ACK received'); } };
  api.incoming = { uri: inv.remoteIdentity.uri.toString() };
  api.state = 'incoming';
  log(`incoming call from ${api.incoming.uri}`);
}

async function answer(options = {}) {
  if (!invitation) throw new Error('no incoming call');
  await startAudio();
  api.state = 'answering';
  invitation.accept({ sessionDescriptionHandlerOptions: { constraints: audioConstraints(options) } })
    .catch((err) => log(`accept: ${err.message}`));
}

// call places a call to target as the page's user (query parameters).
async function call(target, options = {}) {
  if (session) throw new Error('a call is already in progress');
  if (!ua) await startUA(params.get('user') || 'webphone', params.get('password') || '');
  await startAudio();
  const uri = UserAgent.makeURI(target);
  if (!uri) throw new Error(`bad target ${target}`);
  const inviter = new Inviter(ua, uri, { sessionDescriptionHandlerOptions: { constraints: audioConstraints(options) } });
  follow(inviter);
  api.state = 'calling';
  inviter.invite({
    requestDelegate: {
      onProgress: (res) => { api.lastCode = res.message.statusCode; api.state = 'ringing'; },
      onReject: (res) => { api.lastCode = res.message.statusCode; api.lastReason = res.message.reasonPhrase; },
    },
  }).catch((err) => log(`invite: ${err.message}`));
}

async function hangup() {
  if (!session) return;
  const s = session;
  const over = new Promise((resolve) => {
    if (s.state === SessionState.Terminated) resolve();
    s.stateChange.addListener((state) => { if (state === SessionState.Terminated) resolve(); });
    setTimeout(resolve, 3000);
  });
  api.endedBy = 'local';
  api.state = 'ending';
  if (s.state === SessionState.Established) {
    // SIP.js ends the session as it sends the BYE: wait for the answer
    // itself, or a loaded machine reports a BYE that was in fact answered
    // as unacknowledged.
    const answered = new Promise((resolve) => {
      s.bye({ requestDelegate: { onAccept: () => { api.hangupAcked = true; resolve(); }, onReject: () => resolve() } })
        .catch((err) => { log(`bye: ${err.message}`); resolve(); });
      setTimeout(resolve, 3000);
    });
    await answered;
  } else if (s instanceof Inviter) {
    s.cancel().catch((err) => log(`cancel: ${err.message}`));
  } else {
    s.reject().catch((err) => log(`reject: ${err.message}`));
  }
  await over;
}

async function unregister() {
  if (registerer) await registerer.unregister().catch(() => {});
  await new Promise((r) => setTimeout(r, 300));
  if (ua) await ua.stop().catch(() => {});
}

log(`SIP.js page ready, ws ${wsUrl}`);
