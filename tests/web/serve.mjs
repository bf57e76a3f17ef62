// `flint serve` hosts the demo at `/` next to its API: the page, the npm package and the model
// (with Range support, which the web loader needs).
//   node tests/web/serve.mjs     (after cargo build --release and scripts/build-web.sh)
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { MODEL_PATH, ROOT, check, done } from './common.mjs';

const port = await new Promise((ok) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const p = s.address().port;
    s.close(() => ok(p));
  });
});
const base = `http://127.0.0.1:${port}`;
const proc = spawn(`${ROOT}target/release/flint`, ['serve', '--port', String(port), '--ctx', '256'],
  { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
let exited = null;
proc.on('exit', (code) => { exited = code; });

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
  const r = await fetch(base + MODEL_PATH, { headers: { Range: 'bytes=0-3' } });
  const magic = new TextDecoder().decode(await r.arrayBuffer());
  check(r.status === 206 && magic === 'GGUF' && /\/\d+$/.test(r.headers.get('content-range')),
    'the model is served with HTTP ranges', `${r.status} ${r.headers.get('content-range')} ${magic}`);
  const models = await fetch(`${base}/v1/models`);
  check(models.ok, 'the API still answers next to the static files');
  const missing = await fetch(`${base}/v1/nothing`);
  check(missing.status === 404, 'unknown API paths are still 404');
} catch (e) {
  check(false, 'unexpected error', e?.stack ?? String(e));
} finally {
  proc.kill('SIGTERM');
}
done({});
