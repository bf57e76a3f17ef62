// flint for the web: createEngine() and an OpenAI-shaped API over the flint engine (Rust + WGSL,
// compiled to wasm) running on the visitor's GPU through WebGPU. See README.md.

import { Core } from './core.js';
export { deleteCachedModel } from './source.js';

const isNode = typeof process !== 'undefined' && !!process.versions?.node;

function abortError(signal) {
  const reason = signal?.reason;
  if (reason instanceof Error && reason.name === 'AbortError') return reason;
  const e = new Error('the request was aborted');
  e.name = 'AbortError';
  return e;
}

function fail(message) {
  return new TypeError(`flint: ${message}`);
}

/** Runs the engine on the calling thread. */
class InThread {
  #core = null;
  async load(model, options, onProgress, signal) {
    this.#core = await Core.load(model, { ...options, signal }, onProgress);
    return this.#core.info();
  }
  async generate(prompt, options, onText, signal) {
    return this.#core.generate(prompt, options, (t) => {
      if (signal?.aborted) return false;
      onText(t);
      return true;
    });
  }
  async embed(request) { return this.#core.embed(request); }
  async bench(options, onRun) { return this.#core.bench(options, onRun); }
  async tokenize(prompt) { return this.#core.tokenize(prompt); }
  async info() { return { ...this.#core.info(), worker: false }; }
  async reset() { this.#core.reset(); }
  async unload() { this.#core?.unload(); this.#core = null; }
}

/** Runs the engine in a module Web Worker (worker.js); calls become messages. */
class InWorker {
  #w;
  #next = 1;
  #pending = new Map();
  #dead = null;

  constructor(workerUrl) {
    // `new Worker(new URL('./worker.js', import.meta.url), ...)` spelled out whole: bundlers (Vite,
    // webpack 5, Parcel) recognise only this form and then bundle worker.js and what it imports.
    this.#w = workerUrl
      ? new Worker(workerUrl, { type: 'module' })
      : new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    this.#w.onmessage = (ev) => {
      const m = ev.data;
      const p = this.#pending.get(m.id);
      if (!p) return;
      if (m.type === 'progress') p.onProgress?.(m.progress);
      else if (m.type === 'text') p.onText?.(m.text);
      else {
        this.#pending.delete(m.id);
        if (m.type === 'result') p.resolve(m.value);
        else {
          const e = new Error(m.message);
          if (m.name && m.name !== 'Error') e.name = m.name;
          p.reject(e);
        }
      }
    };
    const die = (what) => {
      this.#dead = new Error(`flint: the engine's worker failed: ${what}`);
      for (const p of this.#pending.values()) p.reject(this.#dead);
      this.#pending.clear();
    };
    this.#w.onerror = (ev) => die(ev.message || 'it could not start or crashed');
    this.#w.onmessageerror = () => die('a message could not be read');
  }

  #call(op, args, hooks = {}) {
    if (this.#dead) return Promise.reject(this.#dead);
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, ...hooks });
      this.#w.postMessage({ id, op, args });
      hooks.signal?.addEventListener('abort', () => {
        if (this.#pending.has(id)) this.#w.postMessage({ id: 0, op: 'abort', args: { target: id } });
      }, { once: true });
    });
  }

  async load(model, options, onProgress, signal) {
    if (options.gpu) throw fail('the `gpu` option needs { worker: false }');
    const onAbort = () => {
      this.#w.terminate();
      for (const p of this.#pending.values()) p.reject(abortError(signal));
      this.#pending.clear();
      this.#dead = abortError(signal);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await this.#call('load', { model, options }, { onProgress });
    } catch (e) {
      // a failed load leaves no engine: stop the worker rather than keep its wasm module alive
      this.#w.terminate();
      this.#dead = e;
      throw e;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }
  generate(prompt, options, onText, signal) {
    return this.#call('generate', { prompt, options }, { onText, signal });
  }
  embed(request) { return this.#call('embed', { request }); }
  bench(options, onRun) { return this.#call('bench', { options }, { onProgress: onRun }); }
  tokenize(prompt) { return this.#call('tokenize', { prompt }); }
  async info() { return { ...(await this.#call('info', {})), worker: true }; }
  reset() { return this.#call('reset', {}); }
  async unload() {
    if (this.#dead) return;
    try {
      await this.#call('unload', {});
    } finally {
      this.#w.terminate();
      this.#dead = new Error('flint: the engine was unloaded');
    }
  }
}

function checkNumber(body, key, lo, hi) {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi) {
    throw fail(`\`${key}\` must be a number between ${lo} and ${hi}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function messageText(m, i) {
  if (!m || typeof m !== 'object' || typeof m.role !== 'string') {
    throw fail(`messages[${i}] must be an object with a string \`role\``);
  }
  if (typeof m.content === 'string') return m.content;
  if (Array.isArray(m.content)) {
    return m.content.map((part, j) => {
      if (part?.type !== 'text' || typeof part.text !== 'string') {
        throw fail(`messages[${i}].content[${j}]: only text parts are supported`);
      }
      return part.text;
    }).join('');
  }
  if (m.content == null && m.role === 'assistant') return '';
  throw fail(`messages[${i}].content must be a string or an array of text parts`);
}

/** Generation options for the core from an OpenAI request body. */
function generateOptions(body, ctx) {
  const maxTokens = body.max_completion_tokens ?? body.max_tokens;
  if (maxTokens != null && (!Number.isInteger(maxTokens) || maxTokens < 1)) {
    throw fail(`\`max_tokens\` must be a positive integer, got ${JSON.stringify(maxTokens)}`);
  }
  let temperature = checkNumber(body, 'temperature', 0, 2) ?? 1;
  let topP = checkNumber(body, 'top_p', 0, 1) ?? 1;
  if (topP === 0) [temperature, topP] = [0, 1];
  const seed = body.seed;
  if (seed != null && (!Number.isSafeInteger(seed) || seed < 0)) {
    throw fail(`\`seed\` must be a non-negative integer, got ${JSON.stringify(seed)}`);
  }
  let stop = body.stop ?? [];
  if (typeof stop === 'string') stop = [stop];
  if (!Array.isArray(stop) || stop.length > 4 || stop.some((s) => typeof s !== 'string' || !s)) {
    throw fail('`stop` must be a non-empty string or an array of up to 4 of them');
  }
  if (body.n != null && body.n !== 1) throw fail('`n` other than 1 is not supported');
  const logitBias = Object.entries(body.logit_bias ?? {}).map(([id, b]) => {
    if (!/^\d+$/.test(id) || typeof b !== 'number' || b < -100 || b > 100) {
      throw fail('`logit_bias` maps token ids to numbers between -100 and 100');
    }
    return [Number(id), b];
  });
  return {
    max_tokens: maxTokens ?? ctx,
    stop,
    sampling: {
      temperature,
      top_k: 0,
      top_p: topP,
      min_p: 0,
      repeat_penalty: 1,
      presence_penalty: checkNumber(body, 'presence_penalty', -2, 2) ?? 0,
      frequency_penalty: checkNumber(body, 'frequency_penalty', -2, 2) ?? 0,
      logit_bias: logitBias,
      seed: seed ?? null,
    },
    // Read and checked by the library, as the server does (src/tools.rs).
    tools: body.tools ?? null,
    tool_choice: body.tool_choice ?? null,
    parallel_tool_calls: body.parallel_tool_calls ?? null,
    response_format: body.response_format ?? null,
    // speculative decoding (prompt lookup): on unless `speculative: false` (src/spec.rs)
    speculative: body.speculative ?? null,
  };
}

/** A chat message for the core: text content, and the tool fields as OpenAI writes them. */
function chatMessage(m, i) {
  const out = { role: m.role, content: messageText(m, i) };
  if (m.content == null && m.role === 'assistant') out.content = null;
  if (m.tool_calls != null) out.tool_calls = m.tool_calls;
  if (m.tool_call_id != null) out.tool_call_id = m.tool_call_id;
  if (m.name != null) out.name = m.name;
  return out;
}

function usageOf(r) {
  return {
    prompt_tokens: r.promptTokens,
    completion_tokens: r.tokens.length,
    total_tokens: r.promptTokens + r.tokens.length,
  };
}

/** llama.cpp server's `timings` object (prompt = prefill, predicted = decode). */
function timingsOf(r) {
  return {
    prompt_n: r.prefilledTokens,
    prompt_ms: r.prefillMs,
    prompt_per_second: r.prefillTps,
    predicted_n: r.tokens.length,
    predicted_ms: r.decodeMs,
    predicted_per_second: r.decodeTps,
    // speculative decoding, as llama.cpp's server names them
    draft_n: r.draftTokens,
    draft_n_accepted: r.draftAccepted,
  };
}

let idCounter = 0;
function newId(prefix) {
  idCounter += 1;
  return `${prefix}-${Date.now().toString(36)}${idCounter.toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

/** A model loaded on this device's GPU: a generation model (chat, completions) or an embedding
 * model (embeddings). Create with {@link createEngine}. */
export class Engine {
  #backend;
  #info;
  #model;
  #tail = Promise.resolve();
  #unloaded = false;

  /** @internal */
  constructor(backend, info) {
    this.#backend = backend;
    this.#info = info;
    this.#model = String(info.url).split(/[\\/]/).pop().replace(/\.gguf$/i, '').split('?')[0];
    this.chat = { completions: { create: (body, opts) => this.#create('chat', body, opts) } };
    this.completions = { create: (body, opts) => this.#create('text', body, opts) };
    this.embeddings = { create: (body, opts) => this.#embed(body, opts) };
  }

  /** The model's name (the file name without `.gguf`). */
  get model() { return this.#model; }

  /** Adapter, capabilities, the kernels in use, model parameters, load and memory statistics. */
  info() { return this.#queued(() => this.#backend.info()); }

  /** Token ids of a prompt: `{ messages }` (through the chat template) or `{ prompt }`. */
  tokenize({ messages, prompt }) {
    const p = messages ? { messages: messages.map(chatMessage) }
      : typeof prompt === 'string' ? { text: prompt } : null;
    if (!p) throw fail('tokenize takes { messages } or { prompt: string }');
    return this.#queued(() => this.#backend.tokenize(p));
  }

  /**
   * Measures prefill and decode tokens/s on this device as `flint bench` does (llama-bench's
   * pp/tg tests) and returns the same report; empties the KV cache.
   * @param {import('./index').BenchOptions} options
   */
  async bench(options = {}) {
    if (!options || typeof options !== 'object') throw fail('bench() takes an options object');
    const { onRun, ...rest } = options;
    if (onRun != null && typeof onRun !== 'function') throw fail('`onRun` must be a function');
    return this.#queued(() => this.#backend.bench(rest, onRun ?? (() => {})));
  }

  /** Forgets the conversation held in the KV cache (a new prompt with a shared prefix reuses it). */
  reset() { return this.#queued(() => this.#backend.reset()); }

  /** Frees the model's GPU memory (and the worker); the engine cannot be used afterwards. */
  unload() {
    this.#unloaded = true;
    return this.#queued(() => this.#backend.unload(), true);
  }

  /** Runs `job` after every request before it (one request at a time on one GPU). */
  #queued(job, evenUnloaded = false) {
    if (this.#unloaded && !evenUnloaded) return Promise.reject(new Error('flint: the engine was unloaded'));
    const run = this.#tail.then(job, job);
    this.#tail = run.catch(() => {});
    return run;
  }

  /** OpenAI's embeddings: `input` and the options go to the library as they are (src/embed.rs and
   * src/web/embeddings.rs check them); the vectors come back in OpenAI's shape. */
  async #embed(body, opts = {}) {
    if (!body || typeof body !== 'object') throw fail('embeddings.create() takes a request object');
    const signal = opts.signal ?? body.signal;
    if (signal?.aborted) throw abortError(signal);
    const { input, encoding_format, dimensions, truncate } = body;
    const r = await this.#queued(() => this.#backend.embed({ input, encoding_format, dimensions, truncate }));
    return { object: r.object, data: r.data, model: this.#model, usage: r.usage };
  }

  async #create(kind, body, opts = {}) {
    if (!body || typeof body !== 'object') throw fail('create() takes a request object');
    if (this.#info.model?.kind === 'embedding') {
      // (the wasm module refuses it too; here a stream is refused before it starts)
      throw fail(`${this.#model} is an embedding model: it gives vectors, not text. Use ` +
        'embeddings.create; chat and completions need a generation model');
    }
    const signal = opts.signal ?? body.signal;
    let prompt;
    if (kind === 'chat') {
      if (!Array.isArray(body.messages) || body.messages.length === 0) {
        throw fail('`messages` must be a non-empty array');
      }
      prompt = { messages: body.messages.map(chatMessage) };
    } else if (typeof body.prompt === 'string') {
      prompt = { text: body.prompt };
    } else if (Array.isArray(body.prompt) && body.prompt.length && body.prompt.every(Number.isInteger)) {
      prompt = { tokens: body.prompt };
    } else {
      throw fail('`prompt` must be a string or an array of token ids');
    }
    const options = generateOptions(body, this.#info.ctx);
    if (signal?.aborted) throw abortError(signal);
    const id = newId(kind === 'chat' ? 'chatcmpl' : 'cmpl');
    const created = Math.floor(Date.now() / 1000);
    const head = { id, object: kind === 'chat' ? 'chat.completion' : 'text_completion', created, model: this.#model };

    if (!body.stream) {
      const r = await this.#queued(() => this.#backend.generate(prompt, options, () => {}, signal));
      if (r.finishReason === 'cancelled') throw abortError(signal);
      const choice = kind === 'chat'
        ? { index: 0, message: r.message, logprobs: null, finish_reason: r.finishReason }
        : { index: 0, text: r.text, logprobs: null, finish_reason: r.finishReason };
      return { ...head, choices: [{ ...choice, token_ids: r.tokens }], usage: usageOf(r), timings: timingsOf(r) };
    }
    return this.#stream(kind, head, prompt, options, signal, body.stream_options?.include_usage === true);
  }

  #stream(kind, head, prompt, options, userSignal, includeUsage) {
    const object = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
    const chunk = (choice) => ({ ...head, object, choices: [choice] });
    const ac = new AbortController();
    const forward = () => ac.abort(userSignal.reason);
    userSignal?.addEventListener('abort', forward, { once: true });
    const items = [];
    let wake = null;
    let finished = false;
    let failure = null;
    const push = (item) => {
      items.push(item);
      wake?.();
      wake = null;
    };
    if (kind === 'chat') push(chunk({ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }));
    // Each piece arrives as OpenAI's delta object in JSON (content, or a tool call's start or
    // argument text), shaped by the library (src/tools.rs).
    this.#queued(() => this.#backend.generate(prompt, options, (json) => {
      const delta = JSON.parse(json);
      push(kind === 'chat'
        ? chunk({ index: 0, delta, logprobs: null, finish_reason: null })
        : chunk({ index: 0, text: delta.content ?? '', logprobs: null, finish_reason: null }));
    }, ac.signal))
      .then((r) => {
        if (r.finishReason === 'cancelled') {
          failure = abortError(userSignal ?? ac.signal);
        } else {
          const end = kind === 'chat'
            ? { index: 0, delta: {}, logprobs: null, finish_reason: r.finishReason }
            : { index: 0, text: '', logprobs: null, finish_reason: r.finishReason };
          push({ ...chunk(end), timings: timingsOf(r), token_ids: r.tokens });
          if (includeUsage) push({ ...head, object, choices: [], usage: usageOf(r) });
        }
      }, (e) => { failure = e; })
      .finally(() => {
        finished = true;
        userSignal?.removeEventListener('abort', forward);
        wake?.();
        wake = null;
      });
    const iterator = {
      async next() {
        for (;;) {
          if (items.length) return { value: items.shift(), done: false };
          if (failure) {
            const e = failure;
            failure = null;
            items.length = 0;
            throw e;
          }
          if (finished) return { value: undefined, done: true };
          await new Promise((r) => { wake = r; });
        }
      },
      async return() {
        ac.abort();
        items.length = 0;
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() { return this; },
      /** Stops generating (as breaking out of the loop does). */
      controller: ac,
    };
    return iterator;
  }
}

/**
 * Loads a GGUF model onto this device's GPU and returns an {@link Engine}.
 * @param {import('./index').CreateEngineOptions} options
 */
export async function createEngine(options = {}) {
  const { model, onProgress, worker, workerUrl, signal, ...rest } = options;
  if (!model) throw fail('createEngine needs `model`, the URL of a GGUF file');
  const useWorker = worker ?? (!isNode && typeof window !== 'undefined' && typeof Worker !== 'undefined');
  if (useWorker && typeof Worker === 'undefined') throw fail('Web Workers are not available here; pass { worker: false }');
  const backend = useWorker ? new InWorker(workerUrl) : new InThread();
  if (signal?.aborted) throw abortError(signal);
  const modelArg = model instanceof URL ? model.href : model;
  const info = await backend.load(modelArg, rest, onProgress, signal);
  return new Engine(backend, info);
}
