#!/usr/bin/env node
// `flint bench` for the web build: the npm package (pkg/, after scripts/build-web.sh) in Node with
// the `webgpu` package (Dawn, installed by scripts/setup-web.sh), running engine.bench(), which is
// the native bench's code compiled to wasm (src/bench.rs). Prints the same table, or with --json
// the same report, so the web path's figures compare with `flint bench` on the same machine.
//
//   node scripts/bench-web.mjs [-m MODEL.gguf] [-p 512] [-n 128] [-d 0] [-r 5] [--ctx N] [--batch N]
//   (-p, -n, -d take comma-separated lists, as llama-bench's do: one test per value)
//       [--kernels auto|gpu|cpu] [--kv-cache f32|f16|q16] [--sample-on auto|gpu|cpu] [--json]
//
// Dawn uses the Vulkan driver the loader finds: on a machine without a GPU, pick one with
// VK_ICD_FILENAMES. Chromium's SwiftShader (/usr/lib/chromium/vk_swiftshader_icd.json) works on
// Debian 12; Debian 12's lavapipe (Mesa 22) lacks a feature Dawn requires, Mesa 26's lavapipe in
// the sid root works, next to `flint bench` on the same adapter (nodejs from sid's apt):
//   scripts/in-sid.sh bash -c 'VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/lvp_icd.json node scripts/bench-web.mjs'
// (process.exit in die() skips the unload: the process ends anyway.)
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const opt = { model: `${ROOT}models/SmolLM2-135M-Instruct.Q4_1.gguf`, p: [512], n: [128], d: [0], r: 5, json: false };
const load = {};
const flags = {
  '-m': (v) => { opt.model = v; },
  '-p': (v) => { opt.p = counts(v, '-p'); },
  '-n': (v) => { opt.n = counts(v, '-n'); },
  '-d': (v) => { opt.d = counts(v, '-d'); },
  '-r': (v) => { opt.r = count(v, '-r'); },
  '--ctx': (v) => { load.ctx = count(v, '--ctx'); },
  '--batch': (v) => { load.batch = count(v, '--batch'); },
  '--kernels': (v) => { load.kernels = v; },
  '--kv-cache': (v) => { load.kvCache = v; },
  '--sample-on': (v) => { load.sampleOn = v; },
};

function die(message) {
  console.error(`bench-web: error: ${message}`);
  process.exit(2);
}
function count(v, flag) {
  if (!/^\d+$/.test(v ?? '')) die(`${flag} takes a non-negative integer, not ${JSON.stringify(v)}`);
  return Number(v);
}
/** llama-bench's lists: `-p 128,512`. */
function counts(v, flag) {
  return String(v ?? '').split(',').map((x) => count(x, flag));
}

for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--json') opt.json = true;
  else if (a === '-h' || a === '--help') {
    console.log('usage: node scripts/bench-web.mjs [-m MODEL.gguf] [-p 512] [-n 128] [-d 0] [-r 5] [--ctx N] [--batch N] ' +
      '[--kernels auto|gpu|cpu] [--kv-cache f32|f16|q16] [--sample-on auto|gpu|cpu] [--json]');
    process.exit(0);
  } else if (flags[a]) flags[a](args[++i]);
  else die(`unknown argument ${a} (see --help)`);
}

// The package and `webgpu` where scripts/build-web.sh and scripts/setup-web.sh put them.
const tools = createRequire(`${ROOT}target/web-tools/node/package.json`);
try {
  tools.resolve('webgpu');
} catch {
  die('the `webgpu` npm package is missing: run scripts/setup-web.sh');
}
const { createEngine } = await import(pathToFileURL(`${ROOT}pkg/index.js`).href);
const webgpu = await import(pathToFileURL(tools.resolve('webgpu')).href);
Object.assign(globalThis, webgpu.globals);

const most = (v) => Math.max(...v);
const need = most(opt.d) + Math.max(most(opt.p), most(opt.n) + 1);
let engine;
try {
  engine = await createEngine({
    model: opt.model, worker: false, gpu: webgpu.create([]), ...load, ctx: Math.max(need, load.ctx ?? 0),
  });
} catch (e) {
  die(`${e.message} (Dawn skips Vulkan drivers it cannot use, e.g. Debian 12's lavapipe: try ` +
    'VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json, or Mesa 26 in the sid root)');
}
try {
  const report = await engine.bench({
    nPrompt: opt.p, nGen: opt.n, nDepth: opt.d, repetitions: opt.r,
    onRun: ({ test, run, runs, tokensPerSecond }) => {
      console.error(`flint-web: ${test} run ${run}/${runs}: ${tokensPerSecond.toFixed(2)} tok/s`);
    },
  });
  report.flint_version += ` (wasm32, node ${process.version}, webgpu npm package)`;
  if (opt.json) {
    console.log(JSON.stringify(report, null, 2));
  } else {
    const mib = (b) => (b / 2 ** 20).toFixed(2);
    console.log('| model | size | params | backend | adapter | test | t/s min | t/s median | t/s max | ' +
      'host us/tok | submit us/tok | dispatches/tok | bind groups/tok |');
    console.log('| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const t of report.tests) {
      console.log(`| ${report.architecture} ${report.quant} | ${mib(report.model_bytes)} MiB | ` +
        `${(report.params / 1e6).toFixed(2)} M | ${report.backend} | ${report.adapter} | ${t.test} | ` +
        `${t.min_tps.toFixed(2)} | ${t.median_tps.toFixed(2)} | ${t.max_tps.toFixed(2)} | ` +
        `${t.host_us_per_token.toFixed(1)} | ${t.submit_us_per_token.toFixed(1)} | ` +
        `${t.dispatches_per_token.toFixed(1)} | ` +
        `${t.bind_groups_per_token.toFixed(2)} |`);
    }
    console.log(`\nbatch ${report.batch}, context ${report.ctx}, ${report.repetitions} repetitions, ` +
      `${report.kernel_layout} kernel layout, ${report.kv_cache} KV cache, ${report.matmul} prefill matmul, ` +
      `sampling on the ${report.sampling}; ${report.flint_version}`);
    console.log(`copy bandwidth (shaders/copy.wgsl, ${mib(report.copy_bytes)} MiB, read + write): ` +
      `${report.copy_gbps.toFixed(2)} GB/s`);
    if (report.roofline_ratio != null) {
      console.log(`decode weight streaming: ${mib(report.decode_weight_bytes_per_token)} MiB/token x median tok/s = ` +
        `${report.decode_weight_gbps.toFixed(2)} GB/s = ${(report.roofline_ratio * 100).toFixed(1)}% of copy ` +
        `bandwidth (roofline ratio ${report.roofline_ratio.toFixed(3)})`);
    }
  }
} catch (e) {
  die(e.message);
} finally {
  await engine.unload();
}
