// Shared by the web tests: paths, the fixture, the tools installed by scripts/setup-web.sh.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const MODEL_PATH = '/models/SmolLM2-135M-Instruct.Q4_1.gguf';
export const FIXTURE = JSON.parse(readFileSync(new URL('../fixtures/web/greedy.json', import.meta.url)));
export const OUT = `${ROOT}target/web-test`;
/** A short system message: the template's default one would add ~20 tokens to every prefill,
 * and prefill is slow on software WebGPU. */
export const SYSTEM = { role: 'system', content: 'Be brief.' };

/** The embedding fixture (tests/fixtures/embed/README.md): a tiny random BERT converted by
 * llama.cpp (32 dimensions, CLS pooling, at most 64 tokens), and the cases (texts, ids) of its expected.json. */
export const EMBED_PATH = '/tests/fixtures/embed/tiny-bert/tiny-bert-f32.gguf';
export const EMBED_CASES = JSON.parse(readFileSync(new URL('../fixtures/embed/tiny-bert/expected.json', import.meta.url))).cases;
export const EMBED_TEXTS = EMBED_CASES.map((c) => c.text);

/** The native engine's OpenAI embeddings response for `texts` on the embedding fixture:
 * `target/release/flint embed -m FIXTURE --json [args] -- TEXT...` (built by `cargo build --release`),
 * run now rather than committed, on the machine's own adapter. */
export function nativeEmbeddings(texts, args = []) {
  const flint = `${ROOT}target/release/flint`;
  if (!existsSync(flint)) throw new Error(`${flint} is missing: run cargo build --release`);
  const env = { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp' };
  delete env.VK_ICD_FILENAMES; // Node's Dawn wants SwiftShader; the CLI takes the machine's default
  const out = execFileSync(flint, ['embed', '-m', ROOT + EMBED_PATH.slice(1), '--json', '--quiet', ...args, '--', ...texts],
    { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return JSON.parse(out);
}

/** Largest absolute difference between two vectors (Infinity if their lengths differ). */
export function maxDiff(a, b) {
  if (a.length !== b.length) return Infinity;
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
}

const tools = createRequire(`${ROOT}target/web-tools/node/package.json`);
/** Imports an npm package from target/web-tools/node (installed by scripts/setup-web.sh). */
export function importTool(name) {
  return import(pathToFileURL(tools.resolve(name)).href);
}

let failures = 0;
/** Records a check; the process exits non-zero at the end if any failed. */
export function check(ok, what, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${detail ? `: ${detail}` : ''}`);
  if (!ok) failures++;
}
export function done(summary) {
  console.log(`SUMMARY ${JSON.stringify(summary)}`);
  if (failures) {
    console.log(`${failures} check(s) failed`);
    process.exit(1);
  }
}
export function sameIds(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
