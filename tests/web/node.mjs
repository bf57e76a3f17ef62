// The npm package in Node 20 with the `webgpu` package (Dawn; on machines without a GPU, point it at
// Chromium's SwiftShader: VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json). Loads
// SmolLM2 from a local HTTP server through the range loader, checks greedy tokens against the
// native engine's (tests/fixtures/web/greedy.json), streaming, abort, errors, unload, and the
// device options (kernels, kvCache, sampleOn). Then an embedding model (the tiny BERT fixture):
// embeddings.create against `flint embed --json` (target/release/flint, run here), its options,
// and the errors of bad inputs and of chat calls on it. Then source.js alone against Python's
// http.server, which ignores Range: the whole-file answer read as one stream, its bytes, its
// memory, its cache layout, and a read backwards.
//   node tests/web/node.mjs     (after scripts/build-web.sh)
import { createServer } from 'node:http';
import { cpSync, mkdirSync, openSync, readSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { serve, servePython } from './server.mjs';
import {
  EMBED_CASES, EMBED_PATH, EMBED_TEXTS, FIXTURE, MODEL_PATH, OUT, ROOT, SYSTEM, check, done, maxDiff, nativeEmbeddings,
  sameIds,
} from './common.mjs';

// Install the package the way a user does: pkg/ as node_modules/flint-llm next to `webgpu`.
const app = `${OUT}/node-app`;
rmSync(app, { recursive: true, force: true });
mkdirSync(`${app}/node_modules`, { recursive: true });
cpSync(`${ROOT}pkg`, `${app}/node_modules/flint-llm`, { recursive: true });
const tools = createRequire(`${ROOT}target/web-tools/node/package.json`);
symlinkSync(dirname(tools.resolve('webgpu/package.json')), `${app}/node_modules/webgpu`);
const appRequire = createRequire(`${app}/index.js`);
const { createEngine } = await import(pathToFileURL(appRequire.resolve('flint-llm')).href);
const { openSource } = await import(pathToFileURL(`${app}/node_modules/flint-llm/source.js`).href);

const server = await serve();
// `python3 -m http.server`: no Range support, so a model loads from it as one streamed response.
const python = await servePython();
const modelUrl = server.url + MODEL_PATH;
const fileBytes = statSync(ROOT + MODEL_PATH.slice(1)).size;
const summary = { runtime: `node ${process.version}` };

try {
  // 1. Load through HTTP ranges with a 128 MiB binding limit; progress in bytes.
  const progress = [];
  const t0 = performance.now();
  const engine = await createEngine({
    model: modelUrl,
    maxStorageBufferBindingSize: 128 << 20,
    ctx: 512,
    onProgress: (p) => progress.push(p),
  });
  summary.loadMs = Math.round(performance.now() - t0);
  const last = progress.at(-1);
  check(progress.length > 10 && last.loaded === last.total && last.total === fileBytes,
    'progress reported in bytes up to the file size', `${progress.length} reports, last ${JSON.stringify(last)}`);
  check(progress.every((p, i) => i === 0 || p.loaded >= progress[i - 1].loaded), 'progress never goes back');

  // 2. Greedy tokens equal the native engine's.
  const r = await engine.completions.create({ prompt: FIXTURE.prompt, max_tokens: FIXTURE.max_tokens, temperature: 0 });
  const ids = r.choices[0].token_ids;
  check(sameIds(ids, FIXTURE.ids), 'greedy ids equal the native engine\'s', JSON.stringify(ids));
  check(r.choices[0].text === FIXTURE.text, 'greedy text equals the native engine\'s', JSON.stringify(r.choices[0].text));
  check(r.object === 'text_completion' && r.usage.completion_tokens === ids.length, 'OpenAI completion shape');

  // 3. Info: adapter, kernels, no f16 on SwiftShader, binding limit, memory.
  const info = await engine.info();
  summary.adapter = `${info.adapter} (${info.backend})`;
  summary.kernels = info.kernels;
  summary.wasmMemoryBytes = info.wasmMemoryBytes;
  summary.fileBytes = fileBytes;
  check(info.kernels.length > 0 && info.kernels.some((k) => k.includes('q4_1')), 'info lists the kernels in use');
  check(info.caps.maxStorageBufferBindingSize === 128 << 20, 'binding limit lowered to 128 MiB');
  check(info.wasmMemoryBytes < fileBytes / 2, 'peak wasm memory is far below the model size',
    `${(info.wasmMemoryBytes / 2 ** 20).toFixed(1)} MiB vs ${(fileBytes / 2 ** 20).toFixed(1)} MiB`);

  // 4. Streamed chat; decode speed.
  const stream = await engine.chat.completions.create({
    messages: [SYSTEM, { role: 'user', content: 'Name three colors.' }],
    stream: true, max_tokens: 8, temperature: 0, stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  const fin = chunks.find((c) => c.choices[0]?.finish_reason);
  check(chunks.length > 3 && text.length > 0 && chunks[0].object === 'chat.completion.chunk', 'streamed chat chunks', JSON.stringify(text));
  check(!!fin && chunks.at(-1).usage?.completion_tokens > 0, 'final chunk with finish_reason, then usage');
  summary.decodeTokS = +fin.timings.predicted_per_second.toFixed(2);
  summary.prefillTokS = +fin.timings.prompt_per_second.toFixed(2);

  // 5. Abort mid-stream: the iterator throws AbortError, the engine stays usable.
  const ac = new AbortController();
  const s2 = await engine.chat.completions.create({ messages: [SYSTEM, { role: 'user', content: 'Write a long story about a dragon and a knight.' }], stream: true, max_tokens: 50, temperature: 0 }, { signal: ac.signal });
  let n = 0;
  let aborted = null;
  try {
    for await (const c of s2) if (c.choices[0]?.delta?.content && ++n === 3) ac.abort();
  } catch (e) {
    aborted = e;
  }
  check(aborted?.name === 'AbortError' && n === 3, 'AbortSignal stops a stream with AbortError', `${aborted} after ${n} content chunks`);
  const again = await engine.completions.create({ prompt: FIXTURE.prompt, max_tokens: 2, temperature: 0 });
  check(sameIds(again.choices[0].token_ids, FIXTURE.ids.slice(0, 2)), 'engine works after an abort',
    JSON.stringify(again.choices[0].token_ids));

  // 6. Bad requests are clear errors.
  const bad = async (body, re, what) => {
    try {
      await engine.chat.completions.create(body);
      check(false, what, 'no error');
    } catch (e) {
      check(e instanceof Error && re.test(e.message), what, e.message);
    }
  };
  await bad({ messages: [] }, /messages/, 'empty messages rejected');
  await bad({ messages: [{ role: 'user', content: 'hi' }], temperature: 5 }, /temperature/, 'bad temperature rejected');
  await bad({ messages: [{ role: 'user', content: 'hi' }], response_format: { type: 'xml' } }, /response_format\.type/, 'an unknown response_format type is rejected, naming the field');
  await bad({ messages: [{ role: 'user', content: 'hi' }], tools: [{ type: 'function', function: { parameters: {} } }] },
    /tools\[0\]\.function\.name/, 'a tool without a name is rejected, naming the field');
  await bad({ messages: [{ role: 'user', content: 'hi' }], speculative: 'fast' }, /speculative/, 'a bad `speculative` is rejected, naming the field');
  // Speculative decoding (on by default): copying a sentence, the same greedy text as without.
  const copy = { messages: [{ role: 'user', content: 'Repeat this sentence exactly: The lighthouse keeper climbed the spiral stairs every evening at dusk.' }],
    max_tokens: 12, temperature: 0 };
  const specOn = await engine.chat.completions.create(copy);
  const specOff = await engine.chat.completions.create({ ...copy, speculative: false });
  check(specOn.choices[0].message.content === specOff.choices[0].message.content && /spiral stairs/.test(specOff.choices[0].message.content),
    'speculative decoding gives the text decoding without it gives', JSON.stringify([specOn.choices[0].message.content, specOff.choices[0].message.content]));
  check(specOn.timings.draft_n_accepted > 0 && specOn.timings.draft_n_accepted <= specOn.timings.draft_n && specOff.timings.draft_n === 0,
    'timings count drafted and accepted tokens', JSON.stringify([specOn.timings, specOff.timings]));
  // response_format and tool calls go through the library's grammar engine in wasm too.
  const rf = await engine.chat.completions.create({
    messages: [{ role: 'user', content: 'Give a JSON object.' }], max_tokens: 3, temperature: 0,
    response_format: { type: 'json_object' },
  });
  check(rf.choices[0].message.content.startsWith('{'), 'response_format json_object: the answer is constrained to JSON',
    JSON.stringify(rf.choices[0].message.content));
  const tc = await engine.chat.completions.create({
    messages: [{ role: 'user', content: 'What time is it?' }], max_tokens: 40, temperature: 0, tool_choice: 'required',
    tools: [{ type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: { tz: { enum: ['UTC', 'CET'] } }, required: ['tz'] } } }],
  });
  const call = tc.choices[0].message.tool_calls?.[0];
  check(tc.choices[0].finish_reason === 'tool_calls' && call?.function.name === 'get_time' && /^call_/.test(call.id)
    && ['UTC', 'CET'].includes(JSON.parse(call.function.arguments).tz) && tc.choices[0].message.content === null,
  'tool_choice required (generic syntax): a get_time call with valid arguments, no content', JSON.stringify(tc.choices[0]));
  // The agent loop's second half: the call and its result go back, the model answers in text.
  const answer = await engine.chat.completions.create({
    messages: [
      { role: 'user', content: 'What time is it?' },
      tc.choices[0].message,
      { role: 'tool', tool_call_id: call?.id, content: '{"time": "12:00"}' },
    ],
    max_tokens: 4, temperature: 0, tool_choice: 'auto',
    tools: [{ type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: { tz: { enum: ['UTC', 'CET'] } }, required: ['tz'] } } }],
  });
  check(typeof answer.choices[0].message.content === 'string' || answer.choices[0].message.tool_calls?.length > 0,
    'the call and its tool result go back through the template; the model answers', JSON.stringify(answer.choices[0]));
  await bad({ messages: [{ role: 'user', content: 'hi' }, { role: 'tool', tool_call_id: 'call_x', content: '1' }] },
    /tool_call_id/, 'a tool message answering no call is rejected, naming the field');
  try {
    await engine.embeddings.create({ input: 'hi' });
    check(false, 'embeddings.create on a generation model rejects', 'no error');
  } catch (e) {
    check(/is a generation model \(llama\), not an embedding model/.test(e.message),
      'embeddings.create on a generation model rejects', e.message);
  }

  // 6b. engine.bench(): the native `flint bench` code (src/bench.rs) in wasm, same report.
  const runs = [];
  const b = await engine.bench({ nPrompt: 8, nGen: 2, nDepth: [0, 4], repetitions: 2, onRun: (x) => runs.push(x) });
  const benchTests = JSON.stringify(b.tests.map((t) => [t.test, t.n_prompt, t.n_gen, t.n_depth]));
  check(benchTests === '[["pp8",8,0,0],["tg2",0,2,0],["pp8 @ d4",8,0,4],["tg2 @ d4",0,2,4]]' && b.tests.every((t) =>
    t.samples_tps.length === 2 && t.min_tps > 0 && t.min_tps <= t.median_tps && t.median_tps <= t.max_tps),
  'bench: pp8 and tg2 at depths 0 and 4, min <= median <= max over 2 repetitions',
  JSON.stringify(b.tests.map((t) => [t.test, t.samples_tps])));
  check(runs.length === 12 && runs[0].test === 'pp8' && runs[2].run === 3 && runs.at(-1).test === 'tg2 @ d4' &&
    runs.every((x) => x.runs === 3 && x.tokensPerSecond > 0), 'bench: onRun after each run, the warm-up included',
  JSON.stringify(runs.map((x) => `${x.test} ${x.run}/${x.runs}`)));
  check(b.quant === 'Q4_1' && b.architecture === 'llama' && b.model === modelUrl && b.adapter === info.adapter &&
    b.decode_weight_bytes_per_token > 50e6 && b.copy_gbps > 0 && b.roofline_ratio > 0 &&
    Math.abs(b.decode_weight_gbps / b.copy_gbps - b.roofline_ratio) < 1e-9 &&
    Math.abs(b.decode_weight_gbps - b.decode_weight_bytes_per_token * b.tests[1].median_tps / 1e9) < 1e-9,
  'bench report: model, adapter, copy bandwidth, roofline ratio from the depth-0 decode test',
  `copy ${b.copy_gbps?.toFixed(2)} GB/s, roofline ${b.roofline_ratio?.toFixed(3)}`);
  summary.bench = Object.fromEntries(b.tests.map((t) => [t.test, +t.median_tps.toFixed(2)]));
  summary.bench.copyGBs = +b.copy_gbps.toFixed(2);
  const badBench = async (opts, re, what) => {
    try {
      await engine.bench(opts);
      check(false, what, 'no error');
    } catch (e) {
      check(e instanceof Error && re.test(e.message), what, e.message);
    }
  };
  await badBench({ nPrompt: 0, nGen: 0 }, /nothing to measure/, 'bench: nothing to measure is an error');
  await badBench({ nGen: 2, repetitions: 0 }, /repetitions must be at least 1/, 'bench: zero repetitions is an error');
  await badBench({ nPrompt: 600 }, /context of 600 tokens/, 'bench: tests longer than the context are an error');
  await badBench({ nPromt: 8 }, /unknown field `nPromt`/, 'bench: an unknown option is named');
  await badBench({ nGen: -1 }, /nGen|invalid value/, 'bench: a negative length is an error');
  const after = await engine.completions.create({ prompt: FIXTURE.prompt, max_tokens: 2, temperature: 0 });
  check(sameIds(after.choices[0].token_ids, FIXTURE.ids.slice(0, 2)), 'engine generates the same ids after a bench',
    JSON.stringify(after.choices[0].token_ids));

  // 7. Unload frees the engine; later calls fail clearly.
  await engine.unload();
  try {
    await engine.completions.create({ prompt: 'x', max_tokens: 1 });
    check(false, 'calls after unload fail');
  } catch (e) {
    check(/unloaded/.test(e.message), 'calls after unload fail', e.message);
  }

  // 8. Device options (kernels, kvCache, sampleOn: the CLI's --kernels, --kv-cache, --sample-on):
  //    info reports what each resolved to; greedy ids do not depend on where the pick runs (f32
  //    cache), nor on the q16 cache. The f16 cache may change them: only their count is checked. Few tokens: the
  //    GPU-layout kernels and the top-k ranking are several times slower on SwiftShader.
  const dev = (caps) => ({ kernelLayout: caps.kernelLayout, kvCache: caps.kvCache, sampleOn: caps.sampleOn });
  const sameDev = (caps, want) => Object.keys(want).every((k) => caps[k] === want[k]);
  summary.defaultDevice = dev(info.caps);
  check(['gpu', 'cpu'].includes(info.caps.kernelLayout) && info.caps.kvCache === 'f32' && info.caps.matmul === 'f32' &&
    ['gpu', 'cpu'].includes(info.caps.sampleOn), 'info reports the kernel layout, KV cache, matmul operands and sampling place',
  JSON.stringify(summary.defaultDevice));
  const withOptions = async (opts, prompt, n) => {
    const t = performance.now();
    const e = await createEngine({ model: modelUrl, ctx: 64, ...opts });
    try {
      const { caps, requests, networkBytes, cacheBytes } = await e.info();
      const g = await e.completions.create({ prompt, max_tokens: n, temperature: 0 });
      return { caps, ids: g.choices[0].token_ids, ms: Math.round(performance.now() - t), requests, networkBytes, cacheBytes };
    } finally {
      await e.unload();
    }
  };
  summary.deviceOptionsMs = {};
  // The default load's kernel layout and cache, with the greedy pick on the other side. This load
  // comes from Python's http.server, which ignores Range: one 200 response, streamed through the
  // same tensor-by-tensor path (a load of its own would cost CI a prefill and decode on SwiftShader).
  const other = info.caps.sampleOn === 'gpu' ? 'cpu' : 'gpu';
  const pyModel = python.url + MODEL_PATH;
  const o = await withOptions({ sampleOn: other, model: pyModel }, FIXTURE.prompt, 4);
  summary.deviceOptionsMs[`sampleOn ${other} (from python3 -m http.server)`] = o.ms;
  await python.sync();
  const pyServed = python.counts.get(MODEL_PATH)?.requests;
  check(o.requests === 1 && pyServed === 1 && o.networkBytes === fileBytes && o.cacheBytes === 0,
    'a server that ignores Range (python3 -m http.server): the model loads from one whole-file response, read once',
    `${o.requests} request(s), the server logged ${pyServed}; ${o.networkBytes} of ${fileBytes} bytes`);
  check(sameDev(o.caps, { ...summary.defaultDevice, sampleOn: other }), `{ sampleOn: '${other}' } is reported`,
    JSON.stringify(dev(o.caps)));
  check(sameIds(o.ids, ids.slice(0, 4)), `greedy ids picked on the ${other.toUpperCase()} equal those picked on the ` +
    `${info.caps.sampleOn.toUpperCase()} (f32 cache)`, JSON.stringify(o.ids));
  const want = { kernelLayout: 'gpu', kvCache: 'f16', sampleOn: 'gpu' };
  const h = await withOptions({ kernels: 'gpu', kvCache: 'f16', sampleOn: 'gpu' }, [ids[0]], 3);
  summary.deviceOptionsMs['kernels gpu, kvCache f16, sampleOn gpu'] = h.ms;
  check(sameDev(h.caps, want), "{ kernels: 'gpu', kvCache: 'f16', sampleOn: 'gpu' } is reported", JSON.stringify(dev(h.caps)));
  check(h.ids.length === 3, 'with the f16 KV cache, greedy generation gives the 3 tokens asked for', JSON.stringify(h.ids));
  // The q16 cache (16-bit fixed point, logits within 1e-2 of f32) keeps the f32 cache's greedy ids.
  const qc = await withOptions({ kernels: 'cpu', kvCache: 'q16' }, FIXTURE.prompt, 4);
  summary.deviceOptionsMs['kernels cpu, kvCache q16'] = qc.ms;
  check(qc.caps.kvCache === 'q16' && qc.caps.kernelLayout === 'cpu', "{ kernels: 'cpu', kvCache: 'q16' } is reported",
    JSON.stringify(dev(qc.caps)));
  check(sameIds(qc.ids, ids.slice(0, 4)), 'greedy ids over the q16 KV cache equal those over the f32 cache',
    JSON.stringify(qc.ids));
  // q16 matmul tiles (the GPU layout's prefill matmul in 16 bits, logits within 1e-2 of f32 tiles):
  // the prompt's prefill runs through them and the first greedy ids stay those of the default load.
  const qt = await withOptions({ kernels: 'gpu', matmul: 'q16' }, FIXTURE.prompt, 2);
  summary.deviceOptionsMs['kernels gpu, matmul q16'] = qt.ms;
  check(qt.caps.matmul === 'q16' && qt.caps.kernelLayout === 'gpu', "{ kernels: 'gpu', matmul: 'q16' } is reported",
    JSON.stringify(qt.caps));
  check(sameIds(qt.ids, ids.slice(0, 2)), 'greedy ids after a prefill through q16 matmul tiles equal the default ones',
    JSON.stringify(qt.ids));

  // 9. Load errors: network (404), not a GGUF, model too large for the device's limits, a bad option.
  const loadErr = async (opts, re, what) => {
    try {
      const e = await createEngine(opts);
      await e.unload();
      check(false, what, 'loaded');
    } catch (e) {
      check(e instanceof Error && re.test(e.message), what, e.message);
    }
  };
  await loadErr({ model: `${server.url}/models/missing.gguf` }, /HTTP 404/, '404 is a network error');
  await loadErr({ model: `${server.url}/pkg/package.json` }, /not a GGUF file/, 'a non-GGUF file is rejected');
  await loadErr({ model: 'http://127.0.0.1:9/none.gguf' }, /network error/, 'an unreachable server is a network error');
  await loadErr({ model: modelUrl, maxStorageBufferBindingSize: 256 }, /exceeds the adapter's max storage binding/,
    'a model too large for the binding limit is rejected');
  await loadErr({ model: modelUrl, kvCache: 'f8' }, /kvCache must be "f32", "f16" or "q16", not "f8"/,
    'an unknown kvCache value is rejected, naming the option');
  await loadErr({ model: modelUrl, matmul: 'bf16' }, /matmul must be "f32", "f16" or "q16", not "bf16"/,
    'an unknown matmul value is rejected, naming the option');

  // 10. An embedding model through the same loader: OpenAI's embeddings, equal to the native
  //     engine's (`flint embed --json`, run now on this machine's adapter).
  const native = nativeEmbeddings(EMBED_TEXTS);
  let t = performance.now();
  const embedder = await createEngine({ model: server.url + EMBED_PATH });
  summary.embedLoadMs = Math.round(performance.now() - t);
  const einfo = await embedder.info();
  const em = einfo.model;
  check(em.kind === 'embedding' && em.architecture === 'bert' && em.embedding?.dimensions === 32 &&
    em.embedding.pooling === 'cls' && em.embedding.normalize === true && em.embedding.maxTokens === 64 &&
    einfo.ctx === 64 && em.params.pooling === 'cls', 'info: an embedding model (bert, 32 dimensions, CLS pooling, 64 tokens)',
  JSON.stringify(em));
  t = performance.now();
  const emb = await embedder.embeddings.create({ input: EMBED_TEXTS, model: 'any' });
  summary.embedMs = Math.round(performance.now() - t);
  check(emb.object === 'list' && emb.model === 'tiny-bert-f32' && emb.data.length === EMBED_TEXTS.length &&
    emb.data.every((d, i) => d.object === 'embedding' && d.index === i && Array.isArray(d.embedding) &&
      d.embedding.length === 32), 'embeddings.create: OpenAI\'s list shape', JSON.stringify({ ...emb, data: emb.data.length }));
  const diff = Math.max(...emb.data.map((d, i) => maxDiff(d.embedding, native.data[i].embedding)));
  summary.embedMaxDiffVsCli = diff;
  check(diff < 1e-5, `${EMBED_TEXTS.length} vectors equal flint embed --json's`, `max |diff| ${diff.toExponential(2)}`);
  check(emb.usage.prompt_tokens === native.usage.prompt_tokens && emb.usage.total_tokens === native.usage.total_tokens,
    'usage counts the tokens as flint embed does', JSON.stringify(emb.usage));
  // base64: each vector's little-endian float32 bytes
  const b64 = await embedder.embeddings.create({ input: EMBED_TEXTS, encoding_format: 'base64' });
  const decoded = b64.data.map((d) => typeof d.embedding === 'string'
    ? Array.from(new Float32Array(new Uint8Array(Buffer.from(d.embedding, 'base64')).buffer)) : []);
  check(decoded.every((v, i) => maxDiff(v, emb.data[i].embedding) === 0), "encoding_format 'base64' decodes to the float vectors");
  // dimensions: the first N components, normalized again
  const cut = await embedder.embeddings.create({ input: EMBED_TEXTS.slice(0, 2), dimensions: 8 });
  const unit = (v) => { const n = Math.hypot(...v); return v.map((x) => x / n); };
  const cutDiff = Math.max(...cut.data.map((d, i) => maxDiff(d.embedding, unit(native.data[i].embedding.slice(0, 8)))));
  check(cut.data.every((d) => d.embedding.length === 8) && cutDiff < 1e-5, 'dimensions: 8 keeps the first 8 components, normalized',
    `max |diff| ${cutDiff.toExponential(2)}`);
  // token ids: one input, or several; the ids of the text give its vector
  const textIds = await embedder.tokenize({ prompt: EMBED_TEXTS[1] });
  check(sameIds(textIds, EMBED_CASES[1].ids), 'tokenize gives the reference tokenizer\'s ids', JSON.stringify(textIds));
  const byIds = await embedder.embeddings.create({ input: textIds });
  const byIdLists = await embedder.embeddings.create({ input: [EMBED_CASES[0].ids, textIds] });
  check(byIds.data.length === 1 && maxDiff(byIds.data[0].embedding, emb.data[1].embedding) < 1e-5 &&
    byIdLists.data.length === 2 && maxDiff(byIdLists.data[1].embedding, emb.data[1].embedding) < 1e-5 &&
    maxDiff(byIdLists.data[0].embedding, emb.data[0].embedding) < 1e-5 && byIds.usage.prompt_tokens === textIds.length,
  'token-id inputs (number[] and number[][]) give the vectors of their texts');
  // truncate: an input over the 64-token limit is refused, or cut to 64 tokens
  const long = `${EMBED_TEXTS.at(-1)} ${EMBED_TEXTS.at(-1)}`;
  const cutLong = await embedder.embeddings.create({ input: long, truncate: true });
  check(cutLong.usage.prompt_tokens === 64, 'truncate: true cuts a long input to the model\'s 64 tokens', JSON.stringify(cutLong.usage));
  const badEmbed = async (body, re, what) => {
    try {
      await embedder.embeddings.create(body);
      check(false, what, 'no error');
    } catch (e) {
      check(e instanceof Error && re.test(e.message), what, e.message);
    }
  };
  await badEmbed({ input: long }, /input 0 is \d+ tokens, over this model's limit of 64/, 'an input over the token limit is refused');
  await badEmbed({ input: '' }, /input 0 is an empty string/, 'an empty string is refused');
  await badEmbed({ input: [] }, /no input to embed/, 'an empty input list is refused');
  await badEmbed({}, /input is missing/, 'a request without input is refused');
  await badEmbed({ input: ['a', 7] }, /input\[1\] is a number but input\[0\] is a string/, 'mixed input types are refused, naming the item');
  await badEmbed({ input: [{ text: 'a' }] }, /input\[0\] is an object/, 'an object item is refused');
  await badEmbed({ input: [2, 1.5] }, /input\[1\] is 1\.5, not a token id/, 'a non-integer token id is refused');
  await badEmbed({ input: [[2, 3], [2, 9999]] }, /input 1: token id 9999 is outside the vocabulary/, 'a token id outside the vocabulary is refused');
  await badEmbed({ input: 'a', dimensions: 33 }, /dimensions 33 is outside 1..=32/, 'dimensions above the model\'s are refused');
  await badEmbed({ input: 'a', encoding_format: 'int8' }, /encoding_format must be "float" or "base64", not "int8"/, 'an unknown encoding_format is refused');
  // chat on an embedding model
  const refused = async (call, what) => {
    try {
      await call();
      check(false, what, 'no error');
    } catch (e) {
      check(/is an embedding model.*embeddings\.create/.test(e.message), what, e.message);
    }
  };
  await refused(() => embedder.chat.completions.create({ messages: [{ role: 'user', content: 'hi' }] }), 'chat on an embedding model rejects');
  await refused(() => embedder.completions.create({ prompt: 'hi', stream: true }), 'a streamed completion on an embedding model rejects');
  await refused(() => embedder.bench({ nPrompt: 4, nGen: 0, repetitions: 1 }), 'bench on an embedding model rejects');
  const again2 = await embedder.embeddings.create({ input: EMBED_TEXTS[0] });
  check(maxDiff(again2.data[0].embedding, emb.data[0].embedding) < 1e-5, 'the embedder works after the errors');
  await embedder.unload();

  // 11. source.js alone against Python's http.server (no Range support): reads in the loader's
  //     order (growing header prefixes from 0, then forward in pieces) give the file's bytes from
  //     one response, holding at most two 8 MiB chunks; a read behind them is a clear error.
  t = performance.now();
  await checkStreamedSource(pyModel);
  summary.streamedSourceMs = Math.round(performance.now() - t);
} catch (e) {
  check(false, 'unexpected error', e?.stack ?? String(e));
} finally {
  await server.close();
  await python.close();
}
done(summary);

async function checkStreamedSource(url) {
  const MiB = 1 << 20;
  const fd = openSync(ROOT + MODEL_PATH.slice(1), 'r');
  const fileAt = (o, n) => {
    const b = Buffer.alloc(n);
    readSync(fd, b, 0, n, o);
    return b;
  };
  const same = (a, o) => Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.length), fileAt(o, a.length)) === 0;
  // The loader's order: the magic, prefixes of 1 and 4 MiB, then 4 MiB pieces (not chunk-aligned).
  const reads = [[0, 4], [0, MiB], [0, 4 * MiB]];
  for (let o = 3 * MiB + 123; o < fileBytes; o += 4 * MiB - 7) reads.push([o, Math.min(4 * MiB - 7, fileBytes - o)]);
  const message = (p) => p.then(() => 'no error', (e) => e.message);

  const probe = await fetch(url, { headers: { Range: 'bytes=0-0' } });
  await probe.body?.cancel();
  await python.sync();
  check(probe.status === 200, "python's http.server answers a Range request with 200 and the whole file",
    `HTTP ${probe.status}, Content-Length ${probe.headers.get('content-length')}`);

  // Live ArrayBuffer memory: what the source holds. V8 frees the buffers of a collection on a
  // background thread and counts them freed when it is done: collect until the count settles.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc');
  const live = async () => {
    let now = -1;
    for (let k = 0, last = -2; k < 8 && now !== last; k++) {
      last = now;
      await new Promise((ok) => setTimeout(ok, 5));
      gc();
      now = process.memoryUsage().arrayBuffers;
    }
    return now;
  };
  const before = python.counts.get(MODEL_PATH)?.requests ?? 0;
  const base = await live();
  const s = await openSource(url);
  let ok = s.size === fileBytes;
  let peak = 0;
  for (const [o, n] of reads) {
    ok = same(await s.read(o, n), o) && ok;
    peak = Math.max(peak, (await live()) - base);
  }
  await python.sync();
  const served = (python.counts.get(MODEL_PATH)?.requests ?? 0) - before;
  check(ok && s.stats.requests === 1 && served === 1 && s.stats.networkBytes === fileBytes,
    `source.js over a server that ignores Range: ${reads.length} reads in the loader's order give the file's bytes, from one request`,
    `${JSON.stringify(s.stats)}, the server logged ${served}`);
  summary.streamedSourcePeakMiB = +(peak / MiB).toFixed(1);
  check(peak <= 2 * 8 * MiB + 4 * MiB + MiB, 'it holds at most two 8 MiB chunks (and the read) in memory, not the file',
    `peak ${(peak / MiB).toFixed(1)} MiB live for a ${(fileBytes / MiB).toFixed(1)} MiB file`);
  const back = await message(s.read(20 * MiB, 16));
  check(/cannot read back to byte 20971520 .*ignores HTTP Range requests.*read once, forward/.test(back),
    'a read behind what it holds is an error naming the cause, not wrong bytes', back);
  s.close();

  // With a cache (a Cache API stand-in: Node has none): the streamed chunks are stored under the
  // ranged path's keys, so a second open reads every byte from it with no request; a chunk missing
  // from the cache is read by streaming the file again up to it.
  const stored = new Map();
  globalThis.caches = {
    open: async () => ({
      match: async (k) => (stored.has(String(k)) ? new Response(stored.get(String(k))) : undefined),
      put: async (k, r) => void stored.set(String(k), new Uint8Array(await r.arrayBuffer())),
    }),
  };
  try {
    const read = async (src) => {
      let all = true;
      for (const [o, n] of reads) all = same(await src.read(o, n), o) && all;
      src.close();
      return all;
    };
    const first = await openSource(url);
    const firstOk = await read(first);
    const chunks = [...stored.keys()].filter((k) => /flint-cache=\d+%3A\d+$/.test(k));
    const layout = chunks.length === Math.ceil(fileBytes / (8 * MiB)) && chunks.every((k) => {
      const i = Number(/%3A(\d+)$/.exec(k)[1]);
      const b = stored.get(k);
      return b.length === Math.min(8 * MiB, fileBytes - i * 8 * MiB) && same(b, i * 8 * MiB);
    });
    const second = await openSource(url);
    const secondOk = await read(second);
    check(firstOk && layout && first.stats.requests === 1 && second.stats.requests === 0 && secondOk &&
      second.stats.cacheBytes === fileBytes && second.stats.networkBytes === 0,
    'streamed chunks are cached in the ranged layout: a second open reads every byte from the cache, no request',
    `${chunks.length} chunks; first ${JSON.stringify(first.stats)}, second ${JSON.stringify(second.stats)}`);
    const key5 = chunks.find((k) => k.endsWith('%3A5'));
    stored.delete(key5);
    const third = await openSource(url);
    const thirdOk = await read(third);
    check(thirdOk && third.stats.requests === 1 && third.stats.networkBytes === 6 * 8 * MiB &&
      third.stats.cacheBytes === fileBytes - 8 * MiB && stored.has(key5),
    'a chunk missing from the cache: one request, the stream read up to it, the chunk stored again', JSON.stringify(third.stats));
  } finally {
    delete globalThis.caches;
  }

  // A server that ignores Range and sends no Content-Length (chunked): the size is unknown.
  const chunked = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.write(fileAt(0, 1024));
    res.end();
  });
  await new Promise((ok) => chunked.listen(0, '127.0.0.1', ok));
  const noLength = await message(openSource(`http://127.0.0.1:${chunked.address().port}/m.gguf`));
  chunked.closeAllConnections();
  chunked.close();
  check(/ignores HTTP Range requests .* no Content-Length, so the file's size is unknown/.test(noLength),
    'no Range support and no Content-Length: an error naming both', noLength);
}
