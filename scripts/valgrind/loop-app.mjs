// The application that scripts/valgrind/run.mjs runs under valgrind: the
// low-level accept loop (initSocket + Request, from dist/), serving by
// REQUEST_URI:
//   /hello     a small response
//   /64k       a 64 KiB response (a stdout write large enough to go by a worker)
//   /upload    reads the whole request body, answers its length
//   /stderr    a small response plus a line on FCGI_STDERR
//   anything else: 404
// Aborted requests (the client closes the connection, or sends
// FCGI_ABORT_REQUEST) surface as a failing stdin read or write; finish() ends
// them either way.
//
// On the IPC message 'stop' it closes the socket and lets the loops end, so
// the process exits by itself with everything of ours released: that is when
// valgrind's leak check runs.
//
// usage: node scripts/valgrind/loop-app.mjs <unix-socket-path> [parallel]
import { initSocket, Request } from '../../dist/index.js'

const where = process.argv[2]
const parallel = Number(process.argv[3] ?? 8)
const socket = initSocket(where, 128)
const BODY_64K = Buffer.alloc(64 * 1024, 'x')

async function serveOne(req) {
  switch (req.getParam('REQUEST_URI')) {
    case '/hello':
      req.stdout.write('Content-Type: text/plain\r\n\r\nHello World\n')
      break
    case '/64k':
      req.stdout.write(`Content-Type: application/octet-stream\r\nContent-Length: ${BODY_64K.length}\r\n\r\n`)
      req.stdout.write(BODY_64K)
      break
    case '/upload': {
      let len = 0
      for await (const chunk of req.stdin) len += chunk.length
      req.stdout.write(`Content-Type: text/plain\r\n\r\n${len}\n`)
      break
    }
    case '/stderr':
      req.stderr.write('a line for the error log\n')
      req.stdout.write('Content-Type: text/plain\r\n\r\nok\n')
      break
    default:
      req.stdout.write('Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnot found\n')
  }
}

let served = 0
async function loop() {
  const req = new Request(socket)
  while (await req.accept()) {
    try {
      await serveOne(req)
    } catch {
      // aborted by the client: finish() below ends the request
    }
    try { await req.finish() } catch { /* the connection is gone */ }
    served++
  }
}
const loops = Array.from({ length: parallel }, loop)

process.on('message', async (m) => {
  if (m !== 'stop') return
  await socket.close()
  await Promise.all(loops)
  process.send?.({ served }, () => process.disconnect?.())
})
process.send?.('ready')
