#!/usr/bin/env node
// Many requests at once: N Request objects on one socket, each in its own
// accept loop. The blocking libfcgi calls run on the addon's threads, so the
// loops interleave on Node's single JS thread like threads would.
//
//   node examples/threaded.mjs [address] [workers]
//
// address as in accept-loop.mjs (default: FCGI_LISTEN, fd 0 from a web
// server, else /tmp/libfcgi-demo.sock); workers: number of Request objects
// (default 8, or FCGI_WORKERS). Every response names the worker that served
// it and the request count so far.
// Ctrl-C (SIGINT) or SIGTERM: stop accepting, let the requests in flight
// finish, print the total and exit 0.

// In your own code: import { initSocket, isCGI, Request } from 'libfcgi'
import { initSocket, isCGI, Request } from '../dist/index.js';

const address = process.argv[2] || process.env.FCGI_LISTEN || (isCGI() ? '/tmp/libfcgi-demo.sock' : { fd: 0 });
const workers = Number(process.argv[3] || process.env.FCGI_WORKERS || 8);
if (!Number.isInteger(workers) || workers < 1) {
  console.error(`threaded: workers must be a positive integer, got ${process.argv[3] ?? process.env.FCGI_WORKERS}`);
  process.exit(2);
}

const socket = initSocket(address, { mode: 0o666 });
const where = socket.address();
console.log(`threaded: ${workers} workers listening on ${where?.family === 'unix' ? `unix:${where.address}` : `${where?.address}:${where?.port}`}`);

let served = 0;

async function worker(id) {
  const req = new Request(socket);
  let mine = 0;
  while (await req.accept()) {
    const n = ++served; // this request's number, counted when it arrived
    mine++;
    // Read the body (if any) before answering, as a CGI program would.
    let bodyBytes = 0;
    for await (const chunk of req.stdin) bodyBytes += chunk.length;
    req.stdout.write('Content-Type: text/plain\r\n\r\n');
    req.stdout.write(`Hello World from ${req.getParam('REQUEST_URI') ?? '/'}: worker ${id} ` +
      `(its request ${mine}), request ${n} in all, ${bodyBytes} body bytes\n`);
    await req.finish();
  }
  return mine;
}

let stopping = false;
function stop(signal) {
  if (stopping) return;
  stopping = true;
  console.log(`threaded: ${signal}, closing (requests in flight finish first)`);
  socket.close();
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);

const perWorker = await Promise.all(Array.from({ length: workers }, (_, i) => worker(i + 1)));
await socket.close(); // resolves once the last request in flight is done
console.log(`threaded: served ${served} request${served === 1 ? '' : 's'} (per worker: ${perWorker.join(' ')}), bye`);
