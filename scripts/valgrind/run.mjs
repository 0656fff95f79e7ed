#!/usr/bin/env node
// Leak check of the addon under valgrind (`npm run test:valgrind`): runs the
// low-level accept-loop app (scripts/valgrind/loop-app.mjs, dist/ and the
// normal build/Release/fcgi.node) under memcheck, drives N requests of mixed
// kinds through it with the tests' FastCGI client, stops the app cleanly
// (socket closed, loops ended, natural exit) and reads valgrind's report.
//
// Request kinds, in rotation: hello (new connection each), hello x3 on one
// keep_conn connection, a 64 KiB response, a 256 KiB upload, a stderr line,
// a client that closes mid-upload, FCGI_ABORT_REQUEST mid-upload, and a
// client that closes before reading its 64 KiB response.
//
// Verdict: the "definitely lost" and "indirectly lost" leak records whose
// allocation stack has a frame of ours (fcgi.node: the addon and the libfcgi
// linked into it) and the memcheck errors (invalid reads/writes, uses of
// uninitialised values...) with a frame of ours. Leak records of Node/V8
// alone are suppressed by scripts/valgrind/node.supp (kept to allocations made
// directly by the node binary); whatever else is left is listed, not counted.
// Exit status 1 when anything of ours is found.
//
// usage: node scripts/valgrind/run.mjs [--requests 2000] [--concurrency 4] [--keep-log]
// valgrind is slow (Node runs ~20-50x slower under it): 2,000 requests take a few minutes.
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

import { buildSync } from 'esbuild'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 && args[i + 1] !== undefined ? Number(args[i + 1]) : dflt
}
const REQUESTS = opt('requests', 2000)
const CONCURRENCY = opt('concurrency', 4)
const KEEP_LOG = args.includes('--keep-log')
// Bounds: valgrind's start (Node's startup under memcheck), each request, the exit and leak check.
const START_MS = 120_000
const REQUEST_MS = 60_000
const EXIT_MS = 300_000

if (spawnSync('valgrind', ['--version']).status !== 0) {
  console.error('valgrind: not installed (apt-get install valgrind)')
  process.exit(2)
}
if (!fs.existsSync(path.join(ROOT, 'dist/index.js'))) {
  console.error('valgrind: dist/ is missing (npx tsup)')
  process.exit(2)
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'libfcgi-valgrind-'))
const clientBundle = path.join(work, 'client.mjs')
buildSync({
  entryPoints: [path.join(ROOT, 'test/helpers/fcgi-client.ts')],
  bundle: true, platform: 'node', format: 'esm', target: 'node20', logLevel: 'silent', outfile: clientBundle,
})
const fc = await import(pathToFileURL(clientBundle).href)
const sock = path.join(work, 'app.sock')
const logFile = path.join(work, 'valgrind.log')

const vgArgs = [
  '--tool=memcheck', '--leak-check=full',
  '--show-leak-kinds=definite,indirect,possible', '--errors-for-leak-kinds=definite,indirect',
  `--suppressions=${path.join(ROOT, 'scripts/valgrind/node.supp')}`,
  '--num-callers=30', `--log-file=${logFile}`, '-v',
]
const LOOPS = CONCURRENCY * 2
const app = spawn('valgrind', [...vgArgs, process.execPath, path.join(ROOT, 'scripts/valgrind/loop-app.mjs'), sock, String(LOOPS)], {
  cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], detached: true,
})
const killApp = () => { try { process.kill(-app.pid, 'SIGKILL') } catch {} }
process.on('exit', killApp)

function withTimeout(p, ms, what) {
  let t
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms) })]).finally(() => clearTimeout(t))
}
const message = (pred) => new Promise((resolve, reject) => {
  const on = (m) => { if (pred(m)) { app.off('message', on); resolve(m) } }
  app.on('message', on)
  app.once('exit', (code, sig) => reject(new Error(`the app exited (${code ?? sig}); see ${logFile}`)))
})

const t0 = Date.now()
await withTimeout(message((m) => m === 'ready'), START_MS, 'the app to start under valgrind')
console.log(`valgrind: app up under memcheck after ${((Date.now() - t0) / 1000).toFixed(1)} s; ${REQUESTS} requests, ${CONCURRENCY} at a time`)

const target = { path: sock }
const UPLOAD = Buffer.alloc(256 * 1024, 'u')
const params = (uri, body) => fc.defaultParams({ REQUEST_URI: uri }, body)
function expectOk(res, what, bodyCheck) {
  const r = fc.parseCgiResponse(res.stdout)
  if (r.status !== 200 || (bodyCheck && !bodyCheck(r.body))) throw new Error(`${what}: status ${r.status}, ${r.body.length} bytes`)
}
// Sends a request's head and part of its body, then ends it the given way.
async function aborted(how) {
  const conn = await fc.FcgiConnection.connect(target, REQUEST_MS)
  try {
    await conn.write(Buffer.concat([fc.encodeBeginRequest(1, fc.FCGI_RESPONDER, false), fc.encodeParams(1, params('/upload', UPLOAD)),
      fc.encodeRecord(fc.FCGI_STDIN, 1, UPLOAD.subarray(0, 30000))]))
    if (how === 'abort-record') {
      await conn.write(fc.encodeAbort(1))
      await conn.waitClosed(REQUEST_MS)
    }
  } finally { conn.destroy() }
}
const kinds = [
  ['hello', async () => expectOk(await fc.fcgiRequest(target, { params: params('/hello'), timeoutMs: REQUEST_MS }), 'hello')],
  ['keep-conn x3', async () => {
    const conn = await fc.FcgiConnection.connect(target, REQUEST_MS)
    try {
      for (let id = 1; id <= 3; id++) {
        expectOk(await fc.fcgiRequest(target, { params: params('/hello'), keepConn: true, requestId: id, connection: conn, timeoutMs: REQUEST_MS }), 'keep-conn')
      }
    } finally { conn.destroy() }
  }],
  ['64k', async () => expectOk(await fc.fcgiRequest(target, { params: params('/64k'), timeoutMs: REQUEST_MS }), '64k', (b) => b.length === 65536)],
  ['upload 256k', async () => expectOk(await fc.fcgiRequest(target, { params: params('/upload', UPLOAD), stdin: UPLOAD, timeoutMs: REQUEST_MS }), 'upload', (b) => b.toString().trim() === String(UPLOAD.length))],
  ['stderr', async () => expectOk(await fc.fcgiRequest(target, { params: params('/stderr'), timeoutMs: REQUEST_MS }), 'stderr')],
  ['closed mid-upload', () => aborted('close')],
  ['FCGI_ABORT_REQUEST', () => aborted('abort-record')],
  ['closed before reading 64k', async () => {
    const conn = await fc.FcgiConnection.connect(target, REQUEST_MS)
    await conn.write(fc.encodeRequest({ params: params('/64k') }))
    conn.destroy()
  }],
]
const counts = new Map(kinds.map(([k]) => [k, 0]))
let next = 0
let lastPrint = Date.now()
async function worker() {
  while (next < REQUESTS) {
    const i = next++
    const [name, run] = kinds[i % kinds.length]
    await withTimeout(run(), REQUEST_MS, `request ${i} (${name})`)
    counts.set(name, counts.get(name) + 1)
    if (Date.now() - lastPrint > 15000) {
      lastPrint = Date.now()
      console.log(`valgrind: ${next} / ${REQUESTS} requests, ${((Date.now() - t0) / 1000).toFixed(0)} s`)
    }
  }
}
await Promise.all(Array.from({ length: CONCURRENCY }, worker))
console.log(`valgrind: ${REQUESTS} requests done (${[...counts].map(([k, n]) => `${k} ${n}`).join(', ')}); stopping the app`)

const exited = new Promise((resolve) => app.once('exit', (code, sig) => resolve(code ?? sig)))
app.send('stop')
const status = await withTimeout(exited, EXIT_MS, 'the app to exit and valgrind to check leaks')
process.off('exit', killApp)
console.log(`valgrind: app exited (${status}) after ${((Date.now() - t0) / 1000).toFixed(0)} s`)

// ---- the report
const log = fs.readFileSync(logFile, 'utf8')
const lines = log.split('\n').map((l) => l.replace(/^==\d+==\s?/, ''))
// Blocks: a header line, then its "at"/"by" frames.
const blocks = []
for (const line of lines) {
  if (/^\s+(at|by) 0x/.test(line)) { blocks.at(-1)?.frames.push(line.trim()); continue }
  if (line.trim() === '') continue
  blocks.push({ head: line.trim(), frames: [] })
}
const OURS = /fcgi\.node|fcgiapp\.c|os_unix\.c|server\.cc|addon\.cc|listener\.cc/
const isOurs = (b) => b.frames.some((f) => OURS.test(f))
const leakRe = /^([\d,]+) (?:\(([\d,]+) direct, ([\d,]+) indirect\) )?bytes in ([\d,]+) blocks are (definitely|indirectly|possibly) lost/
const possible = []
const num = (s) => Number((s ?? '0').replace(/,/g, ''))
const totals = { ours: { definite: 0, indirect: 0, records: [] }, other: { definite: 0, indirect: 0, records: [] } }
const errors = { ours: [], other: [] }
for (const b of blocks) {
  const m = leakRe.exec(b.head)
  if (m && m[5] === 'possibly') {
    possible.push(b)
  } else if (m) {
    const side = isOurs(b) ? totals.ours : totals.other
    side[m[5] === 'definitely' ? 'definite' : 'indirect'] += num(m[1])
    side.records.push(b)
  } else if (/^(Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|Mismatched free|Source and destination overlap|Argument .* of function)/.test(b.head)) {
    ;(isOurs(b) ? errors.ours : errors.other).push(b)
  }
}
const summary = [...new Set(lines.filter((l) => /definitely lost:|indirectly lost:|possibly lost:|still reachable:|suppressed:|ERROR SUMMARY/.test(l)).map((l) => l.trim()))]
console.log('\nvalgrind LEAK SUMMARY (whole process, after node.supp):')
for (const l of summary) console.log(`  ${l.trim()}`)
const show = (b) => `  ${b.head}\n${b.frames.slice(0, 14).map((f) => `      ${f}`).join('\n')}`
if (totals.other.records.length || errors.other.length) {
  console.log(`\nNot ours (no fcgi.node frame; listed, not counted): ${totals.other.records.length} leak record(s), ${totals.other.definite} B definite, ${totals.other.indirect} B indirect; ${errors.other.length} memcheck error(s)`)
  for (const b of [...totals.other.records, ...errors.other].slice(0, 6)) console.log(show(b))
}
// "Possibly lost" (a pointer into the middle of a block remains) is listed
// for information, not counted: threads still alive at exit show up so.
if (possible.length) {
  console.log(`\nPossibly lost (information, not counted): ${possible.length} record(s)`)
  for (const b of possible) console.log(show(b))
}
console.log(`\nOurs (a frame in fcgi.node): definitely lost ${totals.ours.definite} B, indirectly lost ${totals.ours.indirect} B in ${totals.ours.records.length} record(s); ${errors.ours.length} memcheck error(s)`)
for (const b of [...totals.ours.records, ...errors.ours]) console.log(show(b))
// The one suppression that names an N-API call (node.supp): its blocks must
// stay within one per handle alive at exit (1 server + LOOPS Request slots).
const supp = /used_suppression:\s+\d+ node-napi-external-reference-at-exit .*suppressed: ([\d,]+) bytes in ([\d,]+) blocks/.exec(log)
const externalBlocks = supp ? num(supp[2]) : 0
const externalsOk = externalBlocks <= 1 + LOOPS
console.log(`node.supp node-napi-external-reference-at-exit: ${externalBlocks} block(s) (${supp ? num(supp[1]) : 0} B), handles alive at exit: ${1 + LOOPS}${externalsOk ? '' : ' -- MORE than the handles: a leak of externals'}`)
const clean = totals.ours.records.length === 0 && errors.ours.length === 0 && status === 0 && externalsOk
console.log(clean ? 'valgrind: clean' : 'valgrind: FOUND problems in our code (above)')
if (KEEP_LOG || !clean) console.log(`valgrind: full log ${logFile}`)
else fs.rmSync(work, { recursive: true, force: true })
process.exit(clean ? 0 : 1)
