// The application that `scripts/valgrind/run.mjs --target http` runs under
// valgrind: the http layer (createServer from dist/, a plain node:http-style
// listener), serving by URL the same URIs as loop-app.mjs, plus two:
//   /hello     a small response
//   /64k       a 64 KiB response (one res.end() of 64 KiB: the write waits
//              for the native write, the backpressure path)
//   /upload    reads the whole request body, answers its length; a body over
//              maxBodySize is answered 413 by the server (declared
//              CONTENT_LENGTH: before the listener runs; without one: cut
//              off while the listener reads it)
//   /stderr    a line on FCGI_STDERR (res.stderr) and a small response
//   /throw     the listener throws: the server answers 500
//   /reject    the listener's promise rejects: the server answers 500
//   anything else: 404
// Aborted requests (the client closes the connection, or sends
// FCGI_ABORT_REQUEST) surface as 'error' (ECONNRESET) on req and 'close'.
//
// On the IPC message 'stop' it calls server.close() (no more accepts, the
// accept loops end), reports its counts and disconnects, so the process
// exits by itself with everything of ours released: that is when
// valgrind's leak check runs.
//
// usage: node scripts/valgrind/http-app.mjs <unix-socket-path> [maxConns] [maxBodySize]
import { createServer } from '../../dist/index.js'

const where = process.argv[2]
const parallel = Number(process.argv[3] ?? 8)
const maxBodySize = Number(process.argv[4] ?? 256 * 1024)
const BODY_64K = Buffer.alloc(64 * 1024, 'x')

const counts = { requests: 0, aborted: 0, thrown: 0, tooLarge: 0, otherClientErrors: 0 }
const server = createServer({ maxConns: parallel, maxBodySize }, (req, res) => {
  counts.requests++
  // The web server gone mid-request: as node:http, ECONNRESET on req.
  req.on('error', (err) => { if (err.code === 'ECONNRESET') counts.aborted++ })
  switch (req.url) {
    case '/hello':
      res.setHeader('Content-Type', 'text/plain')
      res.end('Hello World\n')
      break
    case '/64k':
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': BODY_64K.length })
      res.end(BODY_64K)
      break
    case '/upload': {
      let len = 0
      req.on('data', (chunk) => { len += chunk.length })
      req.on('end', () => {
        res.setHeader('Content-Type', 'text/plain')
        res.end(`${len}\n`)
      })
      break
    }
    case '/stderr':
      res.stderr.write('a line for the error log\n')
      res.setHeader('Content-Type', 'text/plain')
      res.end('ok\n')
      break
    case '/throw':
      throw new Error('thrown by the listener (expected: answered 500)')
    case '/reject':
      return Promise.reject(new Error('rejected by the listener (expected: answered 500)'))
    default:
      res.statusCode = 404
      res.end('not found\n')
  }
})
// Listener failures (the 500s): counted here instead of a stderr line each.
server.on('requestError', () => { counts.thrown++ })
server.on('clientError', (err) => {
  if (err.code === 'ERR_LIBFCGI_BODY_TOO_LARGE') counts.tooLarge++
  else counts.otherClientErrors++
})
server.on('error', (err) => {
  console.error('http-app: server error:', err)
  process.exit(1)
})
server.listen({ path: where }, () => process.send?.('ready'))

process.on('message', (m) => {
  if (m !== 'stop') return
  server.close(() => {
    // The counts, then the IPC channel closed (once they are sent): nothing
    // is left to keep the process alive.
    process.send?.(counts, () => process.disconnect?.())
  })
})
