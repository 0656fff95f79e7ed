import { defineConfig } from 'tsup'

export default defineConfig({
  // dist/index.{js,cjs} (the library) and dist/cli.js (the `libfcgi` command)
  entry: { index: 'src/index.ts', cli: 'src/cli/main.ts', 'cli-worker': 'src/cli/worker.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  shims: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  outDir: 'dist',
})
