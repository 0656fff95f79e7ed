// The Node apps of the benchmark, one per peer, serving the workloads of
// bench/bodies.mjs by URL with the same request listener. Each listens where
// argv[3] says (a unix socket path, or host:port), then sends 'ready' over
// IPC; SIGTERM stops it.
//
// usage: node bench/hello-apps.mjs <create-server|node-http|node-fastcgi> <path | host:port> [backlog]
import http from 'node:http'
import { createRequire } from 'node:module'
import { createServer } from '../dist/index.js'
import { BODY_1M, BODY_64K, route } from './bodies.mjs'

const [kind, where, backlogArg] = process.argv.slice(2)
const backlog = Number(backlogArg ?? 1024)
const tcp = /^(.*):(\d+)$/.exec(where)
const listenOptions = tcp ? { host: tcp[1] || '127.0.0.1', port: Number(tcp[2]), backlog } : { path: where, backlog }

const listener = (req, res) => {
  switch (route(req.url)) {
    case 'hello':
      res.writeHead(200, { 'Content-Type': 'text/plain' })
      res.end('Hello World\n')
      break
    case '64k':
    case '1m': {
      const body = route(req.url) === '64k' ? BODY_64K : BODY_1M
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length })
      res.end(body)
      break
    }
    case 'echo': {
      // The whole body first (see bench/accept-loop-app.mjs), then the answer.
      const chunks = []
      let len = 0
      req.on('data', (chunk) => { chunks.push(chunk); len += chunk.length })
      req.on('end', () => {
        res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': len })
        for (const chunk of chunks) res.write(chunk)
        res.end()
      })
      break
    }
    default:
      res.writeHead(404, { 'Content-Type': 'text/plain' })
      res.end('not found\n')
  }
}

let server
if (kind === 'create-server') {
  // 256 requests in parallel; room for every connection nginx may open at
  // 1024 concurrent clients (kept ones included).
  server = createServer({ maxConns: 256, maxConnections: 4096 }, listener)
} else if (kind === 'node-http') {
  server = http.createServer({ keepAliveTimeout: 60000 }, listener)
} else if (kind === 'node-fastcgi') {
  server = createRequire(import.meta.url)('node-fastcgi').createServer(listener)
} else {
  throw new Error(`unknown app ${kind}`)
}
server.on('listening', () => process.send?.('ready'))
server.listen(listenOptions)
process.on('SIGTERM', () => server.close(() => process.exit(0)))
