// The npm package as a user gets it: `npm pack` in pkg/, the tarball installed into a fresh npm
// project (target/web-test/bundle-project/) with Vite, the fixture app tests/web/bundle-app/ (which
// imports `flint-llm` by name) built by `vite build`, then in headless Chromium (WebGPU on
// SwiftShader, as tests/web/browser.mjs):
//   1. the bundled build: loads SmolLM2 in the package's Web Worker (bundled by Vite), greedy
//      tokens equal tests/fixtures/web/greedy.json (the native engine's);
//   2. the installed package loaded directly as ES modules (node_modules/flint-llm/index.js, no
//      bundler): the first tokens equal too. (browser.mjs imports pkg/ directly; this checks the
//      files the tarball ships.)
// Before the build, the installed package's declarations (node_modules/flint-llm/index.d.ts) and
// the typed example tests/web/typed-app/ (main.ts, a browser app; node.ts, a Node program) go
// through `tsc --noEmit --strict` with skipLibCheck off, pinned TypeScript and @types/node
// installed with Vite; the example's `@ts-expect-error` lines must fail to type-check.
// npm's cache is target/web-tools/npm-cache (the registry is needed once, for Vite and TypeScript).
//   node tests/web/bundle.mjs     (after scripts/build-web.sh)
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { serve } from './server.mjs';
import { FIXTURE, MODEL_PATH, OUT, ROOT, check, done, importTool, sameIds } from './common.mjs';

const VITE = 'vite@6.3.5';
const TYPESCRIPT = 'typescript@5.9.3';
const NODE_TYPES = '@types/node@20.19.43'; // for typed-app/node.ts (the package's `engines`: node >= 20)
const N_DIRECT = 2; // tokens generated on the direct path (decode on SwiftShader is slow)
const PKG = `${ROOT}pkg`;
const PACK = `${OUT}/pack`;
const PROJECT = `${OUT}/bundle-project`;
const NPM_CACHE = `${ROOT}target/web-tools/npm-cache`;
const summary = { runtime: 'chromium (WebGPU on SwiftShader)', vite: VITE, typescript: TYPESCRIPT };
const t = {};
const since = (t0) => Math.round(performance.now() - t0);
// A watchdog: a hung page fails the run instead of blocking it (a full run takes a few minutes).
setTimeout(() => fail('timed out after 30 minutes'), 30 * 60 * 1000).unref();

function fail(msg) {
  console.error(`bundle: ${msg}`);
  process.exit(1);
}
function run(cmd, args, cwd) {
  try {
    return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    fail(`\`${cmd} ${args.join(' ')}\` failed in ${cwd} (exit ${e.status}):\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

for (const f of JSON.parse(readFileSync(`${PKG}/package.json`, 'utf8')).files) {
  if (!existsSync(`${PKG}/${f}`)) fail(`pkg/${f} is missing: run scripts/build-web.sh first`);
}
if (!existsSync(ROOT + MODEL_PATH.slice(1))) fail(`${MODEL_PATH.slice(1)} is missing (scripts/setup.sh fetches it)`);

// 1. npm pack, a fresh project, npm install of the tarball and Vite, vite build.
let t0 = performance.now();
rmSync(PACK, { recursive: true, force: true });
mkdirSync(PACK, { recursive: true });
const npm = ['--cache', NPM_CACHE, '--no-audit', '--no-fund', '--no-update-notifier'];
run('npm', ['pack', '--pack-destination', PACK, ...npm], PKG);
const tarballs = readdirSync(PACK).filter((f) => f.endsWith('.tgz'));
if (tarballs.length !== 1) fail(`npm pack left ${tarballs.length} tarballs in ${PACK}`);
const tarball = `${PACK}/${tarballs[0]}`;
t.packMs = since(t0);

t0 = performance.now();
rmSync(PROJECT, { recursive: true, force: true });
mkdirSync(PROJECT, { recursive: true });
writeFileSync(`${PROJECT}/package.json`, JSON.stringify({ name: 'flint-bundle-check', private: true, type: 'module' }));
run('npm', ['install', '--prefer-offline', ...npm, tarball, VITE, TYPESCRIPT, NODE_TYPES], PROJECT);
const installed = JSON.parse(readFileSync(`${PROJECT}/node_modules/flint-llm/package.json`, 'utf8'));
summary.package = `${installed.name}@${installed.version} (${tarballs[0]})`;
t.installMs = since(t0);

// The declarations as installed, and the typed example against them: `tsc --noEmit --strict`
// (skipLibCheck off in both tsconfigs, so index.d.ts is checked, not only used).
t0 = performance.now();
cpSync(`${ROOT}tests/web/typed-app`, `${PROJECT}/typed-app`, { recursive: true });
const dts = `${PROJECT}/node_modules/flint-llm/index.d.ts`;
for (const [config, what] of [['tsconfig.json', 'browser app (bundler resolution, DOM)'],
  ['tsconfig.node.json', 'Node program (NodeNext resolution, @types/node, no DOM)']]) {
  const t1 = performance.now();
  let out;
  let ok = true;
  try {
    out = execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', `typed-app/${config}`,
      '--noEmit', '--strict', '--skipLibCheck', 'false', '--pretty', 'false', '--listFiles'],
    { cwd: PROJECT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    ok = false;
    out = `${e.stdout ?? ''}${e.stderr ?? ''}`;
  }
  const errors = out.split('\n').filter((l) => / error TS\d+:|^\s/.test(l)).join('\n');
  check(ok, `tsc --noEmit --strict: index.d.ts as installed and the typed ${what} (typed-app/${config})`,
    ok ? `${since(t1)} ms` : `\n${errors || out}`);
  if (ok) check(out.split('\n').includes(dts), `tsc checked ${dts.slice(ROOT.length)}`);
}
t.tscMs = since(t0);

t0 = performance.now();
cpSync(`${ROOT}tests/web/bundle-app`, PROJECT, { recursive: true });
const build = run(process.execPath, ['node_modules/vite/bin/vite.js', 'build'], PROJECT);
const assets = readdirSync(`${PROJECT}/dist/assets`);
t.viteBuildMs = since(t0);
check(assets.some((f) => f.endsWith('.wasm')), 'vite build emits the wasm module as an asset', assets.join(', '));
check(assets.some((f) => /^worker-.*\.js$/.test(f)), 'vite build bundles the package\'s Web Worker', build.match(/built in .*/)?.[0]);

// 2. Chromium on the built app, then on the installed package's files directly.
const playwright = await importTool('playwright-core');
const { chromium } = playwright.chromium ? playwright : playwright.default;
const ARGS = ['--no-sandbox', '--disable-gpu-sandbox', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--enable-unsafe-webgpu'];
const server = await serve();
const rel = (p) => p.slice(ROOT.length - 1); // path under the served repository root
let browser;
try {
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true, args: ARGS });
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.log(`  [page] ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`  [page error] ${e.message}`));
  page.setDefaultTimeout(0);

  t0 = performance.now();
  await page.goto(`${server.url}${rel(PROJECT)}/dist/index.html`);
  await page.waitForFunction(() => typeof window.runGreedy === 'function', null, { timeout: 60000 });
  const a = await page.evaluate(({ model, prompt, n }) => window.runGreedy(model, prompt, n),
    { model: MODEL_PATH, prompt: FIXTURE.prompt, n: FIXTURE.max_tokens });
  t.bundledMs = since(t0);
  t.bundledLoadMs = Math.round(a.loadMs);
  if (a.timings) summary.decodeTokS = +a.timings.predicted_per_second.toFixed(2);
  check(a.worker === true, 'bundled build: the engine runs in the bundled Web Worker');
  check(sameIds(a.ids, FIXTURE.ids), 'bundled build: greedy ids equal the native engine\'s', JSON.stringify(a.ids));
  check(a.text === FIXTURE.text, 'bundled build: greedy text equals the native engine\'s', JSON.stringify(a.text));

  t0 = performance.now();
  await page.goto(`${server.url}/tests/web/harness.html`);
  const b = await page.evaluate(async ({ pkg, model, prompt, n }) => {
    const { createEngine } = await import(pkg);
    const engine = await createEngine({ model, ctx: 512 });
    const r = await engine.completions.create({ prompt, max_tokens: n, temperature: 0 });
    const info = await engine.info();
    await engine.unload();
    return { ids: r.choices[0].token_ids, worker: info.worker };
  }, { pkg: `${rel(PROJECT)}/node_modules/flint-llm/index.js`, model: MODEL_PATH, prompt: FIXTURE.prompt, n: N_DIRECT });
  t.directMs = since(t0);
  check(b.worker === true && sameIds(b.ids, FIXTURE.ids.slice(0, N_DIRECT)),
    'installed package as plain ES modules (no bundler): worker starts, first tokens equal', JSON.stringify(b.ids));
} catch (e) {
  check(false, 'unexpected error', e?.stack ?? String(e));
} finally {
  await browser?.close();
  await server.close();
}
summary.timingsMs = t;
done(summary);
