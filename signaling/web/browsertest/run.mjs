// run.mjs — one call from headless Chromium through the mediarelay softphone.
//
//   node run.mjs '{"pageUrl":"http://127.0.0.1:8080/","target":"sip:echo@127.0.0.1",
//                  "wav":"/tmp/mic.wav","holdMs":3000,"freqs":[400,1000],"dtmf":"1#"}'
//
// Opens the page, calls the target, waits for the call and its media, holds,
// reads window.mediarelay.toneLevels(freqs), hangs up and checks the hang-up
// was acknowledged. With "cancel": true it instead hangs up as soon as the
// call rings and checks the CANCEL was answered by a 487. Prints exactly one JSON line on stdout (also on failure,
// with an "error" field) and exits 1 on failure, 2 on a usage error.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const FINAL_STATES = ['established', 'failed', 'ended'];

let opts;
try {
  opts = JSON.parse(process.argv[2] || '');
  if (!opts.pageUrl) throw new Error('pageUrl is required');
} catch (err) {
  console.error(`usage: node run.mjs '<json options>': ${err.message}`);
  process.exit(2);
}
const holdMs = opts.holdMs ?? 3000;
const timeoutMs = opts.timeoutMs ?? holdMs + 45000;
const freqs = opts.freqs ?? [];

const started = Date.now();
const result = {
  established: false, mediaConnected: false, code: 0, reason: '', toneDB: {}, dtmfSent: false,
  hungUp: false, endedBy: '', state: '', stats: {}, log: [], error: '',
};
const note = (line) => result.log.push(`${((Date.now() - started) / 1000).toFixed(3)} ${line}`);

let context = null;
const profile = mkdtempSync(join(tmpdir(), 'mediarelay-chromium-'));
let printed = false;

function finish(error) {
  if (printed) return;
  printed = true;
  if (error) result.error = error;
  process.stdout.write(JSON.stringify(result) + '\n');
  if (error) console.error(`run.mjs: ${error}`);
}

async function cleanup() {
  // Closing can crawl on a loaded machine; past a few seconds, exiting is
  // enough, since Playwright kills the browser it launched when node exits.
  if (context) await Promise.race([context.close().catch(() => {}), sleep(5000)]);
  try {
    rmSync(profile, { recursive: true, force: true });
  } catch (err) {
    note(`cannot remove ${profile}: ${err.message}`);
  }
}

// The whole run is bounded: report what we have and leave.
const deadline = setTimeout(async () => {
  finish(`timed out after ${timeoutMs} ms (state ${result.state || 'unknown'})`);
  await Promise.race([cleanup(), new Promise((r) => setTimeout(r, 3000))]);
  process.exit(1);
}, timeoutMs);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function snapshot(page) {
  const s = await page.evaluate(() => {
    const m = window.mediarelay;
    return {
      state: m.state, code: m.lastCode, reason: m.lastReason, media: m.media,
      endedBy: m.endedBy, hangupAcked: m.hangupAcked, stats: m.stats,
    };
  });
  Object.assign(result, {
    state: s.state, code: s.code, reason: s.reason, endedBy: s.endedBy, stats: s.stats,
  });
  if (s.media === 'connected') result.mediaConnected = true;
  return s;
}

async function main() {
  const args = [
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--allow-loopback-in-peer-connection',
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
  ];
  if (opts.wav) args.push(`--use-file-for-fake-audio-capture=${opts.wav}`);

  // A persistent context on a fresh temporary directory is Playwright's way
  // of giving Chromium an explicit --user-data-dir.
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opts.chromium || '/usr/bin/chromium',
    headless: true,
    args,
    timeout: 30000,
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on('console', (m) => note(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => note(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) => note(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));

  note(`opening ${opts.pageUrl}`);
  await page.goto(opts.pageUrl, { waitUntil: 'load', timeout: 15000 });
  await page.waitForFunction(() => window.mediarelay && window.mediarelay.state === 'idle', null, { timeout: 10000 });

  const target = opts.target || (await page.inputValue('#target'));
  note(`calling ${target}`);
  // Echo cancellation and noise suppression would eat the steady test tones.
  const callErr = await page.evaluate(
    (t) => window.mediarelay.call(t, { audioProcessing: false }).then(() => '', (e) => e.message), target);
  if (callErr) {
    await snapshot(page);
    return `call could not start: ${callErr}`;
  }

  if (opts.cancel) return cancelWhileRinging(page);

  await page.waitForFunction((states) => states.includes(window.mediarelay.state), FINAL_STATES, { timeout: 20000 })
    .catch(() => {});
  let s = await snapshot(page);
  if (s.state !== 'established') {
    return `call not established: state ${s.state}, ${s.code} ${s.reason}`.trim();
  }
  result.established = true;
  note('established');

  await page.waitForFunction(() => window.mediarelay.media === 'connected' || window.mediarelay.state !== 'established',
    null, { timeout: 10000 }).catch(() => {});
  s = await snapshot(page);
  if (!result.mediaConnected) {
    return `media did not connect (connectionState ${s.media}, state ${s.state})`;
  }
  note('media connected');

  const holdStart = Date.now();
  if (opts.dtmf) {
    await sleep(Math.min(1000, holdMs / 2));
    result.dtmfSent = await page.evaluate((d) => window.mediarelay.dtmf(d), opts.dtmf);
    note(`dtmf ${opts.dtmf}: ${result.dtmfSent ? 'sent' : 'not possible'}`);
  }
  await sleep(Math.max(0, holdMs - (Date.now() - holdStart)));

  const levels = await page.evaluate((f) => window.mediarelay.toneLevels(f), freqs);
  freqs.forEach((f, i) => { if (levels[i] !== null) result.toneDB[String(f)] = levels[i]; });
  note(`tone levels ${JSON.stringify(result.toneDB)}`);

  s = await snapshot(page);
  if (s.state !== 'established') {
    return `call dropped during hold: state ${s.state}, ended by ${s.endedBy || '?'}, ${s.code} ${s.reason}`;
  }
  await page.evaluate(() => window.mediarelay.hangup());
  s = await snapshot(page);
  result.hungUp = s.hangupAcked;
  note(`hung up: state ${s.state}, acknowledged ${s.hangupAcked}`);
  if (!s.hangupAcked) return 'hang-up (BYE) was not acknowledged';
  if (opts.dtmf && !result.dtmfSent) return 'DTMF could not be sent (telephone-event not negotiated?)';
  return '';
}

// Hangs up as soon as the far end rings: the page sends CANCEL, and the
// 487 that follows counts as the acknowledgement.
async function cancelWhileRinging(page) {
  const ringing = ['ringing', 'early'];
  await page.waitForFunction((states) => states.includes(window.mediarelay.state), ringing.concat(FINAL_STATES),
    { timeout: 20000 }).catch(() => {});
  let s = await snapshot(page);
  if (!ringing.includes(s.state)) return `call did not ring: state ${s.state}, ${s.code} ${s.reason}`.trim();
  note(`ringing (${s.code}); cancelling`);
  await page.evaluate(() => window.mediarelay.hangup());
  s = await snapshot(page);
  result.hungUp = s.hangupAcked;
  note(`cancelled: state ${s.state}, ${s.code} ${s.reason}, acknowledged ${s.hangupAcked}`);
  if (s.state === 'established' || s.code === 200) return 'the call was answered despite the CANCEL';
  if (!s.hangupAcked) return `CANCEL was not acknowledged with a 487 (got ${s.code} ${s.reason})`;
  return '';
}

let error;
try {
  error = await main();
} catch (err) {
  error = `${err.message || err}`.split('\n')[0];
  note(`exception: ${err.stack || err}`);
}
clearTimeout(deadline);
await cleanup();
if (!printed) {
  finish(error);
  process.exit(error ? 1 : 0);
}
