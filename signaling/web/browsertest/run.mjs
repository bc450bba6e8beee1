// run.mjs — calls from headless Chromium through the mediarelay softphone.
//
// One call:
//   node run.mjs '{"pageUrl":"http://127.0.0.1:8080/","target":"sip:echo@127.0.0.1",
//                  "wav":"/tmp/mic.wav","holdMs":3000,"freqs":[400,1000],"dtmf":"1#"}'
// prints one JSON result line on stdout and exits 0, or 1 on failure (the
// line is printed then too, with an "error" field), 2 on a usage error.
//
// Several calls in one browser (Chromium's start dominates a short call):
//   node run.mjs --serve '{"wav":"/tmp/mic.wav"}'
// then reads one call's options per line on stdin and answers each with one
// result line on stdout, until stdin closes.
//
// A call opens the page in a new tab, calls the target, waits for the call
// and its media, holds, reads window.mediarelay.toneLevels(freqs), hangs up
// and checks the hang-up was acknowledged. With "cancel": true it instead
// hangs up as soon as the call rings and checks the CANCEL brought a 487.
// With "answer": true it registers as "user" (and "password") and answers
// the first incoming call instead of calling out; the rest is the same.
// A page that keeps window.mediarelay.timing (see pagekit.js) has it
// reported in "timing", and one with refreshStats() gets its getStats()
// summary refreshed at the end of the hold.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const FINAL_STATES = ['established', 'failed', 'ended'];
const RINGING_STATES = ['ringing', 'early'];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function usage(msg) {
  console.error(`usage: node run.mjs '<call json>' | node run.mjs --serve '<launch json>': ${msg}`);
  process.exit(2);
}

const serve = process.argv[2] === '--serve';
let launchOpts;
try {
  launchOpts = JSON.parse(process.argv[serve ? 3 : 2] || '');
  if (!serve && !launchOpts.pageUrl) throw new Error('pageUrl is required');
} catch (err) {
  usage(err.message);
}

const profile = mkdtempSync(join(tmpdir(), 'mediarelay-chromium-'));
let context = null;

async function launch({ wav, chromium: executablePath }) {
  const args = [
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--allow-loopback-in-peer-connection',
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
  ];
  if (wav) args.push(`--use-file-for-fake-audio-capture=${wav}`);
  // A persistent context on a fresh temporary directory is Playwright's way
  // of giving Chromium an explicit --user-data-dir.
  context = await chromium.launchPersistentContext(profile, {
    executablePath: executablePath || '/usr/bin/chromium',
    headless: true,
    args,
    timeout: 60000,
  });
}

async function cleanup() {
  // Closing can crawl on a loaded machine; past a few seconds, exiting is
  // enough, since Playwright kills the browser it launched when node exits.
  if (context) await Promise.race([context.close().catch(() => {}), sleep(5000)]);
  context = null;
  try {
    rmSync(profile, { recursive: true, force: true });
  } catch {
    // a browser still shutting down may be writing there; the OS tmp reaper copes
  }
}

/** One call in a new tab; resolves with its result object (never throws). */
async function runCall(opts) {
  const started = Date.now();
  const result = {
    established: false, mediaConnected: false, code: 0, reason: '', toneDB: {}, dtmfSent: false,
    hungUp: false, endedBy: '', state: '', stats: {}, timing: null, relayMode: '', callInfo: {}, log: [], error: '',
  };
  const note = (line) => result.log.push(`${((Date.now() - started) / 1000).toFixed(3)} ${line}`);
  const holdMs = opts.holdMs ?? 3000;
  const timeoutMs = opts.timeoutMs ?? holdMs + 45000;
  let page = null;

  async function snapshot() {
    const s = await page.evaluate(() => {
      const m = window.mediarelay;
      return {
        state: m.state, code: m.lastCode, reason: m.lastReason, media: m.media,
        endedBy: m.endedBy, hangupAcked: m.hangupAcked, stats: m.stats, timing: m.timing || null,
        relayMode: m.relayMode || '',
        // The built-in page's call panel (codec, mode, rtt, loss, jitter), as shown.
        callInfo: Object.fromEntries([...document.querySelectorAll('#callinfo dd')]
          .map((dd) => [dd.id.replace(/^ci-/, ''), dd.textContent])),
      };
    });
    Object.assign(result, {
      state: s.state, code: s.code, reason: s.reason, endedBy: s.endedBy, stats: s.stats, timing: s.timing,
      relayMode: s.relayMode, callInfo: s.callInfo,
    });
    if (s.media === 'connected') result.mediaConnected = true;
    return s;
  }

  // Hangs up as soon as the far end rings: the page sends CANCEL, and the
  // 487 that follows counts as the acknowledgement.
  async function cancelWhileRinging() {
    await page.waitForFunction((states) => states.includes(window.mediarelay.state),
      RINGING_STATES.concat(FINAL_STATES), { timeout: 20000 }).catch(() => {});
    let s = await snapshot();
    if (!RINGING_STATES.includes(s.state)) return `call did not ring: state ${s.state}, ${s.code} ${s.reason}`.trim();
    note(`ringing (${s.code}); cancelling`);
    await page.evaluate(() => window.mediarelay.hangup());
    s = await snapshot();
    result.hungUp = s.hangupAcked;
    note(`cancelled: state ${s.state}, ${s.code} ${s.reason}, acknowledged ${s.hangupAcked}`);
    if (s.state === 'established' || s.code === 200) return 'the call was answered despite the CANCEL';
    if (!s.hangupAcked) return `CANCEL was not acknowledged with a 487 (got ${s.code} ${s.reason})`;
    return '';
  }

  // Registers, waits for a call to ring and answers it.
  async function answerIncoming() {
    const user = opts.user || 'webphone';
    const reg = await page.evaluate(([u, p]) => window.mediarelay.register(u, p)
      .then((r) => r, (e) => ({ registered: false, status: 0, reason: e.message })), [user, opts.password || '']);
    if (!reg.registered) return `registration as ${user} failed: ${reg.status} ${reg.reason}`.trim();
    note(`registered as ${user}; waiting for a call`);
    await page.waitForFunction(() => window.mediarelay.state === 'incoming', null, { timeout: opts.ringTimeoutMs ?? 20000 })
      .catch(() => {});
    const s = await snapshot();
    if (s.state !== 'incoming') return `no incoming call (state ${s.state})`;
    const caller = await page.evaluate(() => window.mediarelay.incoming);
    note(`incoming call from ${caller && caller.uri}; answering`);
    const err = await page.evaluate(
      () => window.mediarelay.answer({ audioProcessing: false }).then(() => '', (e) => e.message));
    if (err) return `could not answer: ${err}`;
    return '';
  }

  async function call() {
    page = await context.newPage();
    page.on('console', (m) => note(`console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => note(`pageerror: ${e.message}`));
    page.on('requestfailed', (r) => note(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));

    note(`opening ${opts.pageUrl}`);
    await page.goto(opts.pageUrl, { waitUntil: 'load', timeout: 15000 });
    await page.waitForFunction(() => window.mediarelay && window.mediarelay.state === 'idle', null, { timeout: 10000 });

    if (opts.answer) {
      const err = await answerIncoming();
      if (err) return err;
    } else {
      const target = opts.target || (await page.inputValue('#target'));
      note(`calling ${target}`);
      // Echo cancellation and noise suppression would eat the steady test tones.
      const callErr = await page.evaluate(
        (t) => window.mediarelay.call(t, { audioProcessing: false }).then(() => '', (e) => e.message), target);
      if (callErr) {
        await snapshot();
        return `call could not start: ${callErr}`;
      }
      if (opts.cancel) return cancelWhileRinging();
    }

    await page.waitForFunction((states) => states.includes(window.mediarelay.state), FINAL_STATES, { timeout: 20000 })
      .catch(() => {});
    let s = await snapshot();
    if (s.state !== 'established') return `call not established: state ${s.state}, ${s.code} ${s.reason}`.trim();
    result.established = true;
    note('established');

    await page.waitForFunction(
      () => window.mediarelay.media === 'connected' || window.mediarelay.state !== 'established',
      null, { timeout: 10000 }).catch(() => {});
    s = await snapshot();
    if (!result.mediaConnected) return `media did not connect (connectionState ${s.media}, state ${s.state})`;
    note('media connected');

    const holdStart = Date.now();
    if (opts.dtmf) {
      await sleep(Math.min(1000, holdMs / 2));
      result.dtmfSent = await page.evaluate((d) => window.mediarelay.dtmf(d), opts.dtmf);
      note(`dtmf ${opts.dtmf}: ${result.dtmfSent ? 'sent' : 'not possible'}`);
    }
    await sleep(Math.max(0, holdMs - (Date.now() - holdStart)));

    // A page that can refresh its getStats() summary does so now, so the
    // packet counts cover the whole hold.
    await page.evaluate(() => window.mediarelay.refreshStats && window.mediarelay.refreshStats());
    const freqs = opts.freqs ?? [];
    const levels = await page.evaluate((f) => window.mediarelay.toneLevels(f), freqs);
    freqs.forEach((f, i) => { if (levels[i] !== null) result.toneDB[String(f)] = levels[i]; });
    note(`tone levels ${JSON.stringify(result.toneDB)}`);

    s = await snapshot();
    if (s.state !== 'established') {
      return `call dropped during hold: state ${s.state}, ended by ${s.endedBy || '?'}, ${s.code} ${s.reason}`;
    }
    await page.evaluate(() => window.mediarelay.hangup());
    s = await snapshot();
    result.hungUp = s.hangupAcked;
    note(`hung up: state ${s.state}, acknowledged ${s.hangupAcked}`);
    if (opts.answer) await page.evaluate(() => window.mediarelay.unregister()).catch(() => {});
    if (!s.hangupAcked) return 'hang-up (BYE) was not acknowledged';
    if (opts.dtmf && !result.dtmfSent) return 'DTMF could not be sent (telephone-event not negotiated?)';
    return '';
  }

  let timer;
  const timedOut = new Promise((resolve) => {
    timer = setTimeout(() => resolve(`timed out after ${timeoutMs} ms (state ${result.state || 'unknown'})`), timeoutMs);
  });
  try {
    result.error = await Promise.race([call(), timedOut]);
  } catch (err) {
    result.error = `${err.message || err}`.split('\n')[0];
    note(`exception: ${err.stack || err}`);
  }
  clearTimeout(timer);
  if (page) await Promise.race([page.close().catch(() => {}), sleep(3000)]);
  return result;
}

function print(result) {
  process.stdout.write(JSON.stringify(result) + '\n');
  if (result.error) console.error(`run.mjs: ${result.error}`);
}

let failed = false;
try {
  await launch(launchOpts);
  if (serve) {
    for await (const line of createInterface({ input: process.stdin })) {
      if (!line.trim()) continue;
      let opts;
      try {
        opts = JSON.parse(line);
      } catch (err) {
        print({ error: `bad request line: ${err.message}`, log: [] });
        continue;
      }
      const result = await runCall(opts);
      failed ||= !!result.error;
      print(result);
    }
  } else {
    const result = await runCall(launchOpts);
    failed = !!result.error;
    print(result);
  }
} catch (err) {
  failed = true;
  print({ error: `browser: ${`${err.message || err}`.split('\n')[0]}`, log: [`${err.stack || err}`] });
}
await cleanup();
process.exit(failed ? 1 : 0);
