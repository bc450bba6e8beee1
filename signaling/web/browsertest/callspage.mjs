// callspage.mjs — drives the operator's call view (/calls) in headless
// Chromium: waits for a call's row, reads it, presses its hang-up button
// and waits for the row to go.
//
//   node callspage.mjs '{"pageUrl":"http://127.0.0.1:8080/calls","callId":"…","token":"…"}'
//
// With "screenshot": PATH it saves the page, as listed, there.
//
// prints one JSON line {"cells":[…],"gone":true,"log":[…],"error":""} and
// exits 0, or 1 with "error" set.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const opts = JSON.parse(process.argv[2] || '{}');
const result = { cells: [], gone: false, log: [], error: '' };
const started = Date.now();
const note = (line) => result.log.push(`${((Date.now() - started) / 1000).toFixed(3)} ${line}`);
const profile = mkdtempSync(join(tmpdir(), 'mediarelay-chromium-'));
let context = null;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opts.chromium || '/usr/bin/chromium',
    headless: true,
    args: ['--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--no-sandbox', '--disable-gpu', '--no-first-run'],
    timeout: 60000,
  });
  const page = await context.newPage();
  page.on('console', (m) => note(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => note(`pageerror: ${e.message}`));
  note(`opening ${opts.pageUrl}`);
  await page.goto(opts.pageUrl, { waitUntil: 'load', timeout: 15000 });
  if (opts.token) {
    await page.fill('#token', opts.token);
    await page.dispatchEvent('#token', 'change');
  }
  const row = `#calls tr[data-id="${opts.callId}"]`;
  await page.waitForSelector(row, { timeout: 45000 });
  result.cells = await page.$$eval(`${row} td`, (tds) => tds.map((td) => td.textContent));
  note(`row: ${JSON.stringify(result.cells)}`);
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
  await page.click(`${row} button.hangup`);
  note('hang-up pressed');
  await page.waitForSelector(row, { state: 'detached', timeout: 15000 });
  result.gone = true;
  note('row gone');
} catch (err) {
  result.error = `${err.message || err}`.split('\n')[0];
}
if (context) await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
try {
  rmSync(profile, { recursive: true, force: true });
} catch {
  // the OS tmp reaper copes
}
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(result.error ? 1 : 0);
