#!/usr/bin/env node
// Leak check of the addon under valgrind (`npm run test:valgrind`: both
// targets): runs an app (dist/ and the normal build/Release/fcgi.node) under
// memcheck, drives N requests of mixed kinds through it with the tests'
// FastCGI client, checks every answer, stops the app cleanly (socket closed,
// loops ended, natural exit) and reads valgrind's report.
//
// Targets:
//   loop  the low-level accept loop (scripts/valgrind/loop-app.mjs: initSocket + Request)
//   http  the http layer (scripts/valgrind/http-app.mjs: createServer, a node:http-style listener)
//   all   both, one after the other; fails if either fails
//
// Request kinds, in rotation (both targets): hello (new connection each),
// hello x3 on one keep_conn connection, a 64 KiB response, a 256 KiB upload,
// a stderr line, a client that closes mid-upload, FCGI_ABORT_REQUEST
// mid-upload, and a client that closes before reading its 64 KiB response.
// The http target adds: a POST over maxBodySize (413; once with a declared
// CONTENT_LENGTH, once chunked without one) and a listener that fails (500;
// once throwing, once returning a rejected promise).
//
// Verdict (per target): the "definitely lost" and "indirectly lost" leak
// records whose allocation stack has a frame of ours (fcgi.node: the addon
// and the libfcgi linked into it) and the memcheck errors (invalid
// reads/writes, uses of uninitialised values...) with a frame of ours. Leak
// records of Node/V8 alone are suppressed by scripts/valgrind/node.supp (kept
// to allocations made directly by the node binary); whatever else is left is
// listed, not counted. Exit status 1 when anything of ours is found (or a
// run fails: a wrong answer, a timeout). The machinery is in harness.mjs.
//
// usage: node scripts/valgrind/run.mjs [--target loop|http|all] [--requests 2000] [--concurrency 4] [--keep-log] [--dry]
// (--dry: the apps under plain Node, no valgrind, no verdict: a quick check of the apps and the driver)
// valgrind is slow (Node runs ~20-50x slower under it): 2,000 requests take ~30 s per target
// on 2 shared cores, 10,000 ~75 s.
import path from 'node:path'

import { check, commonKinds, prepare, REQUEST_MS, ROOT, runTarget } from './harness.mjs'

const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt
}
const REQUESTS = Number(opt('requests', 2000))
const CONCURRENCY = Number(opt('concurrency', 4))
const KEEP_LOG = args.includes('--keep-log')
// --dry: the apps under plain Node, no valgrind (checks the apps and the driver in seconds).
const DRY = args.includes('--dry')
const TARGET = opt('target', 'loop')
// Request slots of the app (loop-app's Requests, http-app's maxConns): twice
// the driver's concurrency, as the loop target always had.
const SLOTS = CONCURRENCY * 2
// The http target's maxBodySize: the 256 KiB upload is exactly at it (accepted).
const MAX_BODY = 256 * 1024

if (!['loop', 'http', 'all'].includes(TARGET)) {
  console.error(`valgrind: --target loop, http or all (got ${TARGET})`)
  process.exit(2)
}
const fc = await prepare()

const targets = {
  loop: {
    app: path.join(ROOT, 'scripts/valgrind/loop-app.mjs'),
    appArgs: [String(SLOTS)],
    kinds: (target) => commonKinds(fc, target),
  },
  http: {
    app: path.join(ROOT, 'scripts/valgrind/http-app.mjs'),
    appArgs: [String(SLOTS), String(MAX_BODY)],
    kinds: (target) => {
      const big = Buffer.alloc(MAX_BODY + 16 * 1024, 'b')
      const request = (opts) => fc.fcgiRequest(target, { timeoutMs: REQUEST_MS, ...opts })
      return [
        ...commonKinds(fc, target),
        ['413 over maxBodySize', async () => {
          // Declared: answered before the listener runs, the body unread.
          const declared = fc.defaultParams({ REQUEST_URI: '/upload' }, big)
          check(fc, await request({ params: declared, stdin: big }), '413 (CONTENT_LENGTH)',
            { status: 413, body: 'Payload Too Large\n', stderr: 'over maxBodySize' })
          // Not declared: cut off while the listener reads it.
          const chunked = fc.defaultParams({ REQUEST_METHOD: 'POST', REQUEST_URI: '/upload', HTTP_TRANSFER_ENCODING: 'chunked' })
          check(fc, await request({ params: chunked, stdin: big }), '413 (no CONTENT_LENGTH)',
            { status: 413, body: 'Payload Too Large\n', stderr: 'over maxBodySize' })
        }],
        ['500 listener fails', async () => {
          for (const uri of ['/throw', '/reject']) {
            check(fc, await request({ params: fc.defaultParams({ REQUEST_URI: uri }) }), `500 (${uri})`, { status: 500, body: 'Internal Server Error\n' })
          }
        }],
      ]
    },
  },
}

let ok = true
for (const name of TARGET === 'all' ? Object.keys(targets) : [TARGET]) {
  try {
    const clean = await runTarget({
      name, ...targets[name],
      handles: 1 + SLOTS,  // the server and its Request slots
      requests: REQUESTS, concurrency: CONCURRENCY, keepLog: KEEP_LOG, dry: DRY,
    })
    ok &&= clean
  } catch (err) {
    console.error(`valgrind ${name}: ${err.stack ?? err}`)
    ok = false
  }
  if (TARGET === 'all') console.log('')
}
process.exit(ok ? 0 : 1)
