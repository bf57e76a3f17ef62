// A minimal app that uses flint-llm the way an npm user would: by its package name, bundled by Vite.
import { createEngine } from 'flint-llm';

/** Loads `model` (in the package's Web Worker), generates greedily, returns ids and text. */
window.runGreedy = async (model, prompt, maxTokens) => {
  const t0 = performance.now();
  const engine = await createEngine({ model, ctx: 512 });
  const loadMs = performance.now() - t0;
  const r = await engine.completions.create({ prompt, max_tokens: maxTokens, temperature: 0 });
  const info = await engine.info();
  await engine.unload();
  return { loadMs, ids: r.choices[0].token_ids, text: r.choices[0].text, timings: r.timings ?? null, worker: info.worker };
};
document.querySelector('#status').textContent = 'loaded';
