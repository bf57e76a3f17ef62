// The engine where the wasm module runs (a Web Worker by default, or the calling thread): loads
// the module, gives it WebGPU (in Node through the `webgpu` package), streams the model through
// source.js, and runs generation and embedding requests one at a time.

import init, { loadModel } from './flint_wasm.js';
import { openSource } from './source.js';

const isNode = typeof process !== 'undefined' && !!process.versions?.node;
let wasmReady = null;

/** Loads the wasm module once per thread; returns its exports (memory included). */
function loadWasm(wasmUrl) {
  wasmReady ??= (async () => {
    if (isNode && !wasmUrl) {
      const { readFile } = await import('node:fs/promises');
      return init({ module_or_path: await readFile(new URL('./flint_wasm_bg.wasm', import.meta.url)) });
    }
    return init({ module_or_path: wasmUrl ?? new URL('./flint_wasm_bg.wasm', import.meta.url) });
  })();
  return wasmReady;
}

/** Makes `navigator.gpu` exist: the browser's, or in Node the `webgpu` package's (Dawn). */
async function ensureWebGpu(gpu) {
  if (gpu) {
    defineGpu(gpu);
  } else if (!globalThis.navigator?.gpu && isNode) {
    let webgpu;
    try {
      webgpu = await import('webgpu');
    } catch {
      throw new Error('WebGPU is not available in Node: install the `webgpu` npm package ' +
        '(npm install webgpu), or pass createEngine({ gpu }) a GPU object');
    }
    Object.assign(globalThis, webgpu.globals);
    defineGpu(webgpu.create([]));
  }
  if (!globalThis.navigator?.gpu) {
    throw new Error('WebGPU is not available: navigator.gpu is missing (use a browser with WebGPU ' +
      'enabled, served over https or from localhost)');
  }
  // wgpu finds navigator through Window or WorkerGlobalScope; Node has neither.
  if (isNode) globalThis.Window ??= class Window {};
}

function defineGpu(gpu) {
  if (globalThis.navigator) {
    Object.defineProperty(globalThis.navigator, 'gpu', { value: gpu, configurable: true });
  } else {
    Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  }
}

export class Core {
  #engine;
  #wasm;
  #source;
  #info;

  constructor(engine, wasm, source) {
    this.#engine = engine;
    this.#wasm = wasm;
    this.#source = source;
  }

  /**
   * Loads `model` (see source.js). options: { cache, wasmUrl, gpu, ctx, batch,
   * maxStorageBufferBindingSize, noSubgroups, noF16, kernels: 'auto'|'gpu'|'cpu',
   * kvCache: 'f32'|'f16'|'q16', matmul: 'f32'|'f16'|'q16', sampleOn: 'auto'|'gpu'|'cpu' };
   * onProgress({ loaded, total, ... }).
   * Everything but cache/wasmUrl/gpu/signal goes to the wasm module as JSON, which rejects
   * unknown options and values with an Error naming them (src/web/options.rs).
   */
  static async load(model, options = {}, onProgress = () => {}) {
    const { cache = true, wasmUrl, gpu, signal, ...loadOptions } = options;
    await ensureWebGpu(gpu);
    const wasm = await loadWasm(wasmUrl);
    const source = await openSource(model, { cache, signal });
    const t0 = performance.now();
    let engine;
    try {
      engine = await loadModel(source.url, source.size, (o, n) => source.read(o, n),
        JSON.stringify(loadOptions), (loaded, total) => {
          try {
            onProgress({ loaded, total, ...source.stats });
          } catch {
            // a throwing progress callback must not break the load
          }
        });
    } finally {
      source.close();
    }
    const core = new Core(engine, wasm, source);
    core.#info = { loadMs: performance.now() - t0 };
    return core;
  }

  #live() {
    if (!this.#engine) throw new Error('the engine was unloaded');
    return this.#engine;
  }

  /**
   * Adapter, capabilities (with what kernels/kvCache/matmul/sampleOn resolved to:
   * caps.kernelLayout, caps.kvCache, caps.matmul, caps.sampleOn), chosen kernels, model, load and
   * memory statistics.
   */
  info() {
    const rust = JSON.parse(this.#live().info());
    return {
      ...rust,
      loadMs: this.#info.loadMs,
      url: this.#source.url,
      fileBytes: this.#source.size,
      networkBytes: this.#source.stats.networkBytes,
      cacheBytes: this.#source.stats.cacheBytes,
      requests: this.#source.stats.requests,
      // wasm memory only grows: its size now is the peak so far.
      wasmMemoryBytes: this.#wasm.memory.buffer.byteLength,
    };
  }

  /** prompt: { messages } | { text } | { tokens }; options: { max_tokens, stop, sampling }. */
  async generate(prompt, options, onText) {
    const r = await this.#live().generate(JSON.stringify(prompt), JSON.stringify(options), onText);
    return JSON.parse(r);
  }

  /** request: { input, encoding_format, dimensions, truncate } (src/web/embeddings.rs reads it,
   * the library checks it); resolves to OpenAI's embeddings list without `model`. */
  async embed(request) {
    return JSON.parse(await this.#live().embed(JSON.stringify(request)));
  }

  /** options: { nPrompt, nGen, nDepth, repetitions, warmup } (src/web/wasm.rs checks them);
   * onRun({ test, run, runs, tokensPerSecond }) after each repetition. */
  async bench(options, onRun = () => {}) {
    // a length or a list of lengths (one test per value); the wasm side takes lists
    const o = { ...options };
    for (const k of ['nPrompt', 'nGen', 'nDepth']) if (typeof o[k] === 'number') o[k] = [o[k]];
    const r = await this.#live().bench(JSON.stringify(o), (test, run, runs, tokensPerSecond) => {
      try {
        onRun({ test, run, runs, tokensPerSecond });
      } catch {
        // a throwing callback must not break the measurement
      }
    });
    return JSON.parse(r);
  }

  tokenize(prompt) {
    return Array.from(this.#live().tokenize(JSON.stringify(prompt)));
  }

  reset() {
    this.#live().reset();
  }

  unload() {
    if (!this.#engine) return;
    this.#engine.unload();
    this.#engine.free();
    this.#engine = null;
  }
}
