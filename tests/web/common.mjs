// Shared by the web tests: paths, the fixture, the tools installed by scripts/setup-web.sh.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const MODEL_PATH = '/models/SmolLM2-135M-Instruct.Q4_1.gguf';
export const FIXTURE = JSON.parse(readFileSync(new URL('../fixtures/web/greedy.json', import.meta.url)));
export const OUT = `${ROOT}target/web-test`;
/** A short system message: the template's default one would add ~20 tokens to every prefill,
 * and prefill is slow on software WebGPU. */
export const SYSTEM = { role: 'system', content: 'Be brief.' };

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
