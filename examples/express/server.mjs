#!/usr/bin/env node
// examples/express/app.mjs served over FastCGI, for nginx or Apache.
//
//   node examples/express/server.mjs                        # unix socket /tmp/libfcgi-express.sock
//   FCGI_LISTEN=127.0.0.1:9000 node examples/express/server.mjs
//   APP_PREFIX=/app node examples/express/server.mjs        # routes under /app/
//
// FCGI_LISTEN takes whatever listen() takes: a unix socket path, a port
// ("9000"), "127.0.0.1:9000", "[::1]:9000". Ctrl-C (SIGINT) or SIGTERM:
// no new requests, the requests in flight finish, then the process exits 0.

// In your own code: import { createServer } from 'libfcgi'
// (here the repository's build, made by `bash scripts/setup.sh` or `npx tsup`).
import { createServer } from '../../dist/index.js';
import app from './app.mjs';

const address = process.env.FCGI_LISTEN ?? '/tmp/libfcgi-express.sock';

// A unix socket is created with mode 0666 so that the web server's user
// (www-data) can connect; in production prefer 0660 and a group shared with
// the web server (FCGI_SOCKET_MODE=660).
const server = createServer({ mode: process.env.FCGI_SOCKET_MODE ?? 0o666 }, app);

server.on('error', (err) => {
  console.error(`express-example: cannot listen on ${address}: ${err.message}`);
  process.exit(1);
});

server.listen(address, () => {
  const where = server.address();
  console.log(`express-example: listening on ${typeof where === 'string' ? `unix:${where}` : `${where.address}:${where.port}`}`);
});

let closing = false;
function shutdown(signal) {
  if (closing) {
    console.log(`express-example: ${signal} again, exiting now`);
    process.exit(1);
  }
  closing = true;
  console.log(`express-example: ${signal}, closing`);
  // Stops accepting (the socket file is removed), lets the requests in
  // flight finish, then 'close'. Nothing else keeps the process alive, so it
  // exits by itself with status 0.
  server.close(() => console.log('express-example: closed, bye'));
  // A request that never ends must not keep the process forever.
  setTimeout(() => {
    console.error('express-example: requests still running after 10 s, exiting');
    process.exit(1);
  }, 10_000).unref();
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
