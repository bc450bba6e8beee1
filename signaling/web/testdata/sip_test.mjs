// Unit tests of the page's SIP user agent (static/sip.js), run by
// `node --test` from TestSIPUserAgentJS in web_test.go.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  parseMessage, parseNameAddr, parseVia, splitCommas, buildResponse, hostOf, byteLength, UA,
  md5hex, digestAuthorization, parseChallenge,
} from '../static/sip.js';

const CRLF = '\r\n';
const msg = (...lines) => lines.join(CRLF);

test('parses a response with compact headers, joined lists and a UTF-8 body', () => {
  const body = 'v=0\r\ns=é\r\n';
  const m = parseMessage(msg(
    'SIP/2.0 183 Session Progress',
    'v: SIP/2.0/WSS a.invalid;branch=z9hG4bK1;rport=5, SIP/2.0/UDP b;branch=z9hG4bK2',
    'f: <sip:me@x>;tag=1',
    't: "Echo, the <great>" <sip:echo@x>;tag=2',
    'i: abc',
    'CSeq: 7 INVITE',
    'Record-Route: <sip:p1;lr>, <sip:p2;lr>',
    'Record-Route: <sip:p3;lr>',
    'm: <sip:echo@10.0.0.1:5060;transport=ws>',
    'c: application/sdp',
    `l: ${byteLength(body)}`,
    '', body));
  assert.equal(m.status, 183);
  assert.equal(m.reason, 'Session Progress');
  assert.equal(m.callId, 'abc');
  assert.deepEqual(m.cseq, { seq: 7, method: 'INVITE' });
  assert.equal(m.getAll('via').length, 2);
  assert.equal(m.topVia.params.get('branch'), 'z9hG4bK1');
  assert.deepEqual(m.getAll('record-route'), ['<sip:p1;lr>', '<sip:p2;lr>', '<sip:p3;lr>']);
  assert.equal(m.to.display, 'Echo, the <great>');
  assert.equal(m.to.params.get('tag'), '2');
  assert.equal(parseNameAddr(m.get('contact')).uri, 'sip:echo@10.0.0.1:5060;transport=ws');
  assert.equal(m.get('Content-Type'), 'application/sdp');
  assert.equal(m.body, body);
});

test('parses a request and cuts the body at Content-Length', () => {
  const m = parseMessage(msg(
    'BYE sip:me@a.invalid;transport=ws SIP/2.0',
    'Via: SIP/2.0/WS 127.0.0.1:5060;branch=z9hG4bKx',
    'From: sip:echo@x;tag=9', 'To: <sip:me@x>;tag=1', 'Call-ID: c', 'CSeq: 2 BYE',
    'Content-Length: 2', '', 'okEXTRA'));
  assert.equal(m.method, 'BYE');
  assert.equal(m.uri, 'sip:me@a.invalid;transport=ws');
  assert.equal(m.from.uri, 'sip:echo@x');
  assert.equal(m.from.params.get('tag'), '9');
  assert.equal(m.body, 'ok');
});

test('rejects malformed messages', () => {
  const good = ['Via: SIP/2.0/WS h;branch=z9hG4bKx', 'From: <sip:a@b>;tag=1', 'To: <sip:c@d>', 'Call-ID: c', 'CSeq: 1 OPTIONS'];
  assert.throws(() => parseMessage(msg('HELLO', ...good, '', '')), /start line/);
  assert.throws(() => parseMessage(msg('OPTIONS sip:x SIP/2.0', ...good.slice(1), '', '')), /missing via/);
  assert.throws(() => parseMessage(msg('OPTIONS sip:x SIP/2.0', ...good, 'Content-Length: 10', '', 'short')), /short body/);
  assert.throws(() => parseMessage(msg('OPTIONS sip:x SIP/2.0', ...good.slice(0, 4), 'CSeq: x', '', '')), /CSeq/);
  assert.throws(() => parseMessage(msg('OPTIONS sip:x SIP/2.0', ...good, 'NoColonHere', '', '')), /header line/);
  assert.equal(parseMessage('\r\n\r\n'), null);
});

test('small helpers', () => {
  assert.deepEqual(splitCommas('<sip:a,b>, "x,y" <sip:c>,sip:d'), ['<sip:a,b>', '"x,y" <sip:c>', 'sip:d']);
  assert.equal(parseVia('SIP / 2.0 / wss h.invalid;branch=z9hG4bKa;rport').transport, 'WSS');
  assert.equal(hostOf('sip:echo@127.0.0.1;transport=ws'), '127.0.0.1');
  assert.equal(hostOf('sips:bob@[::1]:5061'), '[::1]');
  assert.equal(hostOf('sip:example.com'), 'example.com');
  assert.equal(parseNameAddr('sip:a@b;tag=x').params.get('tag'), 'x');
  assert.equal(parseNameAddr('sip:a@b;tag=x').uri, 'sip:a@b');
});

test('builds responses that copy Vias and add a To tag', () => {
  const req = parseMessage(msg(
    'OPTIONS sip:me@a.invalid SIP/2.0',
    'Via: SIP/2.0/WS p1;branch=z9hG4bK1', 'Via: SIP/2.0/UDP p2;branch=z9hG4bK2',
    'From: <sip:relay@x>;tag=r', 'To: <sip:me@x>', 'Call-ID: o1', 'CSeq: 5 OPTIONS', '', ''));
  const res = parseMessage(buildResponse(req, 200, 'OK', { toTag: 'mine', body: 'ü' }));
  assert.equal(res.status, 200);
  assert.deepEqual(res.getAll('via'), ['SIP/2.0/WS p1;branch=z9hG4bK1', 'SIP/2.0/UDP p2;branch=z9hG4bK2']);
  assert.equal(res.to.params.get('tag'), 'mine');
  assert.equal(res.get('content-length'), '2');
  assert.equal(res.get('cseq'), '5 OPTIONS');
});

// A UA wired to a fake socket: sent() returns and forgets what it sent.
const uas = [];
after(() => { for (const ua of uas) ua.close(); });
function fakeUA(opts = {}) {
  globalThis.WebSocket ??= { OPEN: 1 };
  const out = [];
  const ua = new UA({ wsUrl: 'ws://test/ws', user: 'alice', domain: 'relay.test', ...opts });
  uas.push(ua);
  ua.ws = { readyState: 1, send: (t) => out.push(t), close() {} };
  return { ua, sent: () => out.splice(0).map(parseMessage), feed: (text) => ua.receive(text) };
}

function respond(req, status, reason, { toTag = 'bob1', extra = [], body = '' } = {}) {
  const lines = [`SIP/2.0 ${status} ${reason}`];
  for (const v of req.getAll('via')) lines.push(`Via: ${v}`);
  let to = req.get('to');
  if (status > 100 && toTag) to += `;tag=${toTag}`;
  lines.push(`From: ${req.get('from')}`, `To: ${to}`, `Call-ID: ${req.callId}`, `CSeq: ${req.get('cseq')}`, ...extra);
  if (body) lines.push('Content-Type: application/sdp');
  lines.push(`Content-Length: ${byteLength(body)}`, '', body);
  return lines.join(CRLF);
}

function recorder() {
  const seen = [];
  const events = {};
  for (const name of ['progress', 'answered', 'failed', 'ended']) events[name] = (ev) => seen.push([name, ev]);
  return { seen, events };
}

test('INVITE, early media, 2xx with Record-Route, re-ACK, BYE', async () => {
  const { ua, sent, feed } = fakeUA();
  const { seen, events } = recorder();
  const call = ua.invite('sip:echo@127.0.0.1', 'v=0\r\n', events);
  const [invite] = sent();
  assert.equal(invite.method, 'INVITE');
  assert.equal(invite.uri, 'sip:echo@127.0.0.1');
  const via = invite.topVia;
  assert.equal(via.transport, 'WSS');
  assert.match(via.sentBy, /\.invalid$/);
  assert.match(via.params.get('branch'), /^z9hG4bK/);
  assert.ok(via.params.has('rport'));
  assert.ok(invite.from.params.get('tag'));
  assert.match(parseNameAddr(invite.get('contact')).uri, /^sip:alice@.+\.invalid;transport=ws$/);
  assert.equal(invite.get('max-forwards'), '70');
  assert.equal(invite.get('content-type'), 'application/sdp');
  assert.equal(invite.body, 'v=0\r\n');

  await feed(respond(invite, 100, 'Trying', { toTag: '' }));
  await feed(respond(invite, 183, 'Session Progress', { body: 'v=0\r\ns=early\r\n' }));
  const rr = ['Record-Route: <sip:p1;lr>', 'Record-Route: <sip:p2;lr>', 'Contact: <sip:echo@10.1.1.1;transport=ws>'];
  const ok = respond(invite, 200, 'OK', { extra: rr, body: 'v=0\r\ns=answer\r\n' });
  await feed(ok);
  const [ack] = sent();
  assert.equal(ack.method, 'ACK');
  assert.equal(ack.uri, 'sip:echo@10.1.1.1;transport=ws');
  assert.deepEqual(ack.getAll('route'), ['<sip:p2;lr>', '<sip:p1;lr>']);
  assert.equal(ack.to.params.get('tag'), 'bob1');
  assert.equal(ack.cseq.seq, invite.cseq.seq);
  assert.notEqual(ack.topVia.params.get('branch'), via.params.get('branch'));
  assert.deepEqual(seen.map(([n, e]) => [n, e.status ?? '', e.sdp ?? '']), [
    ['progress', 100, ''], ['progress', 183, 'v=0\r\ns=early\r\n'], ['answered', '', 'v=0\r\ns=answer\r\n']]);

  await feed(ok); // a retransmitted 2xx is ACKed again, identically
  const [again] = sent();
  assert.equal(again.method, 'ACK');
  assert.equal(again.topVia.params.get('branch'), ack.topVia.params.get('branch'));

  call.hangup();
  const [bye] = sent();
  assert.equal(bye.method, 'BYE');
  assert.equal(bye.uri, 'sip:echo@10.1.1.1;transport=ws');
  assert.deepEqual(bye.getAll('route'), ['<sip:p2;lr>', '<sip:p1;lr>']);
  assert.equal(bye.cseq.seq, invite.cseq.seq + 1);
  assert.equal(bye.from.params.get('tag'), invite.from.params.get('tag'));
  await feed(respond(bye, 200, 'OK', { toTag: '' }));
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(seen.at(-1), ['ended', { by: 'local', status: 200, reason: '' }]);
});

test('CANCEL while ringing, then ACK the 487', async () => {
  const { ua, sent, feed } = fakeUA();
  const { seen, events } = recorder();
  const call = ua.invite('sip:echo@127.0.0.1', 'v=0\r\n', events);
  const [invite] = sent();
  call.hangup();
  assert.deepEqual(sent(), [], 'no CANCEL before a provisional response');
  await feed(respond(invite, 180, 'Ringing'));
  const [cancel] = sent();
  assert.equal(cancel.method, 'CANCEL');
  assert.equal(cancel.uri, invite.uri);
  assert.equal(cancel.topVia.params.get('branch'), invite.topVia.params.get('branch'));
  assert.deepEqual(cancel.cseq, { seq: invite.cseq.seq, method: 'CANCEL' });
  assert.equal(cancel.get('to'), invite.get('to'));
  await feed(respond(cancel, 200, 'OK', { toTag: '' }));
  await feed(respond(invite, 487, 'Request Terminated'));
  const [ack] = sent();
  assert.equal(ack.method, 'ACK');
  assert.equal(ack.topVia.params.get('branch'), invite.topVia.params.get('branch'));
  assert.equal(ack.to.params.get('tag'), 'bob1');
  assert.deepEqual(seen.at(-1), ['ended', { by: 'local', status: 487, reason: 'Request Terminated' }]);
});

test('a rejected call is ACKed and reported', async () => {
  const { ua, sent, feed } = fakeUA();
  const { seen, events } = recorder();
  ua.invite('sip:nobody@127.0.0.1', 'v=0\r\n', events);
  const [invite] = sent();
  await feed(respond(invite, 404, 'Not Found'));
  const [ack] = sent();
  assert.equal(ack.method, 'ACK');
  assert.deepEqual(ack.cseq, { seq: invite.cseq.seq, method: 'ACK' });
  assert.deepEqual(seen.map(([n]) => n), ['failed', 'ended']);
  assert.deepEqual(seen[0][1], { status: 404, reason: 'Not Found' });
});

test('answers BYE, OPTIONS and stray requests', async () => {
  const { ua, sent, feed } = fakeUA();
  const { seen, events } = recorder();
  ua.invite('sip:echo@127.0.0.1', 'v=0\r\n', events);
  const [invite] = sent();
  await feed(respond(invite, 200, 'OK', { extra: ['Contact: <sip:echo@h>'], body: 'v=0\r\n' }));
  sent(); // the ACK
  const fromTag = invite.from.params.get('tag');
  const req = (method, cseq, toTag = fromTag, callId = invite.callId) => msg(
    `${method} ${parseNameAddr(invite.get('contact')).uri} SIP/2.0`,
    'Via: SIP/2.0/WS relay;branch=z9hG4bKr' + cseq,
    'From: <sip:echo@127.0.0.1>;tag=bob1', `To: <sip:alice@x>${toTag ? ';tag=' + toTag : ''}`,
    `Call-ID: ${callId}`, `CSeq: ${cseq} ${method}`, 'Content-Length: 0', '', '');

  await feed(req('OPTIONS', 1, ''));
  await feed(req('INVITE', 2, '', 'other-call'));
  await feed(req('BYE', 3, 'x', 'unknown'));
  await feed(req('BYE', 4));
  const [options, busy, unknown, bye] = sent();
  assert.equal(options.status, 200);
  assert.ok(options.get('allow').includes('INVITE'));
  assert.equal(busy.status, 486);
  assert.ok(busy.to.params.get('tag'));
  assert.equal(unknown.status, 481);
  assert.equal(bye.status, 200);
  assert.equal(bye.to.params.get('tag'), fromTag);
  assert.deepEqual(seen.at(-1), ['ended', { by: 'remote', status: 0, reason: '' }]);
});

test('md5 matches node:crypto', () => {
  for (const input of ['', 'a', 'abc', 'é€😀', 'x'.repeat(55), 'y'.repeat(56), 'z'.repeat(64), 'q'.repeat(1000)]) {
    assert.equal(md5hex(input), createHash('md5').update(input, 'utf8').digest('hex'), `md5 of ${input.length} chars`);
  }
});

test('digest response matches RFC 2617 §3.5', () => {
  const challenge = 'Digest realm="testrealm@host.com", qop="auth,auth-int", ' +
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"';
  assert.equal(parseChallenge(challenge).get('qop'), 'auth,auth-int');
  const v = digestAuthorization({
    method: 'GET', uri: '/dir/index.html', user: 'Mufasa', password: 'Circle Of Life', challenge, cnonce: '0a4f113b',
  });
  assert.match(v, /response="6629fae49393a05397450978507c4ef1"/);
  assert.match(v, /qop=auth, nc=00000001, cnonce="0a4f113b"/);
  assert.match(v, /opaque="5ccc069c403ebaf9f0171e9517f40e41"/);
  assert.throws(() => digestAuthorization({ method: 'X', uri: 'u', user: 'a', password: 'b', challenge: 'Digest algorithm=SHA-256' }), /unsupported/);
});

test('REGISTER answers a 401 with digest credentials', async () => {
  const { ua, sent, feed } = fakeUA({ password: 'secret' });
  const results = [];
  ua.onregistration = (r) => results.push(r);
  const done = ua.register(300);
  await new Promise((r) => setTimeout(r, 0));
  const [first] = sent();
  assert.equal(first.method, 'REGISTER');
  assert.equal(first.uri, 'sip:relay.test');
  assert.equal(first.to.uri, 'sip:alice@relay.test');
  assert.match(first.get('contact'), /^<sip:alice@.+\.invalid;transport=ws>;expires=300$/);
  await feed(respond(first, 401, 'Unauthorized', { extra: ['WWW-Authenticate: Digest realm="relay", nonce="n1", qop="auth"'] }));
  await new Promise((r) => setTimeout(r, 0));
  const [second] = sent();
  assert.equal(second.callId, first.callId);
  assert.equal(second.cseq.seq, first.cseq.seq + 1);
  const auth = second.get('authorization');
  assert.match(auth, /^Digest username="alice", realm="relay", nonce="n1", uri="sip:relay.test"/);
  const cnonce = /cnonce="([^"]+)"/.exec(auth)[1];
  const expected = digestAuthorization({ method: 'REGISTER', uri: 'sip:relay.test', user: 'alice', password: 'secret',
    challenge: 'Digest realm="relay", nonce="n1", qop="auth"', cnonce });
  assert.equal(auth, expected);
  await feed(respond(second, 200, 'OK', { extra: ['Expires: 120'] }));
  assert.deepEqual(await done, { registered: true, status: 200, reason: 'OK' });
  assert.equal(ua.registered, true);
  assert.deepEqual(results.at(-1), { registered: true, status: 200, reason: 'OK' });
});

test('INVITE answers a 407 once, with the next CSeq', async () => {
  const { ua, sent, feed } = fakeUA({ password: 'pw' });
  const { seen, events } = recorder();
  ua.invite('sip:bob@trunk', 'v=0\r\n', events);
  const [first] = sent();
  await feed(respond(first, 407, 'Proxy Authentication Required', {
    extra: ['Proxy-Authenticate: Digest realm="r", nonce="n"'] }));
  const [ack, second] = sent();
  assert.equal(ack.method, 'ACK');
  assert.equal(ack.topVia.params.get('branch'), first.topVia.params.get('branch'));
  assert.equal(second.method, 'INVITE');
  assert.equal(second.callId, first.callId);
  assert.equal(second.from.params.get('tag'), first.from.params.get('tag'));
  assert.equal(second.cseq.seq, first.cseq.seq + 1);
  assert.notEqual(second.topVia.params.get('branch'), first.topVia.params.get('branch'));
  assert.match(second.get('proxy-authorization'), /^Digest username="alice", realm="r", nonce="n", uri="sip:bob@trunk", response="[0-9a-f]{32}"/);
  assert.equal(second.body, 'v=0\r\n');
  await feed(respond(second, 407, 'Proxy Authentication Required', {
    extra: ['Proxy-Authenticate: Digest realm="r", nonce="n2"'] }));
  const [ack2, ...rest] = sent();
  assert.equal(ack2.method, 'ACK');
  assert.deepEqual(rest, [], 'only one retry');
  assert.deepEqual(seen.map(([n]) => n), ['failed', 'ended']);
});

function incomingInvite({ body = 'v=0\r\ns=offer\r\n', branch = 'z9hG4bKin1' } = {}) {
  return msg(
    'INVITE sip:alice@x.invalid;transport=ws SIP/2.0',
    `Via: SIP/2.0/WS relay:8080;branch=${branch}`,
    'Record-Route: <sip:rr1;lr>', 'Record-Route: <sip:rr2;lr>',
    'From: "Bob" <sip:bob@trunk>;tag=bobtag', 'To: <sip:alice@relay.test>',
    'Call-ID: in-1', 'CSeq: 10 INVITE', 'Contact: <sip:bob@10.0.0.9:5060>',
    ...(body ? ['Content-Type: application/sdp'] : []), `Content-Length: ${byteLength(body)}`, '', body);
}

test('incoming call: ring, accept, ACK, BYE from us', async () => {
  const { ua, sent, feed } = fakeUA();
  let incoming = null;
  const { seen, events } = recorder();
  events.confirmed = (ev) => seen.push(['confirmed', ev]);
  ua.onincoming = (c) => { incoming = c; c.events = events; };
  await feed(incomingInvite());
  const [ringing] = sent();
  assert.equal(ringing.status, 180);
  const localTag = ringing.to.params.get('tag');
  assert.ok(localTag);
  assert.equal(incoming.offer, 'v=0\r\ns=offer\r\n');
  assert.equal(incoming.caller.display, 'Bob');

  // A second call while this one rings is busy.
  await feed(incomingInvite({ branch: 'z9hG4bKother' }).replace('Call-ID: in-1', 'Call-ID: in-2'));
  assert.equal(sent()[0].status, 486);

  incoming.accept('v=0\r\ns=answer\r\n');
  const [ok] = sent();
  assert.equal(ok.status, 200);
  assert.equal(ok.to.params.get('tag'), localTag);
  assert.equal(ok.body, 'v=0\r\ns=answer\r\n');
  assert.ok(ok.get('contact'));
  await feed(msg('ACK sip:alice@x.invalid;transport=ws SIP/2.0', 'Via: SIP/2.0/WS relay;branch=z9hG4bKack',
    'From: "Bob" <sip:bob@trunk>;tag=bobtag', `To: <sip:alice@relay.test>;tag=${localTag}`,
    'Call-ID: in-1', 'CSeq: 10 ACK', 'Content-Length: 0', '', ''));
  assert.deepEqual(seen.at(-1), ['confirmed', { sdp: '' }]);

  incoming.hangup();
  const [bye] = sent();
  assert.equal(bye.method, 'BYE');
  assert.equal(bye.uri, 'sip:bob@10.0.0.9:5060');
  assert.deepEqual(bye.getAll('route'), ['<sip:rr1;lr>', '<sip:rr2;lr>']);
  assert.equal(bye.from.uri, 'sip:alice@relay.test');
  assert.equal(bye.from.params.get('tag'), localTag);
  assert.equal(bye.to.uri, 'sip:bob@trunk');
  assert.equal(bye.to.params.get('tag'), 'bobtag');
  assert.equal(bye.callId, 'in-1');
  await feed(respond(bye, 200, 'OK', { toTag: '' }));
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(seen.at(-1), ['ended', { by: 'local', status: 200, reason: '' }]);
});

test('incoming call: CANCEL while ringing, decline, and no handler', async () => {
  const { ua, sent, feed } = fakeUA();
  const { seen, events } = recorder();
  ua.onincoming = (c) => { c.events = events; };
  await feed(incomingInvite());
  sent();
  await feed(msg('CANCEL sip:alice@x.invalid;transport=ws SIP/2.0', 'Via: SIP/2.0/WS relay:8080;branch=z9hG4bKin1',
    'From: "Bob" <sip:bob@trunk>;tag=bobtag', 'To: <sip:alice@relay.test>', 'Call-ID: in-1', 'CSeq: 10 CANCEL',
    'Content-Length: 0', '', ''));
  const [cancelOk, terminated] = sent();
  assert.equal(cancelOk.status, 200);
  assert.equal(cancelOk.cseq.method, 'CANCEL');
  assert.equal(terminated.status, 487);
  assert.equal(terminated.cseq.method, 'INVITE');
  assert.deepEqual(seen.at(-1), ['ended', { by: 'remote', status: 487, reason: 'Request Terminated' }]);

  let incoming;
  ua.onincoming = (c) => { incoming = c; c.events = events; };
  await feed(incomingInvite({ branch: 'z9hG4bKin2' }).replace('Call-ID: in-1', 'Call-ID: in-3'));
  sent();
  incoming.hangup();
  assert.equal(sent()[0].status, 603);

  ua.onincoming = null;
  await feed(incomingInvite({ branch: 'z9hG4bKin3' }).replace('Call-ID: in-1', 'Call-ID: in-4'));
  assert.equal(sent()[0].status, 486);
});

test('re-INVITE with an offer is answered; without one it is refused', async () => {
  const { ua, sent, feed } = fakeUA();
  const { events } = recorder();
  events.offer = async ({ sdp }) => `answer-to:${sdp.trim()}\r\n`;
  ua.invite('sip:echo@127.0.0.1', 'v=0\r\n', events);
  const [invite] = sent();
  await feed(respond(invite, 200, 'OK', { extra: ['Contact: <sip:echo@h>'], body: 'v=0\r\n' }));
  sent(); // the ACK
  const fromTag = invite.from.params.get('tag');
  const inDialog = (method, cseq, body = '') => msg(
    `${method} sip:alice@x.invalid SIP/2.0`, `Via: SIP/2.0/WS relay;branch=z9hG4bKre${cseq}`,
    'From: <sip:echo@127.0.0.1>;tag=bob1', `To: <sip:alice@x>;tag=${fromTag}`, `Call-ID: ${invite.callId}`,
    `CSeq: ${cseq} ${method}`, ...(body ? ['Content-Type: application/sdp'] : []),
    `Content-Length: ${byteLength(body)}`, '', body);

  await feed(inDialog('INVITE', 20, 'v=0\r\ns=reoffer\r\n'));
  await new Promise((r) => setTimeout(r, 0));
  const [ok] = sent();
  assert.equal(ok.status, 200);
  assert.equal(ok.body, 'answer-to:v=0\r\ns=reoffer\r\n');
  assert.equal(ok.get('content-type'), 'application/sdp');

  await feed(inDialog('INVITE', 21));
  assert.equal(sent()[0].status, 488);
  await feed(inDialog('UPDATE', 22));
  assert.equal(sent()[0].status, 200);
  await feed(inDialog('MESSAGE', 23));
  assert.equal(sent()[0].status, 405);
});
