// The flint chat demo: load a GGUF by URL (progress in bytes), then chat with streamed answers,
// tokens per second and a stop button, and a benchmark of this device (engine.bench(): the native
// `flint bench`'s tests; sizes from the page's query, e.g. ?pp=128&tg=32&reps=3). Everything runs
// in a Web Worker on this device's GPU. With "clock tool" ticked the model is offered a get_time tool
// (OpenAI tool calling) that the page itself runs: a call, its result, then the answer (tool_choice
// from the page's query, ?tool_choice=required to always call it; ?max_tokens=N caps each answer, ?temperature=T).
// Behind `flint serve`, the model field defaults to the model that server runs (/served-model.json).
import { createEngine } from '/pkg/index.js';

const $ = (id) => document.getElementById(id);
const chat = $('chat');
const history = [];
let engine = null;
let running = null; // AbortController of the answer being generated

const mib = (b) => (b / 2 ** 20).toFixed(1);
const rate = (x) => (x >= 10 ? x.toFixed(0) : x.toPrecision(2));

function setState(state) {
  chat.dataset.state = state;
  const ready = state === 'ready';
  $('input').disabled = !engine || state === 'loading';
  $('send').disabled = !ready;
  $('stop').disabled = state !== 'generating';
  $('load').disabled = state === 'loading' || state === 'generating' || state === 'benchmarking';
  $('bench').disabled = !ready;
}

function addMessage(role, text = '') {
  const div = document.createElement('div');
  div.className = `msg ${role}`;
  const span = document.createElement('span');
  span.className = 'text';
  span.textContent = text;
  div.append(span);
  chat.append(div);
  chat.scrollTop = chat.scrollHeight;
  return div;
}

function note(div, text) {
  const n = document.createElement('span');
  n.className = 'note';
  n.textContent = text;
  div.append(n);
}

async function load() {
  const url = $('model').value.trim();
  setState('loading');
  const bar = $('progress');
  bar.hidden = false;
  bar.value = 0;
  try {
    await engine?.unload();
    engine = null;
    const t0 = performance.now();
    engine = await createEngine({
      model: url,
      onProgress: (p) => {
        bar.value = p.total ? p.loaded / p.total : 0;
        const from = p.networkBytes ? `${mib(p.networkBytes)} MiB downloaded` : 'from the cache';
        $('progress-text').textContent = `${mib(p.loaded)} / ${mib(p.total)} MiB on the GPU (${from})`;
      },
    });
    const info = await engine.info();
    $('progress-text').textContent =
      `Loaded ${engine.model} in ${((performance.now() - t0) / 1000).toFixed(1)} s ` +
      `(${mib(info.networkBytes)} MiB downloaded, ${mib(info.cacheBytes)} MiB from the cache).`;
    $('device').textContent = `· ${info.adapter || 'WebGPU'} (${info.backend}${info.caps.shaderF16 ? ', f16' : ''})`;
    $('input').placeholder = 'Type a message';
    history.length = 0;
    chat.replaceChildren();
    setState('ready');
  } catch (e) {
    addMessage('error', `Could not load the model: ${e.message}`);
    setState(engine ? 'ready' : 'idle');
  }
}

/** The page's own tool: the time now in an IANA timezone (the browser's when none is given). */
const CLOCK = {
  type: 'function',
  function: {
    name: 'get_time',
    description: 'Get the current date and time, optionally in an IANA timezone such as Europe/Paris.',
    parameters: {
      type: 'object',
      properties: { timezone: { type: 'string', description: 'IANA timezone name', maxLength: 32 } },
    },
  },
};

function runClock(args) {
  const tz = typeof args.timezone === 'string' && args.timezone ? args.timezone : undefined;
  try {
    return { time: new Date().toLocaleString('en-GB', { timeZone: tz, timeZoneName: 'short' }) };
  } catch {
    return { time: new Date().toLocaleString('en-GB', { timeZoneName: 'short' }), note: `unknown timezone ${tz}` };
  }
}

/**
 * One streamed answer into `out`: returns its text and the tool calls it made (assembled from
 * OpenAI's deltas: the first per call carries id and name, later ones argument text).
 */
async function streamAnswer(request, out, signal) {
  let tFirst = 0;
  let pieces = 0;
  let answer = '';
  const calls = [];
  const stream = await engine.chat.completions.create({ ...request, stream: true }, { signal });
  for await (const chunk of stream) {
    const delta = chunk.choices[0]?.delta ?? {};
    for (const c of delta.tool_calls ?? []) {
      calls[c.index] ??= { id: c.id, type: 'function', function: { name: c.function?.name ?? '', arguments: '' } };
      calls[c.index].function.arguments += c.function?.arguments ?? '';
      out.textContent = `${answer}${answer ? '\n' : ''}${calls.map((k) => `→ ${k.function.name}(${k.function.arguments})`).join('\n')}`;
    }
    if (delta.content) {
      answer += delta.content;
      out.textContent = answer;
      pieces++;
      chat.scrollTop = chat.scrollHeight;
      // Live decode rate: pieces after the first over the time since it came (prefill excluded).
      if (pieces === 1) tFirst = performance.now();
      const secs = (performance.now() - tFirst) / 1000;
      $('stats').textContent = `${pieces} tokens · ${secs > 0 ? rate((pieces - 1) / secs) : '…'} tok/s`;
    }
    if (chunk.timings) {
      const t = chunk.timings;
      $('stats').textContent = `${t.predicted_n} tokens · ${rate(t.predicted_per_second)} tok/s ` +
        `(prompt ${t.prompt_n} tokens at ${rate(t.prompt_per_second)} tok/s)`;
    }
  }
  return { answer, calls };
}

async function send(ev) {
  ev.preventDefault();
  const text = $('input').value.trim();
  if (!text || chat.dataset.state !== 'ready') return;
  $('input').value = '';
  history.push({ role: 'user', content: text });
  addMessage('user', text);
  const div = addMessage('assistant');
  const out = div.querySelector('.text');
  running = new AbortController();
  setState('generating');
  let answer = '';
  let current = div; // the message being written (a stop note goes there)
  const tools = $('tools').checked;
  const q = new URLSearchParams(location.search);
  const choice = q.get('tool_choice') ?? 'auto';
  const num = (key, dflt) => (/^\d+(\.\d+)?$/.test(q.get(key) ?? '') ? Number(q.get(key)) : dflt);
  const base = { max_tokens: num('max_tokens', 512), temperature: num('temperature', 0.7), top_p: 0.95 };
  try {
    let r = await streamAnswer({ ...base, messages: history, ...(tools ? { tools: [CLOCK], tool_choice: choice } : {}) },
      out, running.signal);
    answer = r.answer;
    if (r.calls.length) {
      // Run each call here, give the results back, and let the model answer with them.
      history.push({ role: 'assistant', content: r.answer || null, tool_calls: r.calls });
      for (const call of r.calls) {
        let args = {};
        try { args = JSON.parse(call.function.arguments || '{}'); } catch { /* the grammar makes this valid */ }
        const result = JSON.stringify(runClock(args));
        history.push({ role: 'tool', tool_call_id: call.id, content: result });
        const d = addMessage('tool', `${call.function.name}(${call.function.arguments}) → ${result}`);
        d.dataset.tool = call.function.name;
      }
      const next = addMessage('assistant');
      current = next;
      r = await streamAnswer({ ...base, messages: history, tools: [CLOCK], tool_choice: 'none' },
        next.querySelector('.text'), running.signal);
      answer = r.answer;
    }
    history.push({ role: 'assistant', content: answer });
  } catch (e) {
    if (e.name === 'AbortError') {
      note(current, 'stopped');
      history.push({ role: 'assistant', content: answer });
    } else {
      div.className = 'msg error';
      out.textContent = `Error: ${e.message}`;
      history.pop();
    }
  } finally {
    running = null;
    setState('ready');
  }
}

/** llama-bench's pp/tg tests on this device; the result goes into the conversation as a note. */
async function bench() {
  if (chat.dataset.state !== 'ready') return;
  const q = new URLSearchParams(location.search);
  const size = (key, dflt) => (/^\d+$/.test(q.get(key) ?? '') ? Number(q.get(key)) : dflt);
  const options = { nPrompt: size('pp', 128), nGen: size('tg', 32), repetitions: Math.max(1, size('reps', 3)) };
  setState('benchmarking');
  const div = addMessage('bench', `Measuring pp${options.nPrompt} and tg${options.nGen} ` +
    `(${options.repetitions} runs each after a warm-up)…`);
  try {
    const r = await engine.bench({
      ...options,
      onRun: ({ test, run, runs, tokensPerSecond }) => {
        $('stats').textContent = `${test} run ${run}/${runs}: ${rate(tokensPerSecond)} tok/s`;
      },
    });
    const tests = r.tests.map((t) => `${t.test} ${rate(t.median_tps)} tok/s`).join(' · ');
    const roof = r.roofline_ratio == null ? '' : `; decode streams the weights at ${rate(r.decode_weight_gbps)} GB/s, ` +
      `${(r.roofline_ratio * 100).toFixed(0)}% of the ${rate(r.copy_gbps)} GB/s copy bandwidth`;
    div.querySelector('.text').textContent = `${r.adapter || 'WebGPU'}: ${tests} (median of ${r.repetitions})${roof}.`;
    $('stats').textContent = tests;
  } catch (e) {
    div.className = 'msg error';
    div.querySelector('.text').textContent = `Benchmark failed: ${e.message}`;
  } finally {
    setState('ready');
  }
}

$('load').addEventListener('click', load);
$('bench').addEventListener('click', bench);
$('composer').addEventListener('submit', send);
$('stop').addEventListener('click', () => running?.abort());
$('input').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey) send(ev);
});
if (!navigator.gpu) {
  addMessage('error', 'This browser has no WebGPU (navigator.gpu): try a recent Chrome, Edge or Safari.');
}

// Behind `flint serve`: offer the model it runs (at a URL it serves with Range support), by name.
// Elsewhere (a static server) the request fails and the field keeps its default.
async function offerServedModel() {
  try {
    const r = await fetch('/served-model.json');
    if (!r.ok) return;
    const m = await r.json();
    if (typeof m.url !== 'string' || typeof m.name !== 'string') return;
    $('model').value = m.url;
    const served = $('served');
    served.textContent = `The model this flint serve runs: ${m.name} (${mib(m.bytes)} MiB).`;
    served.hidden = false;
  } catch {
    // not behind flint serve
  }
}
offerServedModel();
