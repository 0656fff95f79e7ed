/**
 * Child processes that run the library's TypeScript sources (not dist/):
 * bundleChild() compiles a TypeScript entry (and what it imports from src/
 * and test/helpers/, npm packages included) into one ES module in a temporary
 * directory with esbuild (vitest's own dependency).
 *
 * src/native.ts finds the addon (build/Release/fcgi.node, via node-gyp-build)
 * from `import.meta.url`; in the bundle every `import.meta.url` is replaced by
 * the URL of src/native.ts, so the child loads the same addon as the tests.
 * Entries must therefore not use import.meta.url themselves.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { buildSync } from 'esbuild';

import { registerExitCleanup } from './wait.js';

/** Repository root. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

const dirs = new Set<string>();

/** Bundles `entry` (absolute path of a .ts file); returns the path of the .mjs to run with node. */
export function bundleChild(entry: string): string {
  if (dirs.size === 0) {
    registerExitCleanup(() => {
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
      dirs.clear();
    });
  }
  const dir = mkdtempSync(join(tmpdir(), 'fcgi-child-'));
  dirs.add(dir);
  const outfile = join(dir, `${basename(entry, '.ts')}.mjs`);
  buildSync({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile,
    define: { 'import.meta.url': JSON.stringify(pathToFileURL(join(ROOT, 'src/native.ts')).href) },
    logLevel: 'silent',
  });
  return outfile;
}
