// The npm package in headless Chromium (Debian chromium, WebGPU on SwiftShader), driven by
// playwright-core: loads SmolLM2 from a local HTTP server in a Web Worker, checks greedy tokens
// against the native engine's (tests/fixtures/web/greedy.json), that the page stays responsive,
// the peak wasm memory, the device choices in info and a bad device option rejected through the
// worker, an embedding model (the tiny BERT fixture) through the worker and on the page's thread
// against `flint embed --json` (target/release/flint, run here), then relaunches the browser on
// the same profile and checks that a second
// load (on the page's thread this time) downloads no weight bytes. Then the same from a page and
// model served by `python3 -m http.server`, which ignores Range: one whole-file response streamed
// into the cache's chunks, a second load from the cache with no request. Then drives the demo (www/:
// a streamed answer, Stop, the Benchmark button)
// and saves a screenshot to target/web-test/demo.png.
//   node tests/web/browser.mjs     (after scripts/build-web.sh)
import { createHash } from 'node:crypto';
import { mkdirSync, openSync, readSync, rmSync, statSync } from 'node:fs';
import { serve, servePython } from './server.mjs';
import {
  EMBED_PATH, EMBED_TEXTS, FIXTURE, MODEL_PATH, OUT, ROOT, SYSTEM, check, done, importTool, maxDiff, nativeEmbeddings,
  sameIds,
} from './common.mjs';

const playwright = await importTool('playwright-core');
const { chromium } = playwright.chromium ? playwright : playwright.default;
const ARGS = ['--no-sandbox', '--disable-gpu-sandbox', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--enable-unsafe-webgpu'];
const fileBytes = statSync(ROOT + MODEL_PATH.slice(1)).size;
const profile = `${OUT}/chromium-profile`;
rmSync(profile, { recursive: true, force: true });
mkdirSync(profile, { recursive: true });

const server = await serve();
// Python's static server, for a page and model on a server without Range support. The page comes
// from it too: same origin, so no CORS (it sends no CORS headers), and a secure context
// (127.0.0.1) with a Cache API of its own, empty at first.
const python = await servePython();
const summary = { runtime: 'chromium (WebGPU on SwiftShader)', fileBytes };

async function launch() {
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true, args: ARGS,
  });
  const page = ctx.pages()[0] ?? await ctx.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.log(`  [page] ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`  [page error] ${e.message}`));
  page.setDefaultTimeout(0);
  return { ctx, page };
}

/** Loads the model in the page, generates greedily, returns timings, ids, info. */
function loadAndGenerate(page, opts, nGreedy, nChat) {
  return page.evaluate(async ({ modelPath, fixture, opts, nGreedy, nChat, SYSTEM }) => {
    const { createEngine } = await import('/pkg/index.js');
    // The page's own thread: record the longest gap between timer ticks while the engine works.
    let lastTick = performance.now();
    let maxGap = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - lastTick);
      lastTick = now;
    }, 20);
    const progress = [];
    const t0 = performance.now();
    const engine = await createEngine({ model: modelPath, ctx: 512, onProgress: (p) => progress.push(p), ...opts });
    const loadMs = performance.now() - t0;
    const r = await engine.completions.create({ prompt: fixture.prompt, max_tokens: nGreedy, temperature: 0 });
    let streamed = '';
    let timings = null;
    let nChunks = 0;
    if (nChat) {
      const stream = await engine.chat.completions.create({
        messages: [SYSTEM, { role: 'user', content: 'Name three colors.' }], stream: true, max_tokens: nChat, temperature: 0,
      });
      for await (const c of stream) {
        nChunks++;
        streamed += c.choices[0]?.delta?.content ?? '';
        timings = c.timings ?? timings;
      }
    }
    clearInterval(timer);
    const info = await engine.info();
    await engine.unload();
    return { loadMs, ids: r.choices[0].token_ids, text: r.choices[0].text, streamed, nChunks, timings, info,
      lastProgress: progress.at(-1), nProgress: progress.length, maxGapMs: maxGap };
  }, { modelPath: MODEL_PATH, fixture: FIXTURE, opts, nGreedy, nChat, SYSTEM });
}

try {
  // 1. First load, in a Web Worker (the default), over the network.
  let { ctx, page } = await launch();
  await page.goto(`${server.url}/tests/web/harness.html`);
  const a = await loadAndGenerate(page, {}, FIXTURE.max_tokens, 8);
  summary.adapter = `${a.info.adapter} (${a.info.backend})`;
  summary.caps = a.info.caps;
  summary.kernels = a.info.kernels;
  summary.loadMs = Math.round(a.loadMs);
  summary.decodeTokS = +a.timings.predicted_per_second.toFixed(2);
  summary.prefillTokS = +a.timings.prompt_per_second.toFixed(2);
  summary.wasmMemoryBytes = a.info.wasmMemoryBytes;
  check(a.info.worker === true, 'the engine runs in a Web Worker by default');
  check(sameIds(a.ids, FIXTURE.ids), 'greedy ids equal the native engine\'s', JSON.stringify(a.ids));
  check(a.text === FIXTURE.text, 'greedy text equals the native engine\'s', JSON.stringify(a.text));
  check(a.streamed.length > 0 && a.nChunks > 3, 'streamed chat', JSON.stringify(a.streamed));
  check(a.info.caps.shaderF16 === false, 'runs without shader-f16 (SwiftShader has none)');
  check(a.info.kernels.length > 0, 'info lists the kernels in use', a.info.kernels.join(', '));
  check(a.lastProgress.loaded === fileBytes && a.nProgress > 10, 'progress in bytes up to the file size');
  check(a.info.networkBytes === fileBytes, 'first load downloads the file once', `${a.info.networkBytes} bytes`);
  check(a.info.wasmMemoryBytes < fileBytes / 2, 'peak wasm memory is far below the model size',
    `${(a.info.wasmMemoryBytes / 2 ** 20).toFixed(1)} MiB vs ${(fileBytes / 2 ** 20).toFixed(1)} MiB`);
  check(a.maxGapMs < 1000, 'the page stays responsive while the worker loads and generates', `longest gap ${a.maxGapMs.toFixed(0)} ms`);
  const { kernelLayout, kvCache, sampleOn } = a.info.caps;
  check(['gpu', 'cpu'].includes(kernelLayout) && kvCache === 'f32' && ['gpu', 'cpu'].includes(sampleOn),
    'the worker reports the kernel layout, KV cache and sampling place', `${kernelLayout}, ${kvCache}, ${sampleOn}`);
  const served1 = server.counts.get(MODEL_PATH);
  // A bad device option is rejected inside the worker; the message comes back naming it.
  const badOption = await page.evaluate(async (modelPath) => {
    const { createEngine } = await import('/pkg/index.js');
    try {
      await createEngine({ model: modelPath, sampleOn: 'npu' });
      return 'loaded';
    } catch (e) {
      return e.message;
    }
  }, MODEL_PATH);
  check(/sampleOn must be "auto", "gpu" or "cpu", not "npu"/.test(badOption),
    'an unknown sampleOn value is rejected in the worker, naming the option', badOption);

  // An embedding model, through the worker and on the page's thread: the same vectors as the
  // native engine's, base64 and dimensions, a bad input and a chat call rejected with messages.
  const native = nativeEmbeddings(EMBED_TEXTS);
  const emb = await page.evaluate(async ({ path, texts }) => {
    const { createEngine } = await import('/pkg/index.js');
    const message = async (p) => p.then(() => 'no error', (e) => e.message);
    const out = {};
    for (const worker of [true, false]) {
      const t0 = performance.now();
      const engine = await createEngine({ model: path, worker });
      const r = { loadMs: performance.now() - t0 };
      r.info = await engine.info();
      const t1 = performance.now();
      r.float = await engine.embeddings.create({ input: texts });
      r.embedMs = performance.now() - t1;
      const b64 = await engine.embeddings.create({ input: texts, encoding_format: 'base64' });
      r.base64 = b64.data.map((d) => Array.from(new Float32Array(Uint8Array.from(atob(d.embedding), (c) => c.charCodeAt(0)).buffer)));
      r.cut = await engine.embeddings.create({ input: texts.slice(0, 2), dimensions: 8 });
      r.badInput = await message(engine.embeddings.create({ input: ['a', 7] }));
      r.chat = await message(engine.chat.completions.create({ messages: [{ role: 'user', content: 'hi' }] }));
      await engine.unload();
      out[worker ? 'worker' : 'thread'] = r;
    }
    return out;
  }, { path: EMBED_PATH, texts: EMBED_TEXTS });
  summary.embed = {};
  for (const [where, r] of Object.entries(emb)) {
    const diff = Math.max(...r.float.data.map((d, i) => maxDiff(d.embedding, native.data[i].embedding)));
    summary.embed[where] = { loadMs: Math.round(r.loadMs), embedMs: Math.round(r.embedMs), maxDiffVsCli: diff };
    check(r.info.worker === (where === 'worker') && r.info.model.kind === 'embedding' && r.info.model.embedding?.dimensions === 32,
      `${where}: info reports an embedding model of 32 dimensions`, JSON.stringify(r.info.model.embedding));
    check(r.float.object === 'list' && r.float.model === 'tiny-bert-f32' && r.float.data.length === EMBED_TEXTS.length &&
      r.float.data.every((d, i) => d.object === 'embedding' && d.index === i) &&
      r.float.usage.prompt_tokens === native.usage.prompt_tokens, `${where}: OpenAI's embeddings list, usage as flint embed's`,
    JSON.stringify(r.float.usage));
    check(diff < 1e-5, `${where}: ${EMBED_TEXTS.length} vectors equal flint embed --json's`, `max |diff| ${diff.toExponential(2)}`);
    check(r.base64.every((v, i) => maxDiff(v, r.float.data[i].embedding) === 0), `${where}: base64 decodes to the float vectors`);
    const unit = (v) => { const n = Math.hypot(...v); return v.map((x) => x / n); };
    check(r.cut.data.every((d, i) => maxDiff(d.embedding, unit(native.data[i].embedding.slice(0, 8))) < 1e-5),
      `${where}: dimensions: 8 keeps the first 8 components, normalized`);
    check(/input\[1\] is a number but input\[0\] is a string/.test(r.badInput), `${where}: mixed input types are refused`, r.badInput);
    check(/is an embedding model.*embeddings\.create/.test(r.chat), `${where}: chat on an embedding model rejects`, r.chat);
  }
  await ctx.close();

  // 2. Same profile, new browser: the second load reads the cache, on the page's thread.
  server.counts.delete(MODEL_PATH);
  ({ ctx, page } = await launch());
  await page.goto(`${server.url}/tests/web/harness.html`);
  const b = await loadAndGenerate(page, { worker: false }, 4, 0);
  const served2 = server.counts.get(MODEL_PATH) ?? { requests: 0, bytes: 0 };
  summary.cachedLoadMs = Math.round(b.loadMs);
  summary.modelRequests = { first: served1?.requests, second: served2.requests };
  check(served2.requests === 0 && served2.bytes === 0, 'second load makes no request for the model',
    `first: ${served1?.requests} requests / ${served1?.bytes} bytes; second: ${served2.requests} / ${served2.bytes}`);
  check(b.info.cacheBytes === fileBytes && b.info.networkBytes === 0, 'second load reads every byte from the cache');
  check(b.info.worker === false && sameIds(b.ids, FIXTURE.ids.slice(0, 4)), 'in-thread mode gives the same tokens');

  // 2b. A server that ignores Range (python3 -m http.server, serving the page and the model): the
  //     first load streams its one 200 response through the loader and stores it in the cache's
  //     8 MiB chunks; a second load reads them all with no request. The tokens are checked on the
  //     second load only (its bytes are the chunks the first load read from; node.mjs checks the
  //     tokens of a streamed load itself): a prefill on SwiftShader is seconds of CI.
  const t2b = performance.now();
  await page.goto(`${python.url}/tests/web/harness.html`);
  const streamed = await page.evaluate(async ({ modelPath }) => {
    const { createEngine } = await import('/pkg/index.js');
    const { CACHE_NAME } = await import('/pkg/source.js');
    const t0 = performance.now();
    const engine = await createEngine({ model: modelPath, ctx: 64 });
    const loadMs = performance.now() - t0;
    const info = await engine.info();
    await engine.unload();
    // SHA-256 of every chunk the cache holds for the model, by its key.
    const store = await caches.open(CACHE_NAME);
    const chunks = {};
    for (const req of await store.keys()) {
      const what = new URL(req.url).searchParams.get('flint-cache');
      if (!new URL(req.url).pathname.endsWith(modelPath) || what === 'size') continue;
      const bytes = await (await store.match(req)).arrayBuffer();
      chunks[what] = Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)),
        (x) => x.toString(16).padStart(2, '0')).join('');
    }
    return { loadMs, info, chunks };
  }, { modelPath: MODEL_PATH });
  await python.sync();
  const pyFirst = python.counts.get(MODEL_PATH)?.requests ?? 0;
  const CHUNK = 8 << 20;
  const fd = openSync(ROOT + MODEL_PATH.slice(1), 'r');
  const want = {};
  for (let i = 0; i * CHUNK < fileBytes; i++) {
    const buf = Buffer.alloc(Math.min(CHUNK, fileBytes - i * CHUNK));
    readSync(fd, buf, 0, buf.length, i * CHUNK);
    want[`${fileBytes}:${i}`] = createHash('sha256').update(buf).digest('hex');
  }
  summary.noRange = { loadMs: Math.round(streamed.loadMs), requests: pyFirst, wasmMemoryBytes: streamed.info.wasmMemoryBytes };
  check(streamed.info.worker === true && streamed.info.requests === 1 && pyFirst === 1 &&
    streamed.info.networkBytes === fileBytes && streamed.info.cacheBytes === 0,
  'a server that ignores Range (python3 -m http.server): the model loads in the worker from one whole-file response',
  `${streamed.info.requests} request(s), the server logged ${pyFirst}; ${streamed.info.networkBytes} of ${fileBytes} bytes`);
  check(streamed.info.wasmMemoryBytes < fileBytes / 2, 'streamed load: peak wasm memory is far below the model size',
    `${(streamed.info.wasmMemoryBytes / 2 ** 20).toFixed(1)} MiB vs ${(fileBytes / 2 ** 20).toFixed(1)} MiB`);
  check(JSON.stringify(streamed.chunks, Object.keys(want)) === JSON.stringify(want) &&
    Object.keys(streamed.chunks).length === Object.keys(want).length,
  "the streamed response is cached in the ranged path's layout: every 8 MiB chunk, equal to the file's",
  `${Object.keys(streamed.chunks).length} of ${Object.keys(want).length} chunks`);
  const c = await loadAndGenerate(page, { worker: false, ctx: 64 }, 2, 0);
  await python.sync();
  const pySecond = (python.counts.get(MODEL_PATH)?.requests ?? 0) - pyFirst;
  summary.noRange.cachedLoadMs = Math.round(c.loadMs);
  summary.noRange.sectionMs = Math.round(performance.now() - t2b);
  check(pySecond === 0 && c.info.requests === 0 && c.info.networkBytes === 0 && c.info.cacheBytes === fileBytes,
    'second load from the server without Range: every byte from the cache, no request', `the server logged ${pySecond}`);
  check(sameIds(c.ids, FIXTURE.ids.slice(0, 2)), 'the cached chunks of the streamed load give the greedy tokens',
    JSON.stringify(c.ids));

  // 3. The demo page: type a message, get streamed text, run the (small) benchmark, take a screenshot.
  await page.goto(`${server.url}/www/?pp=8&tg=2&reps=1`);
  await page.click('#load');
  await page.waitForSelector('#chat[data-state="ready"]', { timeout: 300000 });
  await page.fill('#input', 'What is the capital of France?');
  await page.click('#send');
  await page.waitForFunction(() => document.querySelector('.msg.assistant:last-child .text')?.textContent.length > 0,
    null, { timeout: 300000 });
  // Let a few more tokens stream, then press Stop (answers run to 512 tokens otherwise).
  const partial = await page.textContent('.msg.assistant:last-child .text');
  await page.waitForFunction((n) => document.querySelector('.msg.assistant:last-child .text').textContent.length > n,
    partial.length, { timeout: 300000 });
  await page.click('#stop');
  await page.waitForSelector('#chat[data-state="ready"]', { timeout: 300000 });
  const answer = await page.textContent('.msg.assistant:last-child .text');
  const stopped = await page.textContent('.msg.assistant:last-child');
  const stats = await page.textContent('#stats');
  mkdirSync(OUT, { recursive: true });
  check(answer.length > 0 && /tok\/s/.test(stats), 'demo streams an answer and shows tokens/s',
    `${JSON.stringify(answer.slice(0, 80))} | ${stats}`);
  check(partial.length < answer.length, 'demo text grew while streaming', `${partial.length} -> ${answer.length} chars`);
  check(/stopped$/.test(stopped), 'the stop button stops the answer');
  // The Benchmark button: engine.bench() through the worker, progress in the footer, a note.
  await page.click('#bench');
  await page.waitForSelector('#chat[data-state="ready"]', { timeout: 300000 });
  const benchNote = await page.textContent('.msg.bench:last-child');
  check(/pp8 [\d.]+ tok\/s · tg2 [\d.]+ tok\/s \(median of 1\); decode streams the weights at [\d.]+ GB\/s/.test(benchNote),
    'the demo\'s Benchmark button reports pp8 / tg2 tokens/s and the roofline', benchNote);

  // The demo's clock tool (OpenAI tool calling in the browser): the model must call get_time
  // (?tool_choice=required), the page runs it and shows the result, then the model answers.
  await page.goto(`${server.url}/www/?tool_choice=required&max_tokens=64&temperature=0`);
  await page.click('#load');
  await page.waitForSelector('#chat[data-state="ready"]', { timeout: 300000 });
  await page.check('#tools');
  await page.fill('#input', 'What time is it?');
  await page.click('#send');
  await page.waitForSelector('.msg.tool[data-tool="get_time"]', { timeout: 600000 });
  // The answer after the result has begun (its message is on the page): stop it there, the
  // 0.9 tok/s of SwiftShader make a whole answer a CI-minute.
  await page.waitForFunction(() => document.querySelector('.msg.tool')?.nextElementSibling != null, null, { timeout: 60000 });
  await page.click('#stop');
  await page.waitForSelector('#chat[data-state="ready"]', { timeout: 600000 });
  const toolNote = await page.textContent('.msg.tool');
  const after = await page.evaluate(() => {
    const tool = document.querySelector('.msg.tool');
    const next = tool?.nextElementSibling;
    return next ? { cls: next.className, text: next.textContent } : null;
  });
  check(/^get_time\(\{.*\}\) → \{"time":"[^"]+/.test(toolNote),
    'the demo runs the get_time call the model made and shows its result', toolNote);
  check(after?.cls === 'msg assistant', 'the model answers after the tool result', JSON.stringify(after));
  await page.screenshot({ path: `${OUT}/demo.png`, fullPage: true });
  summary.screenshot = `${OUT}/demo.png`;
  await ctx.close();
} catch (e) {
  check(false, 'unexpected error', e?.stack ?? String(e));
} finally {
  await server.close();
  await python.close();
}
done(summary);
