// `flint serve` hosts the demo at `/` next to its API: the page, the npm package and the model it
// runs (with Range support, which the web loader needs). Started as a newcomer would start it:
// from another directory, with a model outside the repository under another name. The page finds
// that model (/served-model.json), names it, and its first click on Load loads it (headless
// Chromium, WebGPU on SwiftShader, as tests/web/browser.mjs).
//   node tests/web/serve.mjs     (after cargo build --release and scripts/build-web.sh)
import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MODEL_PATH, ROOT, check, done, importTool } from './common.mjs';

const port = await new Promise((ok) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const p = s.address().port;
    s.close(() => ok(p));
  });
});
const base = `http://127.0.0.1:${port}`;
const elsewhere = mkdtempSync(join(tmpdir(), 'flint-serve-'));
const model = join(elsewhere, 'my-model.gguf');
copyFileSync(ROOT + MODEL_PATH.slice(1), model);
const proc = spawn(`${ROOT}target/release/flint`, ['serve', '-m', model, '--port', String(port), '--ctx', '256'],
  { cwd: elsewhere, stdio: ['ignore', 'inherit', 'inherit'] });
let exited = null;
proc.on('exit', (code) => { exited = code; });
let browser = null;

try {
  const t0 = Date.now();
  for (;;) {
    if (exited !== null) throw new Error(`flint serve exited with ${exited}`);
    if (Date.now() - t0 > 300000) throw new Error('flint serve did not start in 300 s');
    try {
      if ((await fetch(`${base}/health`)).ok) break;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  const page = await fetch(`${base}/`);
  const html = await page.text();
  check(page.ok && html.includes('flint chat') && html.includes('/www/app.js'), 'GET / is the demo page');
  const js = await fetch(`${base}/pkg/index.js`);
  check(js.ok && /javascript/.test(js.headers.get('content-type')) && (await js.text()).includes('createEngine'),
    'GET /pkg/index.js is the package, as JavaScript');
  const app = await fetch(`${base}/www/app.js`);
  check(app.ok && (await app.text()).includes("from '/pkg/index.js'"), 'GET /www/app.js');
  const info = await (await fetch(`${base}/served-model.json`)).json();
  const bytes = statSync(model).size;
  check(info.name === 'my-model.gguf' && info.id === 'my-model' && info.bytes === bytes &&
    info.url.startsWith('/model.gguf?v='), '/served-model.json names the model the server runs', JSON.stringify(info));
  const r = await fetch(base + info.url, { headers: { Range: 'bytes=0-3' } });
  const magic = new TextDecoder().decode(await r.arrayBuffer());
  check(r.status === 206 && magic === 'GGUF' && r.headers.get('content-range') === `bytes 0-3/${bytes}`,
    'the served model is at its URL with HTTP ranges', `${r.status} ${r.headers.get('content-range')} ${magic}`);

  // The page as a visitor gets it: it offers the served model by name; the first Load works.
  const playwright = await importTool('playwright-core');
  const { chromium } = playwright.chromium ? playwright : playwright.default;
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu-sandbox', '--disable-quic', '--no-first-run', '--enable-unsafe-webgpu'],
  });
  const tab = await browser.newPage();
  tab.on('console', (m) => { if (m.type() === 'error') console.log(`  [page] ${m.text()}`); });
  tab.on('pageerror', (e) => console.log(`  [page error] ${e.message}`));
  await tab.goto(`${base}/`);
  await tab.waitForSelector('#served:not([hidden])', { timeout: 30000 });
  const offered = await tab.inputValue('#model');
  const named = await tab.textContent('#served');
  check(offered === info.url && named.includes('my-model.gguf'), 'the page defaults to the served model and names it',
    `${offered} / ${named}`);
  const tLoad = Date.now();
  await tab.click('#load');
  await tab.waitForSelector('#chat[data-state="ready"], .msg.error', { timeout: 300000 });
  const loaded = await tab.evaluate(() =>
    `${document.querySelector('#progress-text').innerText} ${document.querySelector('#chat').innerText}`);
  check(/Loaded model\.gguf in/.test(loaded) && !/Could not/.test(loaded), 'the first click on Load loads it',
    `${loaded.slice(0, 200)} (${((Date.now() - tLoad) / 1000).toFixed(1)} s)`);
  const models = await fetch(`${base}/v1/models`);
  check(models.ok, 'the API still answers next to the static files');
  const missing = await fetch(`${base}/v1/nothing`);
  check(missing.status === 404, 'unknown API paths are still 404');
} catch (e) {
  check(false, 'unexpected error', e?.stack ?? String(e));
} finally {
  await browser?.close();
  proc.kill('SIGTERM');
  rmSync(elsewhere, { recursive: true, force: true });
}
done({});
