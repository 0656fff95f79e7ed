// The machinery shared by the targets of scripts/valgrind/run.mjs: start an
// app under memcheck, drive request kinds through it with the tests'
// FastCGI client, stop it (the app closes its socket and exits by itself)
// and read valgrind's report into a verdict. The targets themselves (which
// app, which request kinds) are in run.mjs.
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

import { buildSync } from 'esbuild'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
// Bounds: valgrind's start (Node's startup under memcheck), each request, the exit and leak check.
const START_MS = 120_000
export const REQUEST_MS = 60_000
const EXIT_MS = 300_000

/** valgrind and dist/ present (exit 2 otherwise); the tests' FastCGI client, bundled once. */
export async function prepare() {
  if (spawnSync('valgrind', ['--version']).status !== 0) {
    console.error('valgrind: not installed (apt-get install valgrind)')
    process.exit(2)
  }
  if (!fs.existsSync(path.join(ROOT, 'dist/index.js'))) {
    console.error('valgrind: dist/ is missing (npx tsup)')
    process.exit(2)
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'libfcgi-valgrind-client-'))
  const bundle = path.join(dir, 'client.mjs')
  try {
    buildSync({
      entryPoints: [path.join(ROOT, 'test/helpers/fcgi-client.ts')],
      bundle: true, platform: 'node', format: 'esm', target: 'node20', logLevel: 'silent', outfile: bundle,
    })
    return await import(pathToFileURL(bundle).href)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

function withTimeout(p, ms, what) {
  let t
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms) })]).finally(() => clearTimeout(t))
}

/**
 * The request kinds both apps serve (same URIs: /hello, /64k, /upload,
 * /stderr), each an async function that throws when the answer is wrong.
 * `check(result, what, { status, body, stderr })` is exported for the
 * targets' own kinds.
 */
export function commonKinds(fc, target) {
  const UPLOAD = Buffer.alloc(256 * 1024, 'u')
  const params = (uri, body) => fc.defaultParams({ REQUEST_URI: uri }, body)
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
  const request = (opts) => fc.fcgiRequest(target, { timeoutMs: REQUEST_MS, ...opts })
  return [
    ['hello', async () => check(fc, await request({ params: params('/hello') }), 'hello', { body: 'Hello World\n' })],
    ['keep-conn x3', async () => {
      const conn = await fc.FcgiConnection.connect(target, REQUEST_MS)
      try {
        for (let id = 1; id <= 3; id++) {
          check(fc, await request({ params: params('/hello'), keepConn: true, requestId: id, connection: conn }), 'keep-conn', { body: 'Hello World\n' })
        }
      } finally { conn.destroy() }
    }],
    ['64k', async () => check(fc, await request({ params: params('/64k') }), '64k', { bodyLength: 65536 })],
    ['upload 256k', async () => check(fc, await request({ params: params('/upload', UPLOAD), stdin: UPLOAD }), 'upload', { body: `${UPLOAD.length}\n` })],
    ['stderr', async () => check(fc, await request({ params: params('/stderr') }), 'stderr', { body: 'ok\n', stderr: 'a line for the error log\n' })],
    ['closed mid-upload', () => aborted('close')],
    ['FCGI_ABORT_REQUEST', () => aborted('abort-record')],
    ['closed before reading 64k', async () => {
      const conn = await fc.FcgiConnection.connect(target, REQUEST_MS)
      await conn.write(fc.encodeRequest({ params: params('/64k') }))
      conn.destroy()
    }],
  ]
}

/**
 * One FastCGI answer against what it should be: the status (from the CGI
 * head's Status line, 200 without one), the body (exact string, or
 * bodyLength bytes), FCGI_STDERR containing a string, and a clean
 * FCGI_END_REQUEST (FCGI_REQUEST_COMPLETE).
 */
export function check(fc, res, what, { status = 200, body, bodyLength, stderr } = {}) {
  const r = fc.parseCgiResponse(res.stdout)
  const problems = []
  if (r.status !== status) problems.push(`status ${r.status} (expected ${status})`)
  if (body !== undefined && r.body.toString('latin1') !== body) problems.push(`body ${JSON.stringify(r.body.subarray(0, 80).toString('latin1'))} (expected ${JSON.stringify(body)})`)
  if (bodyLength !== undefined && r.body.length !== bodyLength) problems.push(`body of ${r.body.length} bytes (expected ${bodyLength})`)
  if (stderr !== undefined && !res.stderr.toString().includes(stderr)) problems.push(`FCGI_STDERR ${JSON.stringify(res.stderr.toString().slice(0, 200))} (expected to contain ${JSON.stringify(stderr)})`)
  if (res.protocolStatus !== fc.FCGI_REQUEST_COMPLETE) problems.push(`protocolStatus ${res.protocolStatus}`)
  if (problems.length) throw new Error(`${what}: ${problems.join(', ')}`)
}

/**
 * Runs one target: `app` (a script path) under memcheck with `appArgs(sock)`,
 * `requests` requests taken in rotation from `kinds(target)`, `concurrency`
 * at a time; then 'stop' over IPC and the app's natural exit. `handles`: the
 * N-API externals the app holds alive at exit (1 server + its Request
 * slots), the most node.supp's entry may hide.
 * Resolves to true when nothing of ours was found; throws when the run
 * itself failed (a wrong answer, a timeout, the app's early exit).
 */
export async function runTarget({ name, app: appScript, appArgs, kinds: makeKinds, handles, requests, concurrency, keepLog, dry = false }) {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `libfcgi-valgrind-${name}-`))
  const sock = path.join(work, 'app.sock')
  const logFile = path.join(work, 'valgrind.log')
  const vgArgs = [
    '--tool=memcheck', '--leak-check=full',
    '--show-leak-kinds=definite,indirect,possible', '--errors-for-leak-kinds=definite,indirect',
    `--suppressions=${path.join(ROOT, 'scripts/valgrind/node.supp')}`,
    '--num-callers=30', `--log-file=${logFile}`, '-v',
  ]
  // dry: the app under plain Node (a quick check of the app and the driver; no verdict).
  const command = dry ? [process.execPath, appScript, sock, ...appArgs] : ['valgrind', ...vgArgs, process.execPath, appScript, sock, ...appArgs]
  const app = spawn(command[0], command.slice(1), {
    cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], detached: true,
  })
  // The app (valgrind and Node under it: its own process group) is killed if
  // this script ends or the run fails before the app's own exit.
  const killApp = () => { try { process.kill(-app.pid, 'SIGKILL') } catch {} }
  process.on('exit', killApp)
  const exited = new Promise((resolve) => app.once('exit', (code, sig) => resolve(code ?? sig)))
  const message = (pred) => new Promise((resolve, reject) => {
    const on = (m) => { if (pred(m)) { app.off('message', on); resolve(m) } }
    app.on('message', on)
    exited.then((status) => reject(new Error(`the app exited (${status}); see ${logFile}`)))
  })
  const t0 = Date.now()
  const secs = () => ((Date.now() - t0) / 1000).toFixed(0)
  let status
  let appInfo
  try {
    await withTimeout(message((m) => m === 'ready'), START_MS, 'the app to start under valgrind')
    console.log(`valgrind ${name}: app up${dry ? ' (dry: no valgrind)' : ' under memcheck'} after ${((Date.now() - t0) / 1000).toFixed(1)} s; ${requests} requests, ${concurrency} at a time`)

    const kinds = makeKinds({ path: sock })
    const counts = new Map(kinds.map(([k]) => [k, 0]))
    let next = 0
    let lastPrint = Date.now()
    const worker = async () => {
      while (next < requests) {
        const i = next++
        const [kind, run] = kinds[i % kinds.length]
        await withTimeout(run(), REQUEST_MS, `request ${i} (${kind})`)
        counts.set(kind, counts.get(kind) + 1)
        if (Date.now() - lastPrint > 15000) {
          lastPrint = Date.now()
          console.log(`valgrind ${name}: ${next} / ${requests} requests, ${secs()} s`)
        }
      }
    }
    await Promise.all(Array.from({ length: concurrency }, worker))
    console.log(`valgrind ${name}: ${requests} requests done in ${secs()} s (${[...counts].map(([k, n]) => `${k} ${n}`).join(', ')}); stopping the app`)
    // What the app says before it exits (its counts), if it says it.
    const info = message((m) => typeof m === 'object' && m !== null).catch(() => undefined)
    app.send('stop')
    status = await withTimeout(exited, EXIT_MS, 'the app to exit and valgrind to check leaks')
    appInfo = await info
  } catch (err) {
    killApp()
    console.log(`valgrind ${name}: run failed: ${err.message}${dry ? '' : `; log ${logFile}`}`)
    if (dry) fs.rmSync(work, { recursive: true, force: true })
    throw err
  } finally {
    process.off('exit', killApp)
  }
  console.log(`valgrind ${name}: app exited (${status}) after ${secs()} s${appInfo ? `; the app reports ${JSON.stringify(appInfo)}` : ''}`)
  if (dry) {
    fs.rmSync(work, { recursive: true, force: true })
    return status === 0
  }
  const clean = verdict(fs.readFileSync(logFile, 'utf8'), handles, status, name)
  if (keepLog || !clean) console.log(`valgrind ${name}: full log ${logFile}`)
  else fs.rmSync(work, { recursive: true, force: true })
  return clean
}

// ---- the report

const OURS = /fcgi\.node|fcgiapp\.c|os_unix\.c|server\.cc|addon\.cc|listener\.cc/
const LEAK = /^([\d,]+) (?:\(([\d,]+) direct, ([\d,]+) indirect\) )?bytes in ([\d,]+) blocks are (definitely|indirectly|possibly) lost/
const ERROR = /^(Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|Mismatched free|Source and destination overlap|Argument .* of function)/
const num = (s) => Number((s ?? '0').replace(/,/g, ''))

/**
 * Verdict on a memcheck log: the "definitely lost" and "indirectly lost"
 * records and the memcheck errors with a frame of ours (fcgi.node: the addon
 * and the libfcgi linked into it) are counted; Node's and V8's alone are
 * listed, not counted; "possibly lost" is listed for information. node.supp's
 * one entry must hide no more blocks than the handles alive at exit.
 */
function verdict(log, handles, status, name) {
  const lines = log.split('\n').map((l) => l.replace(/^==\d+==\s?/, ''))
  // Blocks: a header line, then its "at"/"by" frames.
  const blocks = []
  for (const line of lines) {
    if (/^\s+(at|by) 0x/.test(line)) { blocks.at(-1)?.frames.push(line.trim()); continue }
    if (line.trim() === '') continue
    blocks.push({ head: line.trim(), frames: [] })
  }
  const isOurs = (b) => b.frames.some((f) => OURS.test(f))
  const possible = []
  const totals = { ours: { definite: 0, indirect: 0, records: [] }, other: { definite: 0, indirect: 0, records: [] } }
  const errors = { ours: [], other: [] }
  for (const b of blocks) {
    const m = LEAK.exec(b.head)
    if (m && m[5] === 'possibly') {
      possible.push(b)
    } else if (m) {
      const side = isOurs(b) ? totals.ours : totals.other
      side[m[5] === 'definitely' ? 'definite' : 'indirect'] += num(m[1])
      side.records.push(b)
    } else if (ERROR.test(b.head)) {
      ;(isOurs(b) ? errors.ours : errors.other).push(b)
    }
  }
  // The summary lines, and what each node.supp entry hid (used_suppression lines, with -v).
  const summary = [...new Set(lines.filter((l) => /definitely lost:|indirectly lost:|possibly lost:|still reachable:|suppressed:|ERROR SUMMARY|used_suppression:/.test(l)).map((l) => l.replace(/^--\d+--\s*/, '').trim()))]
  console.log(`\nvalgrind ${name}: LEAK SUMMARY (whole process, after node.supp):`)
  for (const l of summary) console.log(`  ${l}`)
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
  // stay within one per handle alive at exit.
  const supp = /used_suppression:\s+\d+ node-napi-external-reference-at-exit .*suppressed: ([\d,]+) bytes in ([\d,]+) blocks/.exec(log)
  const externalBlocks = supp ? num(supp[2]) : 0
  const externalsOk = externalBlocks <= handles
  console.log(`node.supp node-napi-external-reference-at-exit: ${externalBlocks} block(s) (${supp ? num(supp[1]) : 0} B), handles alive at exit: ${handles}${externalsOk ? '' : ' -- MORE than the handles: a leak of externals'}`)
  const clean = totals.ours.records.length === 0 && errors.ours.length === 0 && status === 0 && externalsOk
  console.log(clean ? `valgrind ${name}: clean` : `valgrind ${name}: FOUND problems in our code (above)`)
  return clean
}
