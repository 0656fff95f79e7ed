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
// A FUZZ_BIG=<n> param (header X-Fuzz-Big) appends n bytes of the token
// repeated, so large responses (records over several writes) are checked too.
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

let running = 0
let served = 0
// What each running handler is doing (reported in 'stats': a handler that
// never ends is named with its token, which says which connection sent it).
const inFlight = new Set()

function answer(token, id, stdin, data, big) {
  let text = `token=${token}\nid=${id}\nstdin=${stdin}\n`
  if (data !== undefined) text += `data=${data}\n`
  if (big > 0) {
    const unit = `${token};`
    text += unit.repeat(Math.ceil(big / unit.length)).slice(0, big)
  }
  return text
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

function bigOf(value) {
  const n = Number(value ?? 0)
  return Number.isInteger(n) && n > 0 ? Math.min(n, 4 << 20) : 0
}

let socket
let server

if (mode === 'loop') {
  socket = initSocket(path, { maxConns: 16384 })
  for (let i = 0; i < parallel; i++) {
    const req = new Request(socket)
    void (async () => {
      while (await req.accept()) {
        running++
        const token = req.getParam('FUZZ_TOKEN') ?? ''
        const state = { token, id: req.requestId, role: req.role, stage: 'stdin' }
        inFlight.add(state)
        try {
          const stdin = await digest(req.stdin)
          state.stage = 'data'
          const data = req.role === 'FILTER' ? await digest(req.data) : undefined
          state.stage = 'write'
          const body = answer(token, req.requestId, stdin, data, bigOf(req.getParam('FUZZ_BIG')))
          if (!req.aborted) {
            const out = req.stdout
            out.on('error', () => {})
            out.write(`Content-Type: text/plain\r\n\r\n${body}`)
          }
        } finally {
          running--
          served++
          state.stage = 'finish'
        }
        await req.finish()
        inFlight.delete(state)
      }
    })()
  }
  process.send?.({ ready: true })
} else if (mode === 'http') {
  server = createServer({ maxConns: parallel, maxConnections: 16384 }, (req, res) => {
    running++
    const state = { token: String(req.headers['x-fuzz-token'] ?? ''), id: String(req.headers['x-fuzz-id'] ?? ''), stage: 'body' }
    inFlight.add(state)
    res.on('close', () => inFlight.delete(state))
    const hash = createHash('sha1')
    let len = 0
    let done = false
    const end = (stdin) => {
      if (done) return
      done = true
      state.stage = 'respond'
      running--
      served++
      const token = String(req.headers['x-fuzz-token'] ?? '')
      const id = String(req.headers['x-fuzz-id'] ?? '')
      if (res.writableEnded || res.destroyed) return
      res.setHeader('Content-Type', 'text/plain')
      res.end(answer(token, id, stdin, undefined, bigOf(req.headers['x-fuzz-big'])))
    }
    req.on('data', (chunk) => {
      len += chunk.length
      if (len <= MAX_BODY) hash.update(chunk)
    })
    req.on('end', () => end(`${len}:${hash.digest('hex')}`))
    req.on('error', () => end('error'))
    req.on('aborted', () => end('error'))
    res.on('error', () => {})
  })
  server.on('clientError', () => {})
  server.listen(path, () => process.send?.({ ready: true }))
} else {
  console.error('usage: node scripts/fuzz-target.mjs <loop|http> <unix socket path> [parallel]')
  process.exit(2)
}

function stats() {
  const sock = socket ?? server?.fcgiSocket
  return { stats: sock && !sock.closed ? sock.stats() : null, rss: process.memoryUsage().rss, running, served, inFlight: [...inFlight].slice(0, 20) }
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
