// A typed browser app against flint-llm's declarations (index.d.ts), written as a TypeScript user
// would. It is never run: tests/web/bundle.mjs type-checks it (tsc --noEmit --strict, with
// skipLibCheck off so index.d.ts itself is checked too) against the packed, installed package.
// Each `@ts-expect-error` line must fail to type-check: tsc reports an unused one, so these
// prove the declarations reject what index.js rejects.
import {
  createEngine,
  deleteCachedModel,
  Engine,
  type BenchReport,
  type ChatCompletion,
  type ChatCompletionChunk,
  type ChatMessage,
  type CreateEngineOptions,
  type EngineInfo,
  type LoadProgress,
  type ResponseFormat,
  type Timings,
  type Tool,
  type ToolCall,
} from 'flint-llm';

const out = (s: string) => document.body.append(s);

// Loading: options, progress, abort.
const loadAbort = new AbortController();
const options: CreateEngineOptions = {
  model: '/models/SmolLM2-135M-Instruct.Q4_1.gguf',
  onProgress: ({ loaded, total, networkBytes, cacheBytes, requests }: LoadProgress) =>
    out(`${loaded}/${total} (${networkBytes} net, ${cacheBytes} cache, ${requests} requests)`),
  ctx: 2048,
  kvCache: 'q16',
  kernels: 'auto',
  sampleOn: 'gpu',
  signal: loadAbort.signal,
};
const engine: Engine = await createEngine(options);
const fromFile = await createEngine({ model: new Blob([]), worker: false, cache: false });
await fromFile.unload();
const fromUrl = await createEngine({ model: new URL('https://example.com/m.gguf'), workerUrl: new URL('./w.js', import.meta.url) });
await fromUrl.unload();

// @ts-expect-error: `model` is a URL, Blob or path, not a number
await createEngine({ model: 42 });
// @ts-expect-error: no f8 KV cache
await createEngine({ model: 'm.gguf', kvCache: 'f8' });
// @ts-expect-error: `model` is required
await createEngine({ ctx: 512 });

const info: EngineInfo = await engine.info();
const layout: 'gpu' | 'cpu' = info.caps.kernelLayout;
out(`${info.adapter} ${layout} ${info.kernels.join(',')} ${info.model.kind} ${info.model.embedding?.dimensions ?? '-'}`);
const name: string = engine.model;
out(`${engine instanceof Engine}`);

// Chat, whole: the answer's message goes back into the conversation as it is.
const messages: ChatMessage[] = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: [{ type: 'text', text: 'Hello' }] },
];
const reply: ChatCompletion = await engine.chat.completions.create({
  messages,
  max_tokens: 64,
  temperature: 0.7,
  top_p: 0.9,
  seed: 1,
  stop: ['\n\n'],
  logit_bias: { '42': -100 },
  speculative: { mode: 'ngram', draft_max: 8 },
});
const choice = reply.choices[0];
const text: string | null = choice.message.content;
const why: 'stop' | 'length' | 'tool_calls' = choice.finish_reason;
const ids: number[] = choice.token_ids;
messages.push(choice.message, { role: 'user', content: 'More.' });
const t: Timings = reply.timings;
out(`${name} ${text} ${why} ${ids.length} ${t.predicted_per_second} tok/s, ${t.draft_n_accepted}/${t.draft_n} drafted`);
out(`${reply.usage.prompt_tokens} + ${reply.usage.completion_tokens} = ${reply.usage.total_tokens}`);

// @ts-expect-error: temperature is a number
await engine.chat.completions.create({ messages, temperature: '0.5' });
// @ts-expect-error: only n = 1
await engine.chat.completions.create({ messages, n: 2 });
// @ts-expect-error: a user message has content (only an assistant message may have none)
await engine.chat.completions.create({ messages: [{ role: 'user', content: null }] });
// @ts-expect-error: llama.cpp's name is predicted_per_second
out(String(reply.timings.predicted_tps));

// Chat, streamed: for await over chunks, with usage, and an abort signal.
const ac = new AbortController();
const stream = await engine.chat.completions.create(
  { messages, stream: true, stream_options: { include_usage: true } },
  { signal: ac.signal },
);
let streamed = '';
for await (const chunk of stream) {
  const c: ChatCompletionChunk = chunk;
  streamed += c.choices[0]?.delta.content ?? '';
  if (c.choices[0]?.finish_reason) out(`${c.timings?.predicted_ms} ms`);
  if (c.usage) out(`${c.usage.total_tokens} tokens`);
  if (streamed.length > 1000) break;
}
stream.controller.abort();
// @ts-expect-error: a stream has no choices (iterate it)
out(String(stream.choices));

// A stream decided at run time: the union, narrowed by the caller.
const maybe = await engine.chat.completions.create({ messages, stream: Math.random() < 0.5 });
if (Symbol.asyncIterator in maybe) {
  for await (const chunk of maybe) out(chunk.choices[0]?.delta.content ?? '');
} else {
  out(maybe.choices[0].message.content ?? '');
}

// Aborting: the request rejects with an Error named AbortError.
try {
  await engine.chat.completions.create({ messages, signal: AbortSignal.timeout(1000) });
} catch (e) {
  if (e instanceof Error && e.name === 'AbortError') out('aborted');
  else if (e instanceof TypeError) out(`bad request: ${e.message}`);
  else throw e;
}

// response_format: JSON that validates against a schema.
const format: ResponseFormat = {
  type: 'json_schema',
  json_schema: { name: 'city', schema: { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] }, strict: true },
};
const json = await engine.chat.completions.create({ messages, response_format: format, temperature: 0 });
const city = JSON.parse(json.choices[0].message.content ?? '{}') as { name: string };
await engine.chat.completions.create({ messages, response_format: { type: 'json_object' } });
out(city.name);
// @ts-expect-error: json_schema needs its `json_schema` object
await engine.chat.completions.create({ messages, response_format: { type: 'json_schema' } });

// Tools: calls, their answers sent back as tool messages; streamed call deltas.
const tools: Tool[] = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    strict: true,
  },
}];
const called = await engine.chat.completions.create({ messages, tools, tool_choice: 'required', parallel_tool_calls: false });
const calls: ToolCall[] = called.choices[0].message.tool_calls ?? [];
if (called.choices[0].finish_reason === 'tool_calls') {
  messages.push(called.choices[0].message);
  for (const call of calls) {
    const args = JSON.parse(call.function.arguments) as { city: string };
    messages.push({ role: 'tool', tool_call_id: call.id, name: call.function.name, content: `sunny in ${args.city}` });
  }
  const answer = await engine.chat.completions.create({ messages, tools });
  out(answer.choices[0].message.content ?? '');
}
// An assistant message with calls and no content, as OpenAI clients write it.
messages.push({ role: 'assistant', tool_calls: calls });
await engine.chat.completions.create({ messages, tools, tool_choice: { type: 'function', function: { name: 'get_weather' } } });
const toolStream = await engine.chat.completions.create({ messages, tools, stream: true });
const argText = new Map<number, string>();
for await (const chunk of toolStream) {
  for (const d of chunk.choices[0]?.delta.tool_calls ?? []) {
    if (d.id) out(`call ${d.id}: ${d.function.name}`);
    argText.set(d.index, (argText.get(d.index) ?? '') + d.function.arguments);
  }
}
// @ts-expect-error: no such tool_choice
await engine.chat.completions.create({ messages, tools, tool_choice: 'sometimes' });

// Completions: text or token ids, whole and streamed.
const done = await engine.completions.create({ prompt: 'The capital of France is', max_tokens: 8, temperature: 0 });
out(done.choices[0].text + done.timings.prompt_per_second);
for await (const chunk of await engine.completions.create({ prompt: [1, 2, 3], stream: true })) out(chunk.choices[0]?.text ?? '');
// @ts-expect-error: a prompt is text or token ids
await engine.completions.create({ prompt: [{ text: 'x' }] });

// Tokens, benchmark, reset.
const promptIds: number[] = await engine.tokenize({ messages });
const textIds: number[] = await engine.tokenize({ prompt: 'Hello' });
const bench: BenchReport = await engine.bench({
  nPrompt: 64, nGen: [16, 32], repetitions: 2, warmup: false,
  onRun: ({ test, run, runs, tokensPerSecond }) => out(`${test} ${run}/${runs}: ${tokensPerSecond}`),
});
out(`${promptIds.length} ${textIds.length} ${bench.tests[0]?.median_tps} ${bench.roofline_ratio ?? 'no decode test'}`);
await engine.reset();
await engine.unload();

// Embeddings: numbers by default, base64 strings on request.
const embedder = await createEngine({ model: '/models/all-MiniLM-L6-v2-f16.gguf' });
const vectors = await embedder.embeddings.create({ input: ['The cat sleeps.', 'A dog barks.'], dimensions: 256, truncate: true });
const first: number[] = vectors.data[0].embedding;
const b64 = await embedder.embeddings.create({ input: [[101, 102]], encoding_format: 'base64' });
const packed: string = b64.data[0].embedding;
out(`${first.length} ${packed.length} ${vectors.usage.prompt_tokens} ${vectors.model}`);
// @ts-expect-error: base64 vectors are strings, not numbers
const wrong: number[] = b64.data[0].embedding;
// @ts-expect-error: input is text or token ids
await embedder.embeddings.create({ input: [{ text: 'a' }] });
await embedder.unload();

const forgot: boolean = await deleteCachedModel('/models/SmolLM2-135M-Instruct.Q4_1.gguf');
out(`${forgot} ${wrong.length}`);
