#!/usr/bin/env node
// Streams a large body up and a large body down through a real nginx to a
// createServer() application in a child process, and prints the time taken
// and the application's memory (RSS peak over its baseline after warm-up).
// test/http/streaming.test.ts does the same with a smaller size.
//
//   node scripts/stream-rss.mjs [--mib 1024] [--limit-mib 64] [--json]
//
// Needs nginx (bash scripts/setup.sh --test). Runs the TypeScript sources
// (bundled with esbuild into a temporary directory), not dist/.
// Exit status 1 when a hash differs or the RSS growth reaches the limit.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

import { buildSync } from 'esbuild'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && process.argv[i + 1] !== undefined ? Number(process.argv[i + 1]) : fallback
}
const sizeMiB = option('mib', 1024)
const limitMiB = option('limit-mib', 64)
const asJson = process.argv.includes('--json')

const work = mkdtempSync(path.join(tmpdir(), 'stream-rss-'))
const common = { bundle: true, platform: 'node', format: 'esm', target: 'node20', logLevel: 'silent' }
// The application: src/native.ts finds the addon from import.meta.url.
const appBundle = path.join(work, 'streaming-app.mjs')
buildSync({
  ...common,
  entryPoints: [path.join(ROOT, 'test/http/fixtures/streaming-app.ts')],
  outfile: appBundle,
  define: { 'import.meta.url': JSON.stringify(pathToFileURL(path.join(ROOT, 'src/native.ts')).href) },
})
// The driver: nginx starter, streaming client, wait utilities.
const driverBundle = path.join(work, 'driver.mjs')
buildSync({
  ...common,
  stdin: {
    contents: ['streaming', 'nginx', 'wait'].map((m) => `export * from ${JSON.stringify(path.join(ROOT, `test/helpers/${m}.ts`))}`).join('\n'),
    resolveDir: ROOT,
    loader: 'ts',
  },
  outfile: driverBundle,
})
const { startStreamingApp, uploadStream, downloadStream, startNginx, stopAllNginx, tmpSocketPath, MiB } = await import(pathToFileURL(driverBundle).href)

const size = sizeMiB * MiB
const timeoutMs = Math.max(120_000, sizeMiB * 500)
const socketPath = tmpSocketPath('stream-rss')
const app = await startStreamingApp(appBundle, socketPath)
const rows = []
let failed = false

const cases = [
  { name: 'upload', what: 'upload', requestBuffering: false, buffering: false },
  { name: 'download, fastcgi_buffering off', what: 'download', requestBuffering: false, buffering: false },
  { name: 'download, fastcgi_buffering on', what: 'download', requestBuffering: false, buffering: true },
]

try {
  for (const c of cases) {
    const nginx = await startNginx({
      upstream: { path: socketPath },
      keepConn: true,
      clientMaxBodySize: '0',
      requestBuffering: c.requestBuffering,
      buffering: c.buffering,
      upstreamTimeout: '300s',
      // buffering on: nginx may spool the whole response to a temp file
      extraLocation: c.buffering ? '            fastcgi_max_temp_file_size 0;' : undefined,
    })
    try {
      const run = async (bytes) => {
        if (c.what === 'upload') {
          const r = await uploadStream(`${nginx.url}/upload`, bytes, timeoutMs)
          await app.next('uploaded', 10_000)
          return { ok: r.status === 200 && r.answer.bytes === bytes && r.answer.sha256 === r.sha256, ms: r.ms, status: r.status }
        }
        const r = await downloadStream(`${nginx.url}/download?size=${bytes}`, timeoutMs)
        const sent = await app.next('downloaded', 10_000)
        return { ok: r.status === 200 && r.bytes === bytes && sent.complete && r.sha256 === sent.sha256, ms: r.ms, status: r.status }
      }
      await run(32 * MiB) // warm-up
      const baseline = await app.baseline()
      const t0 = Date.now()
      const r = await run(size)
      await new Promise((resolve) => setTimeout(resolve, 250)) // one more sample or two
      const peak = app.peakSince(t0)
      const growth = peak - baseline
      const row = {
        case: c.name,
        MiB: sizeMiB,
        ok: r.ok,
        status: r.status,
        seconds: +(r.ms / 1000).toFixed(2),
        'MiB/s': +(sizeMiB / (r.ms / 1000)).toFixed(1),
        baselineMiB: +(baseline / MiB).toFixed(1),
        peakMiB: +(peak / MiB).toFixed(1),
        growthMiB: +(growth / MiB).toFixed(1),
        nginxErrors: nginx.errorLogProblems().length,
      }
      rows.push(row)
      if (!r.ok || growth >= limitMiB * MiB) failed = true
    } finally {
      await nginx.stop()
    }
  }
} finally {
  await app.stop()
  await stopAllNginx()
  rmSync(work, { recursive: true, force: true })
}

if (asJson) console.log(JSON.stringify(rows, null, 2))
else {
  console.log(`stream-rss: ${sizeMiB} MiB each way through nginx (fastcgi_keep_conn on, client_max_body_size 0, fastcgi_request_buffering off), app RSS growth limit ${limitMiB} MiB`)
  console.table(rows)
}
process.exit(failed ? 1 : 0)
