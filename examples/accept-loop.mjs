#!/usr/bin/env node
// The shortest FastCGI application: one Request, one accept loop.
//
//   node examples/accept-loop.mjs [address]
//
// address: a unix socket path, a port ("9000") or "127.0.0.1:9000"; else the
// FCGI_LISTEN environment variable; else the socket a web server (or
// spawn-fcgi) passed as fd 0; else /tmp/libfcgi-demo.sock.
// Put examples/nginx.conf in front of it (see examples/README.md).
// Ctrl-C (SIGINT) or SIGTERM stops it: no new requests, the current one ends.

// In your own code: import { initSocket, isCGI, Request } from 'libfcgi'
// (here the repository's build, made by `bash scripts/setup.sh`).
import { initSocket, isCGI, Request } from '../dist/index.js';

const DEFAULT_PATH = '/tmp/libfcgi-demo.sock';

const address = process.argv[2] || process.env.FCGI_LISTEN || (isCGI() ? DEFAULT_PATH : { fd: 0 });
// Unix sockets are made readable and writable by everyone so that nginx's
// worker user can connect; choose 0o660 and a shared group in production.
const socket = initSocket(address, { mode: 0o666 });

const where = socket.address();
console.log(`accept-loop: listening on ${where?.family === 'unix' ? `unix:${where.address}` : `${where?.address}:${where?.port}`}` +
  (typeof address === 'object' ? ' (inherited as fd 0)' : ''));

let stopping = false;
function stop(signal) {
  if (stopping) return;
  stopping = true;
  console.log(`accept-loop: ${signal}, closing`);
  socket.close(); // the pending accept() resolves false and the loop ends
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);

const req = new Request(socket);
let count = 0;
while (await req.accept()) {
  count++;
  req.stdout.write('Content-Type: text/plain\r\n\r\n');
  req.stdout.write(`Hello World from ${req.getParam('REQUEST_URI') ?? '(no REQUEST_URI)'} (request ${count}, pid ${process.pid})\n`);
  await req.finish();
}
await socket.close();
console.log(`accept-loop: served ${count} request${count === 1 ? '' : 's'}, bye`);
