// OpenAI tool calling in the npm package, in Node 20 with the `webgpu` package (Dawn; on machines
// without a GPU: VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json). Loads
// Qwen2.5-Coder-0.5B-Instruct (models/, from scripts/setup.sh) from a local file and runs the
// agent loop of tests/openai_tools.py through engine.chat.completions.create: a tool call, the
// tool's result, a final answer, whole and streamed; then tool_choice "none" and bad tool requests.
//   node tests/web/tools.mjs     (after scripts/build-web.sh)
// Not in scripts/test.sh: on the CI machine Dawn's only adapter is SwiftShader (Debian 12's
// lavapipe lacks shaderUniform*ArrayDynamicIndexing, which Dawn requires), where SmolLM2-135M
// decodes at 0.9 tok/s and this 0.5B model's 335-token agent prompt alone would take minutes.
// CI runs the same library paths in Node with SmolLM2 (tests/web/node.mjs: a required call, its
// result back through the template, an answer, response_format, bad tools) and the streamed
// call in Chromium (tests/web/browser.mjs, the demo's clock tool); run this one on a GPU.
import { cpSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { pathToFileURL } from 'node:url';
import { OUT, ROOT, check, done } from './common.mjs';

const MODEL_FILE = `${ROOT}models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf`;

// Install the package the way a user does: pkg/ as node_modules/flint-llm next to `webgpu`.
const app = `${OUT}/tools-app`;
rmSync(app, { recursive: true, force: true });
mkdirSync(`${app}/node_modules`, { recursive: true });
cpSync(`${ROOT}pkg`, `${app}/node_modules/flint-llm`, { recursive: true });
const toolsRequire = createRequire(`${ROOT}target/web-tools/node/package.json`);
const { symlinkSync } = await import('node:fs');
symlinkSync(dirname(toolsRequire.resolve('webgpu/package.json')), `${app}/node_modules/webgpu`);
const appRequire = createRequire(`${app}/index.js`);
const { createEngine } = await import(pathToFileURL(appRequire.resolve('flint-llm')).href);

const GET_WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Get the current weather in a city.',
    parameters: {
      type: 'object',
      properties: {
        location: { type: 'string', description: 'City name, e.g. Paris' },
        unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
      },
      required: ['location'],
    },
  },
};
const GET_TIME = {
  type: 'function',
  function: {
    name: 'get_time',
    description: 'Get the current local time in a timezone.',
    parameters: {
      type: 'object',
      properties: { timezone: { type: 'string', description: 'IANA timezone, e.g. Europe/Paris' } },
      required: ['timezone'],
    },
  },
};
const TOOLS = [GET_WEATHER, GET_TIME];
const SCHEMAS = Object.fromEntries(TOOLS.map((t) => [t.function.name, t.function.parameters]));
const RESULTS = { get_weather: '{"temperature": 18, "unit": "celsius"}', get_time: '{"time": "14:05"}' };
const QUESTION = [{ role: 'user', content: "What's the weather in Paris?" }];
const hasMarkup = (s) => /<\/?tool_call>/.test(s ?? '');

/** The JSON Schema subset the tools above use; returns the first error, or null. */
function schemaError(value, schema, at = '$') {
  const type = Array.isArray(value) ? 'array' : value === null ? 'null' : typeof value;
  if (schema.enum && !schema.enum.some((e) => e === value)) return `${at}: ${JSON.stringify(value)} not in enum`;
  switch (schema.type) {
    case undefined: break;
    case 'integer': if (!Number.isInteger(value)) return `${at}: not an integer`; break;
    case 'number': if (type !== 'number') return `${at}: not a number`; break;
    case 'object': if (type !== 'object') return `${at}: not an object`; break;
    default: if (type !== schema.type) return `${at}: ${type}, not ${schema.type}`;
  }
  if (schema.type === 'object') {
    for (const k of schema.required ?? []) if (!(k in value)) return `${at}: missing ${k}`;
    for (const [k, v] of Object.entries(value)) {
      const sub = schema.properties?.[k];
      if (sub) {
        const e = schemaError(v, sub, `${at}.${k}`);
        if (e) return e;
      } else if (schema.additionalProperties === false) return `${at}: unexpected ${k}`;
    }
  }
  if (schema.type === 'array' && schema.items) {
    for (let i = 0; i < value.length; i++) {
      const e = schemaError(value[i], schema.items, `${at}[${i}]`);
      if (e) return e;
    }
  }
  return null;
}

/** Each call: id call_*, type function, a declared name, arguments JSON valid for its schema. */
function checkCalls(calls, where) {
  check(Array.isArray(calls) && calls.length > 0, `${where}: tool_calls present`, JSON.stringify(calls));
  if (!Array.isArray(calls)) return;
  const ids = new Set(calls.map((c) => c.id));
  check(ids.size === calls.length, `${where}: call ids are distinct`);
  for (const c of calls) {
    check(typeof c.id === 'string' && c.id.startsWith('call_') && c.type === 'function',
      `${where}: call id call_* and type function`, JSON.stringify(c));
    const name = c.function?.name;
    check(name in SCHEMAS, `${where}: ${name} is a declared tool`);
    let args;
    try {
      args = JSON.parse(c.function?.arguments);
    } catch (e) {
      check(false, `${where}: ${name} arguments are JSON`, `${e.message}: ${JSON.stringify(c.function?.arguments)}`);
      continue;
    }
    if (name in SCHEMAS) {
      const err = schemaError(args, SCHEMAS[name]);
      check(err === null, `${where}: ${name}(${c.function.arguments}) fits its schema`, err ?? '');
    }
  }
}

function toolReplies(calls) {
  return calls.map((c) => ({ role: 'tool', tool_call_id: c.id, content: RESULTS[c.function.name] ?? '{}' }));
}

/** Streams a chat completion; assembles content and tool-call deltas the standard way. */
async function streamed(engine, body) {
  const s = await engine.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish = null;
  let usage = null;
  let n = 0;
  const calls = [];
  const problems = [];
  for await (const chunk of s) {
    n++;
    if (chunk.object !== 'chat.completion.chunk') problems.push(`chunk object ${chunk.object}`);
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices ?? []) {
      if (finish) problems.push('a chunk after finish_reason');
      text += c.delta?.content ?? '';
      for (const d of c.delta?.tool_calls ?? []) {
        if (!Number.isInteger(d.index)) problems.push(`delta without index: ${JSON.stringify(d)}`);
        else if (d.index === calls.length) {
          if (!(d.id && d.type === 'function' && d.function?.name)) {
            problems.push(`first delta of call ${d.index} lacks id/type/name: ${JSON.stringify(d)}`);
          }
          calls.push({ id: d.id, type: d.type, function: { name: d.function?.name, arguments: d.function?.arguments ?? '' } });
        } else if (d.index < calls.length) {
          const a = calls[d.index];
          if (d.id && d.id !== a.id) problems.push(`call ${d.index} changed id`);
          if (d.function?.name) problems.push(`call ${d.index} repeats its name`);
          a.function.arguments += d.function?.arguments ?? '';
        } else problems.push(`call index ${d.index} skips ahead of ${calls.length}`);
      }
      finish = c.finish_reason ?? finish;
    }
  }
  check(problems.length === 0, 'streamed chunks follow the OpenAI delta shapes', problems.join('; '));
  check(usage?.completion_tokens > 0, 'streamed usage chunk', JSON.stringify(usage));
  return { text, finish, calls, n };
}

const summary = { runtime: `node ${process.version}`, model: 'qwen2.5-coder-0.5b-instruct-q4_k_m' };
let engine;
try {
  let t = performance.now();
  engine = await createEngine({ model: MODEL_FILE, ctx: 2048 });
  summary.loadMs = Math.round(performance.now() - t);

  // 1. The agent loop, whole responses.
  t = performance.now();
  const messages = [...QUESTION];
  let r = await engine.chat.completions.create({ messages, tools: TOOLS, tool_choice: 'auto', temperature: 0, max_tokens: 64 });
  let c = r.choices[0];
  check(r.object === 'chat.completion' && c.finish_reason === 'tool_calls', 'call turn: finish_reason tool_calls',
    JSON.stringify(c));
  check(c.message.role === 'assistant' && !hasMarkup(c.message.content), 'call turn: no tool-call markup in content',
    JSON.stringify(c.message.content));
  checkCalls(c.message.tool_calls, 'call turn');
  check(c.message.tool_calls?.some((x) => x.function.name === 'get_weather'), 'call turn: get_weather is called');
  summary.callTurnMs = Math.round(performance.now() - t);
  if (c.message.tool_calls?.length) {
    messages.push(c.message, ...toolReplies(c.message.tool_calls));
    r = await engine.chat.completions.create({ messages, tools: TOOLS, temperature: 0, max_tokens: 48 });
    c = r.choices[0];
    check(['stop', 'length'].includes(c.finish_reason) && !c.message.tool_calls?.length,
      'answer turn: finish_reason stop/length, no tool_calls', JSON.stringify(c));
    check(typeof c.message.content === 'string' && c.message.content.trim() !== '' && !hasMarkup(c.message.content),
      'answer turn: a non-empty answer without markup', JSON.stringify(c.message.content));
    summary.answer = c.message.content;
  }
  summary.agentLoopMs = Math.round(performance.now() - t);

  // 2. The same loop streamed.
  t = performance.now();
  const sm = [...QUESTION];
  let s = await streamed(engine, { messages: sm, tools: TOOLS, tool_choice: 'auto', temperature: 0, max_tokens: 64 });
  check(s.finish === 'tool_calls', 'streamed call turn: finish_reason tool_calls', `${s.finish}, ${JSON.stringify(s.text)}`);
  check(!hasMarkup(s.text), 'streamed call turn: no tool-call markup in content', JSON.stringify(s.text));
  checkCalls(s.calls, 'streamed call turn');
  if (s.calls.length) {
    sm.push({ role: 'assistant', content: s.text || null, tool_calls: s.calls }, ...toolReplies(s.calls));
    s = await streamed(engine, { messages: sm, tools: TOOLS, temperature: 0, max_tokens: 48 });
    check(['stop', 'length'].includes(s.finish) && s.calls.length === 0, 'streamed answer: finish_reason stop/length, no calls',
      `${s.finish}, ${JSON.stringify(s.calls)}`);
    check(s.text.trim() !== '' && !hasMarkup(s.text), 'streamed answer: non-empty, no markup', JSON.stringify(s.text));
  }
  summary.streamedLoopMs = Math.round(performance.now() - t);

  // 3. tool_choice "none": text only.
  r = await engine.chat.completions.create({ messages: QUESTION, tools: TOOLS, tool_choice: 'none', temperature: 0, max_tokens: 24 });
  c = r.choices[0];
  check(!c.message.tool_calls?.length && ['stop', 'length'].includes(c.finish_reason) && !hasMarkup(c.message.content),
    'tool_choice none: text, no tool_calls', JSON.stringify(c));

  // 4. Bad tool requests are errors naming the field.
  const bad = async (body, re, what) => {
    try {
      await engine.chat.completions.create({ messages: QUESTION, max_tokens: 1, ...body });
      check(false, what, 'no error');
    } catch (e) {
      check(e instanceof Error && re.test(e.message), what, e.message);
    }
  };
  const { name: _, ...nameless } = GET_WEATHER.function;
  await bad({ tools: [{ type: 'function', function: nameless }] }, /name/, 'a tool without a name is rejected');
  await bad({ tools: [{ type: 'function', function: { ...GET_WEATHER.function, parameters: 'location: string' } }] },
    /parameters/, 'parameters that are not an object are rejected');
  await bad({ tools: TOOLS, tool_choice: { type: 'function', function: { name: 'get_stock_price' } } },
    /tool_choice|get_stock_price/, 'tool_choice naming an undeclared tool is rejected');
  await bad({ tools: TOOLS, messages: [...QUESTION, { role: 'tool', tool_call_id: 'call_nope', content: '{}' }] },
    /tool_call_id/, 'a tool message answering no call is rejected');
  await bad({ tools: GET_WEATHER }, /tools/, 'tools that are not an array are rejected');
} catch (e) {
  check(false, 'unexpected error', e?.stack ?? String(e));
} finally {
  await engine?.unload();
}
done(summary);
