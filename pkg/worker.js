// The Web Worker that runs the engine off the page's thread (index.js starts it). Messages in:
// { id, op: 'load' | 'generate' | 'embed' | 'bench' | 'tokenize' | 'info' | 'reset' | 'unload' | 'abort', args };
// out: { id, type: 'progress' | 'text' | 'result' | 'error', ... } (a bench's runs come as progress).

import { Core } from './core.js';

let core = null;
const aborted = new Set();

async function handle(id, op, args) {
  switch (op) {
    case 'load':
      core = await Core.load(args.model, args.options,
        (p) => self.postMessage({ id, type: 'progress', progress: p }));
      return core.info();
    case 'generate':
      return core.generate(args.prompt, args.options, (text) => {
        if (aborted.has(id)) return false;
        self.postMessage({ id, type: 'text', text });
        return true;
      });
    case 'embed':
      return core.embed(args.request);
    case 'bench':
      return core.bench(args.options, (run) => self.postMessage({ id, type: 'progress', progress: run }));
    case 'tokenize':
      return core.tokenize(args.prompt);
    case 'info':
      return core.info();
    case 'reset':
      return core.reset();
    case 'unload':
      core?.unload();
      core = null;
      return null;
    default:
      throw new Error(`unknown operation ${op}`);
  }
}

self.onmessage = async (ev) => {
  const { id, op, args } = ev.data;
  if (op === 'abort') {
    aborted.add(args.target);
    return;
  }
  try {
    if (op !== 'load' && op !== 'unload' && !core) throw new Error('no model is loaded');
    const value = await handle(id, op, args);
    self.postMessage({ id, type: 'result', value });
  } catch (e) {
    self.postMessage({ id, type: 'error', name: e?.name, message: e?.message ?? String(e) });
  } finally {
    aborted.delete(id);
  }
};
