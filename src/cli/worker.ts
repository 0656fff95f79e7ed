// A worker process of `libfcgi serve`: loads the app, serves it with
// createServer() on the listen socket it was given as fd 0 (the FastCGI
// convention: a worker is what spawn-fcgi or mod_fcgid would start), and
// talks to the supervisor over the IPC channel:
//   worker -> supervisor: ready | recycle | status-request {id} | stats {id, stats}
//   supervisor -> worker: stop | stats-request {id} | status {id, data}
// `--check APP` only loads the app and validates its export (exit 0 or 1).
import { createServer } from '../http/server.js'
import { loadApp } from './load-app.js'
import { renderStatus, type WorkerStats } from './status.js'

/** The fd of the listen socket in a worker (stdio[0] of the spawn). */
export const WORKER_LISTEN_FD = 0

export interface WorkerConfig {
  app: string
  maxConns: number
  maxRequests: number
  allowedClients?: string
  statusPath?: string
  pingPath?: string
  slowMs: number
  /** The supervisor's share block and this worker's entry (an even share of the connections). */
  share?: { fd: number; index: number }
}

async function runWorker(config: WorkerConfig): Promise<void> {
  const send = (msg: object): void => {
    if (process.connected) process.send!(msg)
  }
  const listener = await loadApp(config.app)
  const startedAt = Date.now()
  const stats: WorkerStats = { pid: process.pid, startedAt, requests: 0, active: 0, maxActive: 0, slow: 0, slots: config.maxConns }
  let recycling = false
  const statusWaiters = new Map<number, (data: unknown) => void>()
  let nextStatusId = 1

  const server = createServer({
    maxConns: config.maxConns,
    ...(config.allowedClients !== undefined ? { allowedClients: config.allowedClients } : {}),
    ...(config.share !== undefined ? { share: config.share } : {}),
  }, (req, res) => {
    const started = Date.now()
    stats.active++
    if (stats.active > stats.maxActive) stats.maxActive = stats.active
    res.once('close', () => {
      stats.active--
      stats.requests++
      if (Date.now() - started >= config.slowMs) stats.slow++
      if (config.maxRequests > 0 && stats.requests >= config.maxRequests && !recycling) {
        recycling = true
        send({ type: 'recycle' })  // the supervisor starts a replacement, then stops us
      }
    })
    const pathname = (req.url ?? '/').split('?')[0]
    if (config.pingPath && pathname === config.pingPath) {
      res.setHeader('Content-Type', 'text/plain')
      res.setHeader('Cache-Control', 'no-store')
      res.end('pong\n')
      return
    }
    if (config.statusPath && pathname === config.statusPath) {
      const id = nextStatusId++
      const timer = setTimeout(() => statusWaiters.get(id)?.(undefined), 2000)
      statusWaiters.set(id, (data) => {
        clearTimeout(timer)
        statusWaiters.delete(id)
        const { type, body } = renderStatus(data ?? { workers: [stats] }, req.url ?? '')
        res.setHeader('Content-Type', type)
        res.setHeader('Cache-Control', 'no-store')
        res.end(body)
      })
      send({ type: 'status-request', id })
      if (!process.connected) statusWaiters.get(id)?.(undefined)
      return
    }
    return listener(req, res)
  })

  process.on('message', (msg: { type: string; id?: number; data?: unknown }) => {
    if (msg.type === 'stop') {
      server.close()
    } else if (msg.type === 'stats-request') {
      send({ type: 'stats', id: msg.id, stats })
    } else if (msg.type === 'status') {
      statusWaiters.get(msg.id!)?.(msg.data)
    }
  })
  // The supervisor gone (killed): stop serving rather than run unsupervised.
  process.on('disconnect', () => server.close())
  // A signal from outside (a web server stopping its children): as 'stop'.
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => server.close())
  process.on('SIGHUP', () => { /* reloads are the supervisor's; a worker ignores them */ })

  server.on('close', () => {
    if (process.connected) process.disconnect()
    process.exitCode = 0
  })
  // The supervisor passes the shared listen socket as fd 0.
  server.listen({ fd: WORKER_LISTEN_FD }, () => send({ type: 'ready' }))
}

const args = process.argv.slice(2)
if (args[0] === '--check') {
  loadApp(args[1]!).then(
    () => process.exit(0),
    (err: Error) => {
      process.stderr.write(`${err.message}\n`)
      process.exit(1)
    },
  )
} else {
  const config = JSON.parse(process.env.LIBFCGI_WORKER_CONFIG ?? '{}') as WorkerConfig
  runWorker(config).catch((err: Error) => {
    process.stderr.write(`libfcgi worker ${process.pid}: ${err.message}\n`)
    process.exit(1)
  })
}
