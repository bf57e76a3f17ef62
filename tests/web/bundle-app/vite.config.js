// Vite settings of the fixture app. `worker.format: 'es'`: flint-llm's worker (worker.js) has
// Node-only dynamic imports, so Rollup splits it into chunks, which Vite's default 'iife' worker
// format cannot hold (module workers are what the package starts anyway). `base: './'`: dist/ is
// served from a sub-path by tests/web/bundle.mjs.
export default { base: './', worker: { format: 'es' } };
