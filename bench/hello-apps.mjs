// The Hello World apps of the benchmark, one per peer. Each listens where
// argv[3] says (a unix socket path, or a TCP port for node:http), then sends
// 'ready' over IPC; SIGTERM stops it.
//
// usage: node bench/hello-apps.mjs <create-server|node-http|node-fastcgi> <path-or-port>
import http from 'node:http'
import { createRequire } from 'node:module'
import { createServer } from '../dist/index.js'

const [kind, where] = process.argv.slice(2)
const hello = (req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain' })
  res.end('Hello World\n')
}
let server
if (kind === 'create-server') {
  server = createServer({ maxConns: 256 }, hello).listen(where)
} else if (kind === 'node-http') {
  server = http.createServer({ keepAliveTimeout: 60000 }, hello).listen(Number(where), '127.0.0.1')
} else if (kind === 'node-fastcgi') {
  const fcgi = createRequire(import.meta.url)('node-fastcgi')
  server = fcgi.createServer(hello).listen(where)
} else {
  throw new Error(`unknown app ${kind}`)
}
server.on('listening', () => process.send?.('ready'))
process.on('SIGTERM', () => server.close(() => process.exit(0)))
