// The benchmark's accept-loop app: the seed's accept loop with N Request
// objects in parallel, serving the workloads of bench/bodies.mjs by
// REQUEST_URI. Between the IPC messages 'reset' and 'report' a 1 ms interval
// timer runs, and its lateness is recorded (what a handler's timers would
// see), with perf_hooks.monitorEventLoopDelay next to it; 'report' answers
// with the figures. The timer runs only then, so that it costs nothing in the
// other measurements. SIGTERM closes the socket and exits.
//
// usage: node bench/accept-loop-app.mjs <unix-socket-path | host:port> [parallel] [backlog]
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { initSocket, Request } from '../dist/index.js'
import { BODY_1M, BODY_64K, route } from './bodies.mjs'

const where = process.argv[2]
const parallel = Number(process.argv[3] ?? 64)
const backlog = Number(process.argv[4] ?? 1024)
const socket = initSocket(where, backlog, { maxConns: 4096, ...(process.env.BENCH_MAX_THREADS ? { maxThreads: Number(process.env.BENCH_MAX_THREADS) } : {}) })

const delay = monitorEventLoopDelay({ resolution: 1 })
const late = []
let timer
let expected = 0

// The whole body first, then the answer: nginx stops sending the request body
// once it has passed the response header on to the client, so an echo that
// streams stalls when the body outgrows the socket buffers.
async function echo(req) {
  const chunks = []
  let len = 0
  for await (const chunk of req.stdin) {
    chunks.push(chunk)
    len += chunk.length
  }
  req.stdout.write(`Content-Type: application/octet-stream\r\nContent-Length: ${len}\r\n\r\n`)
  for (const chunk of chunks) req.stdout.write(chunk)
}

let served = 0
async function loop() {
  const req = new Request(socket)
  while (await req.accept()) {
    switch (route(req.getParam('REQUEST_URI') ?? '/')) {
      case 'hello':
        req.stdout.write('Content-Type: text/plain\r\n\r\nHello World\n')
        break
      case '64k':
        req.stdout.write(`Content-Type: application/octet-stream\r\nContent-Length: ${BODY_64K.length}\r\n\r\n`)
        req.stdout.write(BODY_64K)
        break
      case '1m':
        req.stdout.write(`Content-Type: application/octet-stream\r\nContent-Length: ${BODY_1M.length}\r\n\r\n`)
        req.stdout.write(BODY_1M)
        break
      case 'echo':
        try { await echo(req) } catch { /* aborted: finish() below ends it */ }
        break
      default:
        req.stdout.write('Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnot found\n')
    }
    await req.finish()
    served++
  }
}
for (let i = 0; i < parallel; i++) loop()

process.on('message', (m) => {
  if (m === 'reset') {
    late.length = 0
    delay.reset()
    delay.enable()
    clearInterval(timer)
    expected = performance.now() + 1
    timer = setInterval(() => {
      const now = performance.now()
      late.push(now - expected)
      expected = now + 1
    }, 1)
    process.send?.('reset-done')
  } else if (m === 'report') {
    clearInterval(timer)
    delay.disable()
    late.sort((a, b) => a - b)
    const p = (q) => (late.length ? late[Math.min(late.length - 1, Math.floor(q * late.length))] : 0)
    process.send?.({ served, timerSamples: late.length, timerLateP50: p(0.5), timerLateP99: p(0.99), timerLateMax: late.at(-1) ?? 0,
      loopDelayP99: delay.percentile(99) / 1e6, stats: socket.stats() })
  }
})
process.on('SIGTERM', async () => {
  clearInterval(timer)
  await socket.close()
  process.exit(0)
})
process.send?.('ready')
