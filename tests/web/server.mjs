// A static HTTP server for the web tests and the demo: serves the repository root on 127.0.0.1
// with Range support (what the loader needs) and counts the requests and bytes served per path,
// so tests can check that a cached second load downloads nothing. servePython() starts Python's
// static server instead, which ignores Range.
//   node tests/web/server.mjs [port]        (serves until killed; prints the URL)
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.txt': 'text/plain; charset=utf-8',
};

/** Starts the server; resolves to { url, counts: Map(path -> {requests, bytes}), close() }. */
export function serve(port = 0, root = ROOT) {
  const counts = new Map();
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const file = normalize(join(root, path.endsWith('/') ? path + 'index.html' : path));
    const c = counts.get(path) ?? { requests: 0, bytes: 0 };
    counts.set(path, c);
    c.requests++;
    if (!file.startsWith(root)) return void res.writeHead(403).end();
    let st;
    try {
      st = await stat(file);
      if (!st.isFile()) throw new Error('not a file');
    } catch {
      return void res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    }
    const headers = {
      'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
      'accept-ranges': 'bytes',
      'cache-control': 'no-store',
    };
    let start = 0;
    let end = st.size - 1;
    let status = 200;
    const m = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
    if (m) {
      start = m[1] ? Number(m[1]) : st.size - Number(m[2]);
      end = m[1] && m[2] ? Math.min(Number(m[2]), st.size - 1) : st.size - 1;
      if (start > end || start >= st.size) {
        return void res.writeHead(416, { 'content-range': `bytes */${st.size}` }).end();
      }
      status = 206;
      headers['content-range'] = `bytes ${start}-${end}/${st.size}`;
    }
    headers['content-length'] = end - start + 1;
    res.writeHead(status, headers);
    if (req.method === 'HEAD') return void res.end();
    c.bytes += end - start + 1;
    createReadStream(file, { start, end }).pipe(res);
  });
  return new Promise((ok) => server.listen(port, '127.0.0.1', () => ok({
    url: `http://127.0.0.1:${server.address().port}`,
    counts,
    close: () => new Promise((done) => { server.closeAllConnections?.(); server.close(done); }),
  })));
}

/**
 * Python's static server, `python3 -m http.server`, on 127.0.0.1 (a free port) serving `root`: the
 * most common way to serve a folder, and one that ignores HTTP Range requests (it answers 200 with
 * the whole file). Resolves to { url, counts: Map(path -> {requests}), sync(), close() }: requests
 * per path, counted from its log (it logs no sizes); await sync() before reading counts (it makes a
 * request of its own and waits for its log line, written after those of the requests before it).
 */
export function servePython(root = ROOT) {
  const py = spawn('python3', ['-u', '-m', 'http.server', '--bind', '127.0.0.1', '0', '--directory', root],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  const counts = new Map();
  let err = '';
  let partial = ''; // a log line not yet ended
  py.stderr.setEncoding('utf8');
  py.stderr.on('data', (d) => {
    err = (err + d).slice(-4000);
    const lines = (partial + d).split('\n');
    partial = lines.pop();
    for (const m of lines.join('\n').matchAll(/"[A-Z]+ (\S+) HTTP\/[\d.]+" \d+/g)) {
      const path = decodeURIComponent(new URL(m[1], 'http://x').pathname);
      const c = counts.get(path) ?? { requests: 0 };
      counts.set(path, c);
      c.requests++;
    }
  });
  let marks = 0;
  const sync = async (url) => {
    const path = `/.flint-sync-${++marks}`;
    const r = await fetch(url + path);
    await r.arrayBuffer();
    for (let k = 0; k < 200 && !counts.has(path); k++) await new Promise((ok) => setTimeout(ok, 10));
    if (!counts.has(path)) throw new Error(`python3 -m http.server: no log line for ${path}`);
  };
  const close = () => new Promise((done) => {
    if (py.exitCode !== null || py.signalCode !== null) return done();
    py.once('exit', () => done());
    py.kill();
  });
  return new Promise((ok, fail) => {
    let out = '';
    py.stdout.setEncoding('utf8');
    py.stdout.on('data', (d) => {
      out += d;
      const m = /port (\d+)/.exec(out);
      if (m) {
        py.stdout.removeAllListeners('data');
        py.stdout.resume();
        const url = `http://127.0.0.1:${m[1]}`;
        ok({ url, counts, sync: () => sync(url), close });
      }
    });
    py.once('error', fail);
    py.once('exit', (code) => fail(new Error(`python3 -m http.server exited (${code}): ${err || out}`)));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const s = await serve(Number(process.argv[2] ?? 8000));
  console.log(`serving ${ROOT} at ${s.url}/ (demo: ${s.url}/www/)`);
}
