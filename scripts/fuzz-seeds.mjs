#!/usr/bin/env node
// Writes the seed corpora of the libFuzzer harnesses (fuzz/*.cc):
//   <dir>/libfcgi_fuzzer/*: [limits byte, mode byte] + what a peer sends
//   <dir>/wire_fuzzer/*:    [8 setting bytes] + the same record streams
// Valid requests (RESPONDER GET/POST, AUTHORIZER, FILTER with FCGI_DATA),
// params with 1- and 4-byte lengths, padded records, FCGI_GET_VALUES and an
// unknown management record, an FCGI_ABORT_REQUEST, a second
// FCGI_BEGIN_REQUEST, two requests on a kept connection. Generated at build
// time (scripts/build-libfuzzer.sh), not committed.
// usage: node scripts/fuzz-seeds.mjs <dir>
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [BEGIN, ABORT, , PARAMS, STDIN, , DATA, GET_VALUES] = [1, 2, 3, 4, 5, 6, 8, 9];
const RESPONDER = 1;
const AUTHORIZER = 2;
const FILTER = 3;

function record(type, id, content = Buffer.alloc(0), padding = 0) {
  const h = Buffer.alloc(8);
  h[0] = 1;
  h[1] = type;
  h.writeUInt16BE(id, 2);
  h.writeUInt16BE(content.length, 4);
  h[6] = padding;
  return Buffer.concat([h, content, Buffer.alloc(padding)]);
}

function length(n) {
  if (n < 128) return Buffer.from([n]);
  const b = Buffer.alloc(4);
  b.writeUInt32BE((n | 0x80000000) >>> 0);
  return b;
}

function pairs(obj) {
  return Buffer.concat(
    Object.entries(obj).map(([k, v]) => Buffer.concat([length(k.length), length(v.length), Buffer.from(k), Buffer.from(v)])),
  );
}

function begin(id, role, keep) {
  return record(BEGIN, id, Buffer.from([0, role, keep ? 1 : 0, 0, 0, 0, 0, 0]));
}

// A stream's content split into records of `chunk` bytes (padded to 8), then
// its empty end record.
function stream(type, id, bytes, chunk = 1000) {
  const out = [];
  for (let i = 0; i < bytes.length; i += chunk) {
    const piece = bytes.subarray(i, i + chunk);
    out.push(record(type, id, piece, (8 - (piece.length % 8)) % 8));
  }
  out.push(record(type, id));
  return Buffer.concat(out);
}

const env = {
  SCRIPT_NAME: '/index',
  REQUEST_METHOD: 'GET',
  QUERY_STRING: 'a=1&b=2',
  SERVER_PROTOCOL: 'HTTP/1.1',
  HTTP_HOST: 'localhost',
};

function request({ id = 1, role = RESPONDER, keep = false, params = env, body = Buffer.alloc(0), data, chunk } = {}) {
  const parts = [begin(id, role, keep), stream(PARAMS, id, pairs(params), chunk), stream(STDIN, id, body, chunk)];
  if (data) parts.push(stream(DATA, id, data, chunk));
  return Buffer.concat(parts);
}

const body = Buffer.from('x'.repeat(3000));
const wires = {
  get: request(),
  post: request({ params: { ...env, REQUEST_METHOD: 'POST', CONTENT_LENGTH: '3000' }, body, chunk: 700 }),
  authorizer: request({ role: AUTHORIZER }),
  filter: request({ role: FILTER, body: Buffer.from('stdin'), data: Buffer.from('data'.repeat(100)) }),
  long_params: request({ params: { ...env, HTTP_COOKIE: 'c'.repeat(300), ['X'.repeat(200)]: 'v' } }),
  keep_pair: Buffer.concat([request({ keep: true }), request({ id: 2, keep: true, body, chunk: 512 })]),
  get_values: Buffer.concat([
    record(GET_VALUES, 0, pairs({ FCGI_MAX_CONNS: '', FCGI_MAX_REQS: '', FCGI_MPXS_CONNS: '' })),
    request(),
  ]),
  unknown_management: Buffer.concat([record(20, 0, Buffer.from('zz'), 6), request()]),
  abort: Buffer.concat([
    begin(1, RESPONDER, true),
    stream(PARAMS, 1, pairs(env)),
    record(STDIN, 1, Buffer.from('partial'), 1),
    record(ABORT, 1),
  ]),
  second_begin: Buffer.concat([
    begin(1, RESPONDER, false),
    begin(2, RESPONDER, false),
    stream(PARAMS, 1, pairs(env)),
    record(STDIN, 2, Buffer.from('other')),
    stream(STDIN, 1, Buffer.from('mine')),
  ]),
  unknown_role: request({ role: 7 }),
};

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node scripts/fuzz-seeds.mjs <dir>');
  process.exit(2);
}
const libfcgiDir = join(dir, 'libfcgi_fuzzer');
const wireDir = join(dir, 'wire_fuzzer');
mkdirSync(libfcgiDir, { recursive: true });
mkdirSync(wireDir, { recursive: true });
// Settings bytes: the server's limits and buffers, and small ones.
const libfcgiSettings = [
  [0x00, 0x00], // default limits, 64 KiB buffers, read everything
  [0x05, 0x06], // tight limits, 200-byte in and 32-byte out buffers
  [0x02, 0x61], // limits by bytes, 8 KiB buffer, read a little, stderr
  [0x03, 0x32], // limits by count, 32-byte buffer, read nothing
];
const wireSettings = [
  [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02], // at a record boundary, FCGI_STDIN, id 1
  [0x05, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02], // tight limits, FCGI_DATA
  [0x02, 0x00, 0x00, 0x00, 0x00, 0x10, 0x03, 0x01], // 16 bytes of a skipped record left, padding 3
];
let count = 0;
for (const [name, wire] of Object.entries(wires)) {
  libfcgiSettings.forEach((s, i) => {
    writeFileSync(join(libfcgiDir, `${name}-${i}`), Buffer.concat([Buffer.from(s), wire]));
    count++;
  });
  wireSettings.forEach((s, i) => {
    writeFileSync(join(wireDir, `${name}-${i}`), Buffer.concat([Buffer.from(s), wire]));
    count++;
  });
}
console.log(`fuzz-seeds: ${count} seeds in ${dir}`);
