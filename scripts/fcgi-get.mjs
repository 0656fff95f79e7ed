#!/usr/bin/env node
// A minimal FastCGI client: sends one RESPONDER request and prints the CGI
// response (headers and body, as the application wrote them) on stdout and
// the application's FCGI_STDERR on stderr. Useful without a web server.
//
//   node scripts/fcgi-get.mjs <unix-path | host:port | port> [uri] [--timeout ms]
//
// Exit status: 0 when the application completed the request, 1 otherwise.
// Also importable: `fcgiGet(target, uri, { timeoutMs })` resolves to
// { stdout: Buffer, stderr: Buffer, appStatus, protocolStatus }.
import fs from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

const VERSION = 1;
const BEGIN_REQUEST = 1;
const END_REQUEST = 3;
const PARAMS = 4;
const STDIN = 5;
const STDOUT = 6;
const STDERR = 7;
const RESPONDER = 1;
const REQUEST_ID = 1;

function record(type, content = Buffer.alloc(0)) {
  const padding = (8 - (content.length % 8)) % 8;
  const header = Buffer.alloc(8);
  header.writeUInt8(VERSION, 0);
  header.writeUInt8(type, 1);
  header.writeUInt16BE(REQUEST_ID, 2);
  header.writeUInt16BE(content.length, 4);
  header.writeUInt8(padding, 6);
  return Buffer.concat([header, content, Buffer.alloc(padding)]);
}

function length(n) {
  if (n < 128) return Buffer.from([n]);
  const b = Buffer.alloc(4);
  b.writeUInt32BE((n | 0x80000000) >>> 0);
  return b;
}

function nameValues(params) {
  const parts = [];
  for (const [name, value] of Object.entries(params)) {
    const n = Buffer.from(name);
    const v = Buffer.from(value);
    parts.push(length(n.length), length(v.length), n, v);
  }
  return Buffer.concat(parts);
}

/** Records of one stream: content in chunks of at most 65535 bytes, then the empty end record. */
function stream(type, content) {
  const out = [];
  for (let i = 0; i < content.length; i += 0xffff) out.push(record(type, content.subarray(i, i + 0xffff)));
  out.push(record(type));
  return out;
}

/** `/run/app.sock`, `unix:/run/app.sock`, `9000`, `127.0.0.1:9000`, `[::1]:9000`. */
export function parseTarget(text) {
  if (/^\d+$/.test(text)) return { port: Number(text), host: '127.0.0.1' };
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^/:]+):(\d+)$/.exec(text);
  if (m) return { host: m[1] === 'localhost' ? '127.0.0.1' : m[1], port: Number(m[2]) };
  return { path: text.startsWith('unix:') ? text.slice(5) : text };
}

function cgiParams(target, uri) {
  const q = uri.indexOf('?');
  const path = q >= 0 ? uri.slice(0, q) : uri;
  return {
    GATEWAY_INTERFACE: 'CGI/1.1',
    SERVER_SOFTWARE: 'fcgi-get',
    SERVER_PROTOCOL: 'HTTP/1.1',
    SERVER_NAME: 'localhost',
    SERVER_PORT: String(target.port ?? 80),
    REQUEST_METHOD: 'GET',
    REQUEST_URI: uri,
    SCRIPT_NAME: path,
    DOCUMENT_URI: path,
    QUERY_STRING: q >= 0 ? uri.slice(q + 1) : '',
    REMOTE_ADDR: '127.0.0.1',
    CONTENT_LENGTH: '',
    HTTP_HOST: 'localhost',
  };
}

export function fcgiGet(target, uri = '/', { timeoutMs = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const socket = 'path' in target ? net.connect({ path: target.path }) : net.connect({ port: target.port, host: target.host });
    const where = 'path' in target ? `unix:${target.path}` : `${target.host}:${target.port}`;
    const stdout = [];
    const stderr = [];
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (err, result) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(result);
    };
    const timer = setTimeout(() => finish(new Error(`no complete response from ${where} within ${timeoutMs} ms`)), timeoutMs);
    socket.on('error', (err) => finish(new Error(`${where}: ${err.message}`)));
    socket.on('close', () => finish(new Error(`${where} closed the connection before the end of the response`)));
    socket.on('connect', () => {
      const begin = Buffer.alloc(8);
      begin.writeUInt16BE(RESPONDER, 0); // flags 0: close the connection afterwards
      socket.write(Buffer.concat([
        record(BEGIN_REQUEST, begin),
        ...stream(PARAMS, nameValues(cgiParams(target, uri))),
        ...stream(STDIN, Buffer.alloc(0)),
      ]));
    });
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 8) {
        const len = buf.readUInt16BE(4);
        const total = 8 + len + buf.readUInt8(6);
        if (buf.length < total) break;
        const type = buf.readUInt8(1);
        const content = buf.subarray(8, 8 + len);
        buf = buf.subarray(total);
        if (type === STDOUT) stdout.push(content);
        else if (type === STDERR) stderr.push(content);
        else if (type === END_REQUEST) {
          finish(null, {
            stdout: Buffer.concat(stdout),
            stderr: Buffer.concat(stderr),
            appStatus: content.readUInt32BE(0),
            protocolStatus: content.readUInt8(4),
          });
          return;
        }
      }
    });
  });
}

async function main(argv) {
  const args = [...argv];
  let timeoutMs = 10000;
  const t = args.indexOf('--timeout');
  if (t >= 0) {
    timeoutMs = Number(args[t + 1]);
    args.splice(t, 2);
  }
  if (args.length < 1 || args.length > 2 || args[0] === '-h' || args[0] === '--help' || !(timeoutMs > 0)) {
    process.stderr.write('usage: node scripts/fcgi-get.mjs <unix-path | host:port | port> [uri] [--timeout ms]\n');
    return 2;
  }
  const [where, uri = '/'] = args;
  try {
    const r = await fcgiGet(parseTarget(where), uri, { timeoutMs });
    process.stdout.write(r.stdout);
    if (r.stderr.length) process.stderr.write(r.stderr);
    if (r.protocolStatus !== 0) {
      process.stderr.write(`fcgi-get: the application refused the request (protocolStatus ${r.protocolStatus})\n`);
      return 1;
    }
    return 0;
  } catch (err) {
    process.stderr.write(`fcgi-get: ${err.message}\n`);
    return 1;
  }
}

function isMain() {
  try {
    return fs.realpathSync(process.argv[1] ?? '') === fs.realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  process.exitCode = await main(process.argv.slice(2));
}
