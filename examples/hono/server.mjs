#!/usr/bin/env node
// examples/hono/app.mjs served over FastCGI with serve({ fetch }), for nginx
// or Apache.
//
//   node examples/hono/server.mjs                           # unix socket /tmp/libfcgi-hono.sock
//   FCGI_LISTEN=127.0.0.1:9000 node examples/hono/server.mjs
//   APP_PREFIX=/app node examples/hono/server.mjs           # routes under /app/
//
// Ctrl-C (SIGINT) or SIGTERM: no new requests, the requests in flight
// finish, then the process exits 0.

// In your own code: import { serve } from 'libfcgi'
// (here the repository's build, made by `bash scripts/setup.sh` or `npx tsup`).
import { serve } from '../../dist/index.js';
import app from './app.mjs';

const address = process.env.FCGI_LISTEN ?? '/tmp/libfcgi-hono.sock';
const mode = process.env.FCGI_SOCKET_MODE ?? 0o666;  // see examples/express/server.mjs

// serve() listens on `path` (a unix socket, with `mode`), on `port` (+
// `hostname`), or on `listen` (anything listen() takes, as FCGI_LISTEN here).
// For a fixed socket path this is simply
//   serve({ fetch: app.fetch, path: '/run/app.sock' })
const server = serve({ fetch: app.fetch, listen: address, mode }, () => {
  const where = server.address();
  console.log(`hono-example: listening on ${typeof where === 'string' ? `unix:${where}` : `${where.address}:${where.port}`}`);
});

server.on('error', (err) => {
  console.error(`hono-example: cannot listen on ${address}: ${err.message}`);
  process.exit(1);
});

let closing = false;
function shutdown(signal) {
  if (closing) {
    console.log(`hono-example: ${signal} again, exiting now`);
    process.exit(1);
  }
  closing = true;
  console.log(`hono-example: ${signal}, closing`);
  server.close(() => console.log('hono-example: closed, bye'));
  setTimeout(() => {
    console.error('hono-example: requests still running after 10 s, exiting');
    process.exit(1);
  }, 10_000).unref();
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
