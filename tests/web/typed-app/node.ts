// flint-llm in a typed Node program (never run; tests/web/bundle.mjs type-checks it with
// tsconfig.node.json: NodeNext resolution, @types/node, no DOM library).
import { createEngine, type Completion } from 'flint-llm';

const engine = await createEngine({
  model: './SmolLM2-135M-Instruct.Q4_1.gguf', // a file path in Node
  worker: false,
  signal: AbortSignal.timeout(60_000),
  onProgress: (p) => process.stderr.write(`${p.loaded}/${p.total}\r`),
});
const r: Completion = await engine.completions.create({ prompt: 'The capital of France is', max_tokens: 8, temperature: 0 });
process.stdout.write(`${r.choices[0].text} (${r.timings.predicted_per_second.toFixed(1)} tok/s)\n`);
const stream = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], stream: true });
for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta.content ?? '');
// @ts-expect-error: `gpu` is any GPU object, but `worker` is a boolean
await createEngine({ model: './m.gguf', gpu: {}, worker: 'no' });
await engine.unload();
