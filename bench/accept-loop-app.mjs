// The benchmark's app: the seed's accept loop with N Request objects in
// parallel, plus a 1 ms interval timer whose lateness is recorded with
// perf_hooks.monitorEventLoopDelay-style sampling. On SIGTERM it prints one
// JSON line with the figures and exits.
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { initSocket, Request } from '../dist/index.js'

const path = process.argv[2]
const parallel = Number(process.argv[3] ?? 64)
const socket = initSocket(path, 1024, { maxConns: 4096, ...(process.env.BENCH_MAX_THREADS ? { maxThreads: Number(process.env.BENCH_MAX_THREADS) } : {}) })

const delay = monitorEventLoopDelay({ resolution: 1 })
// A 1 ms interval timer: its lateness is what a handler's timers would see.
const late = []
let expected = performance.now() + 1
const timer = setInterval(() => {
  const now = performance.now()
  late.push(now - expected)
  expected = now + 1
}, 1)

let served = 0
async function loop() {
  const req = new Request(socket)
  while (await req.accept()) {
    req.stdout.write('Content-Type: text/plain\r\n\r\nHello World\n')
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
    process.send?.('reset-done')
  } else if (m === 'report') {
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
