// The server under test of scripts/fuzz.mjs (and test/hardening): a child
// process, so that a crash is seen as its exit and its threads and
// descriptors can be counted from /proc/PID.
//
// Two apps, both answering with data derived from the request's own params
// and body only, so a response carrying another request's data is seen:
//   token=<FUZZ_TOKEN param>\nid=<request id>\nstdin=<length>:<sha1>\n
// - loop: the low level accept loop (initSocket + N Request objects), as the
//   seed's `while (await req.accept())`; FILTER requests also hash FCGI_DATA
//   (`data=<length>:<sha1>`).
// - http: createServer(); the token comes as the X-Fuzz-Token header
//   (HTTP_X_FUZZ_TOKEN param), and the id from X-Fuzz-Id (the http layer does
//   not show the FastCGI request id).
// Params (for http: the same as X-Fuzz-* headers) that shape the answer, for
// test/hardening/faults.test.ts:
//   FUZZ_BIG=<n>     n bytes of the token repeated appended in the same write
//   FUZZ_STREAM=<n>  then n more such bytes in 64 KiB writes that wait for
//                    'drain' (an app that respects backpressure)
//   FUZZ_DELAY=<ms>  wait before answering (ends early on an abort)
//   FUZZ_FAULT=twice the app finishes twice (loop: finish(); http: res.end())
//   X-Fuzz-Fault (http only): throw | reject | never (never reads nor answers)
// Env: FUZZ_MAX_THREADS, FUZZ_READ_TIMEOUT (ms): the socket options.
//
// IPC: sends {ready: true} once listening; answers 'stats' with the socket's
// native stats, the RSS and the number of handlers running. SIGTERM (or the
// IPC channel closing) closes the socket and exits.
//
// usage: node scripts/fuzz-target.mjs <loop|http> <unix socket path> [parallel]
import { createHash } from 'node:crypto'

import { createServer, initSocket, Request } from '../dist/index.js'

const [mode, path, parallelArg] = process.argv.slice(2)
const parallel = Number(parallelArg ?? 32)
// Bodies past this are read and counted but not kept (no memory growth).
const MAX_BODY = 64 << 20

let served = 0
// What each running handler is doing (reported in 'stats': a handler that
// never ends is named with its token, which says which connection sent it).
const inFlight = new Set()

function answer(token, id, stdin, data, big) {
  let text = `token=${token}\nid=${id}\nstdin=${stdin}\n`
  if (data !== undefined) text += `data=${data}\n`
  if (big > 0) text += pattern(token, 0, big)
  return text
}

/** Bytes [from, to) of the token repeated ("token;token;..."). */
function pattern(token, from, to) {
  const unit = `${token};`
  const start = from - (from % unit.length)
  return unit.repeat(Math.ceil((to - start) / unit.length)).slice(from - start, to - start)
}

async function digest(stream) {
  const hash = createHash('sha1')
  let len = 0
  try {
    for await (const chunk of stream) {
      len += chunk.length
      if (len <= MAX_BODY) hash.update(chunk)
    }
  } catch {
    return 'error'
  }
  return `${len}:${hash.digest('hex')}`
}

function numberOf(value, max) {
  const n = Number(value ?? 0)
  return Number.isInteger(n) && n > 0 ? Math.min(n, max) : 0
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * FUZZ_STREAM=<n>: n more bytes of the pattern, in 64 KiB writes that wait
 * for 'drain' whenever write() returns false (what an app that respects
 * backpressure does); ends early if the stream closes.
 */
async function streamPattern(out, token, total) {
  let closed = false
  out.once('close', () => { closed = true })
  for (let at = 0; at < total && !closed && !out.destroyed; at += 65536) {
    if (!out.write(pattern(token, at, Math.min(total, at + 65536)))) {
      await new Promise((resolve) => {
        const done = () => { out.off('drain', done); out.off('close', done); resolve() }
        out.on('drain', done)
        out.on('close', done)
      })
    }
  }
}

let socket
let server
const socketOptions = {
  maxConns: 16384,
  ...(process.env.FUZZ_MAX_THREADS ? { maxThreads: Number(process.env.FUZZ_MAX_THREADS) } : {}),
  ...(process.env.FUZZ_READ_TIMEOUT ? { readTimeout: Number(process.env.FUZZ_READ_TIMEOUT) } : {}),
}

if (mode === 'loop') {
  socket = initSocket(path, { ...socketOptions, backlog: 4096 })
  for (let i = 0; i < parallel; i++) {
    const req = new Request(socket)
    void (async () => {
      while (await req.accept()) {
        const token = req.getParam('FUZZ_TOKEN') ?? ''
        const state = { token, id: req.requestId, role: req.role, stage: 'stdin' }
        inFlight.add(state)
        try {
          const stdin = await digest(req.stdin)
          state.stage = 'data'
          const data = req.role === 'FILTER' ? await digest(req.data) : undefined
          state.stage = 'delay'
          const delay = numberOf(req.getParam('FUZZ_DELAY'), 60000)
          if (delay > 0) await Promise.race([sleep(delay), new Promise((resolve) => req.once('aborted', resolve))])
          state.stage = 'write'
          const body = answer(token, req.requestId, stdin, data, numberOf(req.getParam('FUZZ_BIG'), 4 << 20))
          if (!req.aborted) {
            const out = req.stdout
            out.on('error', () => {})
            out.write(`Content-Type: text/plain\r\n\r\n${body}`)
            const more = numberOf(req.getParam('FUZZ_STREAM'), 1 << 30)
            if (more > 0) await streamPattern(out, token, more)
          }
        } finally {
          served++
          state.stage = 'finish'
        }
        await req.finish()
        // FUZZ_FAULT=twice: finish() again, as an app that ends twice.
        if (req.getParam('FUZZ_FAULT') === 'twice') await req.finish()
        inFlight.delete(state)
      }
    })()
  }
  process.send?.({ ready: true })
} else if (mode === 'http') {
  server = createServer({ ...socketOptions, maxConns: parallel, maxConnections: 16384, backlog: 4096 }, (req, res) => {
    const token = String(req.headers['x-fuzz-token'] ?? '')
    const id = String(req.headers['x-fuzz-id'] ?? '')
    // X-Fuzz-Fault: the handler misbehaves.
    const fault = req.headers['x-fuzz-fault']
    const state = { token, id, stage: 'body', fault }
    inFlight.add(state)
    res.on('close', () => inFlight.delete(state))
    res.on('error', () => {})
    if (fault === 'throw') throw new Error('fuzz: handler throws')
    if (fault === 'reject') return Promise.reject(new Error('fuzz: handler rejects'))
    // Never reads, never answers, keeps nothing: only the server holds the
    // request (see FcgiSocket._hold).
    if (fault === 'never') return new Promise(() => {})
    const hash = createHash('sha1')
    let len = 0
    let done = false
    const end = async (stdin) => {
      if (done) return
      done = true
      state.stage = 'delay'
      const delay = numberOf(req.headers['x-fuzz-delay'], 60000)
      if (delay > 0) await Promise.race([sleep(delay), new Promise((resolve) => res.once('close', resolve))])
      state.stage = 'respond'
      served++
      if (res.writableEnded || res.destroyed) return
      res.setHeader('Content-Type', 'text/plain')
      const body = answer(token, id, stdin, undefined, numberOf(req.headers['x-fuzz-big'], 4 << 20))
      const more = numberOf(req.headers['x-fuzz-stream'], 1 << 30)
      if (more > 0) {
        res.write(body)
        await streamPattern(res, token, more)
        res.end()
      } else {
        res.end(body)
      }
      if (fault === 'twice') res.end('twice')
    }
    req.on('data', (chunk) => {
      len += chunk.length
      if (len <= MAX_BODY) hash.update(chunk)
    })
    req.on('end', () => void end(`${len}:${hash.digest('hex')}`))
    req.on('error', () => void end('error'))
    req.on('aborted', () => void end('error'))
    return undefined
  })
  server.on('clientError', () => {})
  // The faults a handler throws are expected: counted, not printed.
  let requestErrors = 0
  server.on('requestError', () => { requestErrors++ })
  server.requestErrors = () => requestErrors
  server.listen(path, () => process.send?.({ ready: true }))
} else {
  console.error('usage: node scripts/fuzz-target.mjs <loop|http> <unix socket path> [parallel]')
  process.exit(2)
}

function stats() {
  const sock = socket ?? server?.fcgiSocket
  return {
    stats: sock && !sock.closed ? sock.stats() : null,
    rss: process.memoryUsage().rss,
    running: inFlight.size,
    served,
    requestErrors: server?.requestErrors?.() ?? 0,
    inFlight: [...inFlight].slice(0, 20),
  }
}

process.on('message', (msg) => {
  if (msg === 'stats') process.send?.(stats())
})

let stopping = false
function stop() {
  if (stopping) return
  stopping = true
  const done = () => process.exit(0)
  setTimeout(done, 5000).unref()
  if (socket) void socket.close().then(done)
  else if (server) server.close(done)
  else done()
}
process.on('SIGTERM', stop)
process.on('disconnect', stop)
