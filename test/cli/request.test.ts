/**
 * `libfcgi request` and src/client.ts (fcgiRequest, getValues) against real
 * servers: our low-level Request loop, createServer() with Express, a C
 * libfcgi application run by spawn-fcgi, and small node:net servers that
 * misbehave on purpose (garbage, early close, silence, FCGI_OVERLOADED).
 *
 * The CLI tests run the built command, dist/cli.js: run `npx tsup` first
 * (the test checks that dist/cli.js is newer than the sources it is built from).
 */
import { spawn, execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'

import express from 'express'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'

import { type FcgiResponse, FastCGIClientError, createServer, fcgiRequest, getValues, parseCgiResponse, parseConnectAddress, type Server } from '../../src/index.js'
import { runCgiFcgi } from '../helpers/cgi-fcgi.js'
import { encodeEndRequest, encodeRecord, FCGI_STDERR, FCGI_STDOUT, FCGI_UNKNOWN_TYPE, RecordParser } from '../helpers/fcgi-client.js'
import { serveLoops, TestSession } from '../helpers/session.js'
import { tmpSocketPath, waitFor, withTimeout } from '../helpers/wait.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const CLI = path.join(ROOT, 'dist/cli.js')

// ------------------------------------------------------------------ fixtures

const session = new TestSession()
const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
  await session.release()
})

let tmp: string
beforeAll(() => { tmp = mkdtempSync(path.join(tmpdir(), 'fcgi-req-')) })
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

/** Bytes 0..255 repeated: every byte value, to check that nothing is re-encoded. */
const BINARY = Buffer.from(Array.from({ length: 1024 }, (_, i) => i % 256))

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

/** Our low-level server: the seed's Request loop; the handler answers from env and stdin. */
function lowLevelServer(address: string | number | { port: number; host: string }): { sock: ReturnType<TestSession['listen']> } {
  const sock = session.listen(address)
  void serveLoops(sock, 2, async (req) => {
    const chunks: Buffer[] = []
    for await (const c of req.stdin) chunks.push(c as Buffer)
    const body = Buffer.concat(chunks)
    const env = req.env
    if (env.REQUEST_URI === '/binary') {
      req.stdout.write('Content-Type: application/octet-stream\r\n\r\n')
      req.stdout.write(BINARY)
      return
    }
    req.stderr.write('warning from the app\n')
    req.setExitStatus(3)
    req.stdout.write(`Status: 203 Fine Thanks\r\nContent-Type: application/json\r\nX-Twice: a\r\nX-Twice: b\r\n\r\n`)
    req.stdout.write(JSON.stringify({ env, body: body.toString('latin1') }))
  }).catch(() => {})
  return { sock }
}

/** Express under createServer(): echo, JSON, redirect, errors, binary. */
async function expressServer(address: string | { port: number; host: string }): Promise<{ server: Server; connect: string }> {
  const app = express()
  app.get('/hello', (req, res) => { res.json({ q: req.query, host: req.headers.host, ua: req.headers['user-agent'] ?? null }) })
  app.get('/redirect', (_req, res) => { res.redirect('/hello') })
  app.get('/boom', () => { throw new Error('boom') })
  app.get('/binary', (_req, res) => { res.type('application/octet-stream').send(BINARY) })
  app.get('/cookies', (_req, res) => { res.cookie('a', '1'); res.cookie('b', '2'); res.send('ok') })
  app.all('/echo', (req, res) => {
    // The body back as it came, with what the app saw of it in headers.
    res.setHeader('X-Method', req.method)
    res.setHeader('X-Content-Type', String(req.headers['content-type'] ?? ''))
    res.setHeader('X-Content-Length', String(req.headers['content-length'] ?? ''))
    res.setHeader('X-Transfer-Encoding', String(req.headers['transfer-encoding'] ?? ''))
    res.type('application/octet-stream')
    req.pipe(res)
  })
  const server = createServer(app).listen(address)
  await withTimeout(new Promise((r) => server.once('listening', r)), 5000, 'createServer listening')
  cleanups.push(() => withTimeout(new Promise<void>((r) => server.close(() => r())), 10000, 'server.close'))
  const a = server.address()
  const connect = typeof a === 'string' ? a : typeof address === 'string' ? address : `127.0.0.1:${(a as { port: number }).port}`
  return { server, connect }
}

/** A node:net server whose connections get `onConnection`; closed (connections destroyed) after the test. */
async function rawServer(onConnection: (socket: net.Socket) => void): Promise<string> {
  const sockets = new Set<net.Socket>()
  const srv = net.createServer((s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.on('close', () => sockets.delete(s))
    onConnection(s)
  })
  const p = tmpSocketPath('raw')
  await new Promise<void>((r) => srv.listen(p, r))
  cleanups.push(() => new Promise<void>((r) => {
    for (const s of sockets) s.destroy()
    srv.close(() => r())
  }))
  return p
}

/** Waits for the whole request (the empty FCGI_STDIN record) before calling `answer`. */
function afterRequest(socket: net.Socket, answer: (socket: net.Socket) => void): void {
  const parser = new RecordParser()
  socket.on('data', (chunk: Buffer) => {
    for (const rec of parser.push(chunk)) if (rec.type === 5 && rec.content.length === 0) answer(socket)
  })
}

interface CliResult { code: number | null; stdout: Buffer; stderr: string; ms: number }

/** Runs `node dist/cli.js request ...args`, bounded; the environment has no LIBFCGI_* but what `env` adds. */
function runCli(args: string[], opts: { stdin?: Buffer | string; keepStdinOpen?: boolean; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('LIBFCGI_')) env[k] = v
  Object.assign(env, opts.env)
  const started = Date.now()
  return withTimeout(new Promise<CliResult>((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'request', ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    const err: Buffer[] = []
    const timer = setTimeout(() => child.kill('SIGKILL'), (opts.timeoutMs ?? 15000) - 500)
    child.stdout.on('data', (d: Buffer) => out.push(d))
    child.stderr.on('data', (d: Buffer) => err.push(d))
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString(), ms: Date.now() - started })
    })
    child.stdin.on('error', () => {})
    if (opts.keepStdinOpen) child.stdin.write(opts.stdin ?? '')
    else child.stdin.end(opts.stdin ?? '')
  }), opts.timeoutMs ?? 15000, `libfcgi request ${args.join(' ')}`)
}

const json = (res: FcgiResponse | CliResult) => JSON.parse((('body' in res) ? res.body : res.stdout).toString()) as Record<string, any>

// ------------------------------------------------------------------ API

describe('fcgiRequest against our low-level Request loop', () => {
  it('sends the CGI params a web server would, with headers, params and a body; reads Status, headers, stderr, appStatus', async () => {
    const p = tmpSocketPath('low')
    lowLevelServer(p)
    const res = await fcgiRequest({
      connect: p,
      method: 'put',
      path: '/a%20b/c?x=1&y=%2F',
      headers: [['X-Multi', 'one'], ['x-multi', 'two'], ['Content-Type', 'text/plain'], ['Cookie', 'a=1'], ['Cookie', 'b=2']],
      body: 'héllo',
      params: { HTTPS: 'on', SCRIPT_FILENAME: '/srv/app.php' },
      timeout: 10000,
    })
    expect(res.status).toBe(203)
    expect(res.statusText).toBe('Fine Thanks')
    expect(res.headers['content-type']).toBe('application/json')
    expect(res.headers['x-twice']).toEqual(['a', 'b'])
    expect(res.rawHeaders).toEqual(['Content-Type', 'application/json', 'X-Twice', 'a', 'X-Twice', 'b'])
    expect(res.stderr.toString()).toBe('warning from the app\n')
    expect(res.appStatus).toBe(3)
    expect(res.protocolStatus).toBe(0)
    const { env, body } = json(res)
    expect(body).toBe(Buffer.from('héllo').toString('latin1'))
    expect(env).toMatchObject({
      GATEWAY_INTERFACE: 'CGI/1.1',
      SERVER_PROTOCOL: 'HTTP/1.1',
      REQUEST_METHOD: 'PUT',
      REQUEST_URI: '/a%20b/c?x=1&y=%2F',
      SCRIPT_NAME: '/a b/c',
      DOCUMENT_URI: '/a b/c',
      SCRIPT_FILENAME: '/srv/app.php',
      QUERY_STRING: 'x=1&y=%2F',
      SERVER_NAME: 'localhost',
      SERVER_PORT: '80',
      REMOTE_ADDR: '127.0.0.1',
      HTTP_HOST: 'localhost',
      HTTP_X_MULTI: 'one, two',
      HTTP_COOKIE: 'a=1; b=2',
      CONTENT_TYPE: 'text/plain',
      CONTENT_LENGTH: '6',
      HTTPS: 'on',
    })
  })

  it('works over TCP (127.0.0.1:port); Host and SERVER_PORT follow the address; a body-less GET sends no CONTENT_LENGTH', async () => {
    const { sock } = lowLevelServer({ port: 0, host: '127.0.0.1' })
    await waitFor(() => sock.address(), { what: 'the socket address' })
    const port = (sock.address() as { port: number }).port
    const res = await fcgiRequest({ connect: `127.0.0.1:${port}`, path: '/x', timeout: 10000 })
    const { env } = json(res)
    expect(env.HTTP_HOST).toBe(`127.0.0.1:${port}`)
    expect(env.SERVER_PORT).toBe(String(port))
    expect(env.REQUEST_METHOD).toBe('GET')
    expect(env.CONTENT_LENGTH).toBeUndefined()
    // Byte-exact binary body.
    const bin = await fcgiRequest({ connect: { port, host: '127.0.0.1' }, path: '/binary', timeout: 10000 })
    expect(bin.body.equals(BINARY)).toBe(true)
  })

  it('over IPv6 ([::1]:port), in the authorizer role', async () => {
    const { sock } = lowLevelServer({ port: 0, host: '::1' })
    await waitFor(() => sock.address(), { what: 'the socket address' })
    const port = (sock.address() as { port: number }).port
    const res = await fcgiRequest({ connect: `[::1]:${port}`, role: 'authorizer', timeout: 10000 })
    const { env } = json(res)
    expect(env.HTTP_HOST).toBe(`[::1]:${port}`)
    expect(env.SERVER_NAME).toBe('[::1]')
    expect(env.SERVER_ADDR).toBe('::1')
    expect(env.FCGI_ROLE).toBe('AUTHORIZER')
  })

  it('getValues: FCGI_GET_VALUES answered by libfcgi', async () => {
    const p = tmpSocketPath('values')
    lowLevelServer(p)
    const values = await getValues(p, undefined, { timeout: 10000 })
    expect(Object.keys(values).sort()).toEqual(['FCGI_MAX_CONNS', 'FCGI_MAX_REQS', 'FCGI_MPXS_CONNS'])
    expect(values.FCGI_MPXS_CONNS).toBe('0')
    // and the server still serves requests afterwards
    expect((await fcgiRequest({ connect: p, timeout: 10000 })).status).toBe(203)
  })
})

describe('fcgiRequest against Express under createServer', () => {
  it('GET with query, 404, 500, redirect, cookies, binary', async () => {
    const { connect } = await expressServer(tmpSocketPath('express'))
    const hello = await fcgiRequest({ connect, path: '/hello?name=bob', headers: { 'User-Agent': 'probe/1' }, timeout: 10000 })
    expect(hello.status).toBe(200)
    expect(json(hello)).toEqual({ q: { name: 'bob' }, host: 'localhost', ua: 'probe/1' })
    expect((await fcgiRequest({ connect, path: '/missing', timeout: 10000 })).status).toBe(404)
    const boom = await fcgiRequest({ connect, path: '/boom', timeout: 10000 })
    expect(boom.status).toBe(500)
    expect(boom.statusText).toBe('Internal Server Error')
    const redirect = await fcgiRequest({ connect, path: '/redirect', timeout: 10000 })
    expect(redirect.status).toBe(302)
    expect(redirect.headers.location).toBe('/hello')
    const cookies = await fcgiRequest({ connect, path: '/cookies', timeout: 10000 })
    expect(cookies.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; Path=/'])
    const bin = await fcgiRequest({ connect, path: '/binary', timeout: 10000 })
    expect(bin.body.equals(BINARY)).toBe(true)
  })

  it('streams a 5 MiB body from a Readable (with and without a known length) and gets it back byte for byte', async () => {
    const { connect } = await expressServer({ port: 0, host: '127.0.0.1' })
    const big = Buffer.alloc(5 * 1024 * 1024)
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i)
    const chunks = (): Readable => Readable.from((function* () { for (let o = 0; o < big.length; o += 100_000) yield big.subarray(o, o + 100_000) })())
    const known = await fcgiRequest({ connect, path: '/echo', body: chunks(), contentLength: big.length, headers: { 'Content-Type': 'application/octet-stream' }, timeout: 20000 })
    expect(known.headers['x-content-length']).toBe(String(big.length))
    expect(known.body.length).toBe(big.length)
    expect(sha(known.body)).toBe(sha(big))
    // Unknown length: Transfer-Encoding: chunked, no CONTENT_LENGTH (nginx without request buffering).
    const unknown = await fcgiRequest({ connect, method: 'POST', path: '/echo', body: chunks(), timeout: 20000 })
    expect(unknown.headers['x-transfer-encoding']).toBe('chunked')
    expect(unknown.headers['x-content-length']).toBe('')
    expect(sha(unknown.body)).toBe(sha(big))
    // A Buffer body larger than one record.
    const buf = await fcgiRequest({ connect, path: '/echo', body: BINARY.subarray(0, 700).toString('latin1').repeat(200), timeout: 20000 })
    expect(buf.body.length).toBe(Buffer.byteLength(BINARY.subarray(0, 700).toString('latin1').repeat(200)))
    expect(buf.headers['x-method']).toBe('POST')
  })
})

describe('fcgiRequest errors', () => {
  it('ECONNREFUSED (TCP), ENOENT (no socket file)', async () => {
    const closed = net.createServer()
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r))
    const port = (closed.address() as net.AddressInfo).port
    await new Promise<void>((r) => closed.close(() => r()))
    await expect(fcgiRequest({ connect: `127.0.0.1:${port}`, timeout: 5000 })).rejects.toMatchObject({ code: 'ECONNREFUSED' })
    await expect(fcgiRequest({ connect: path.join(tmp, 'nobody.sock'), timeout: 5000 })).rejects.toMatchObject({ code: 'ENOENT' })
  })

  it('ETIMEDOUT from a server that never answers, within the timeout', async () => {
    const p = await rawServer(() => {})
    const started = Date.now()
    const err = await fcgiRequest({ connect: p, timeout: 400 }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(FastCGIClientError)
    expect(err).toMatchObject({ code: 'ETIMEDOUT', message: expect.stringContaining('waiting for the response') })
    expect(Date.now() - started).toBeLessThan(5000)
  })

  it('ERR_FASTCGI_PROTOCOL for garbage (an HTTP server), ERR_FASTCGI_CLOSED for a close mid-response', async () => {
    const http = await rawServer((s) => afterRequest(s, (sock) => sock.end('HTTP/1.1 400 Bad Request\r\n\r\n')))
    await expect(fcgiRequest({ connect: http, timeout: 5000 })).rejects.toMatchObject({ code: 'ERR_FASTCGI_PROTOCOL', message: expect.stringContaining('HTTP') })
    const midway = await rawServer((s) => afterRequest(s, (sock) => {
      sock.write(encodeRecord(FCGI_STDOUT, 1, 'Content-Type: text/plain\r\n\r\nhalf'))
      sock.end(encodeRecord(FCGI_STDOUT, 1, 'a record cut sho').subarray(0, 12))
    }))
    await expect(fcgiRequest({ connect: midway, timeout: 5000 })).rejects.toMatchObject({ code: 'ERR_FASTCGI_CLOSED', message: expect.stringContaining('before the end') })
    const silent = await rawServer((s) => afterRequest(s, (sock) => sock.end()))
    await expect(fcgiRequest({ connect: silent, timeout: 5000 })).rejects.toMatchObject({ code: 'ERR_FASTCGI_CLOSED', message: expect.stringContaining('without an answer') })
  })

  it('ERR_FASTCGI_REJECTED for FCGI_OVERLOADED; ERR_FASTCGI_BAD_RESPONSE for output without a CGI head', async () => {
    const overloaded = await rawServer((s) => afterRequest(s, (sock) => sock.end(encodeEndRequest(1, 0, 2))))
    await expect(fcgiRequest({ connect: overloaded, timeout: 5000 })).rejects.toMatchObject({ code: 'ERR_FASTCGI_REJECTED', protocolStatus: 2, protocolStatusName: 'OVERLOADED' })
    const headless = await rawServer((s) => afterRequest(s, (sock) => sock.end(Buffer.concat([encodeRecord(FCGI_STDOUT, 1, 'just text'), encodeRecord(FCGI_STDOUT, 1), encodeEndRequest(1)]))))
    await expect(fcgiRequest({ connect: headless, timeout: 5000 })).rejects.toMatchObject({ code: 'ERR_FASTCGI_BAD_RESPONSE' })
  })

  it('records split anywhere, with padding and a management record in between, are read correctly', async () => {
    const p = await rawServer((s) => afterRequest(s, (sock) => {
      const wire = Buffer.concat([
        encodeRecord(FCGI_UNKNOWN_TYPE, 0, Buffer.from([99, 0, 0, 0, 0, 0, 0, 0]), { padding: 3 }),
        encodeRecord(FCGI_STDOUT, 1, 'Location: /elsewhere\n', { padding: 5 }),
        encodeRecord(FCGI_STDERR, 1, 'err!', { padding: 7 }),
        encodeRecord(FCGI_STDOUT, 1, '\nbo', { padding: 1 }),
        encodeRecord(FCGI_STDOUT, 1, 'dy'),
        encodeRecord(FCGI_STDOUT, 1, '', { padding: 2 }),
        encodeEndRequest(1, 42),
      ])
      // One byte per write, flushed separately.
      let i = 0
      const next = (): void => {
        if (i >= wire.length) { sock.end(); return }
        sock.write(wire.subarray(i, ++i), () => setImmediate(next))
      }
      next()
    }))
    const res = await fcgiRequest({ connect: p, timeout: 10000 })
    expect(res.status).toBe(302)
    expect(res.headers.location).toBe('/elsewhere')
    expect(res.body.toString()).toBe('body')
    expect(res.stderr.toString()).toBe('err!')
    expect(res.appStatus).toBe(42)
  })

  it('an answer before the whole body was sent: the response is returned and the body stream released', async () => {
    const p = await rawServer((s) => s.once('data', () => {
      s.end(Buffer.concat([encodeRecord(FCGI_STDOUT, 1, 'Status: 413 Payload Too Large\r\n\r\nno'), encodeRecord(FCGI_STDOUT, 1), encodeEndRequest(1)]))
    }))
    let reads = 0
    const endless = new Readable({ read() { reads++; this.push(Buffer.alloc(16384)) } })
    const res = await fcgiRequest({ connect: p, body: endless, timeout: 5000 })
    expect(res.status).toBe(413)
    expect(res.body.toString()).toBe('no')
    await waitFor(() => endless.destroyed, { timeoutMs: 2000, what: 'the body stream to be destroyed' })
    expect(reads).toBeGreaterThan(0)
  })

  it('parseConnectAddress and parseCgiResponse', () => {
    expect(parseConnectAddress('/run/app.sock')).toEqual({ kind: 'unix', path: '/run/app.sock' })
    expect(parseConnectAddress('unix:rel:1.sock')).toEqual({ kind: 'unix', path: 'rel:1.sock' })
    expect(parseConnectAddress('9000')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 9000 })
    expect(parseConnectAddress(':9000')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 9000 })
    expect(parseConnectAddress('0.0.0.0:9000')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 9000 })
    expect(parseConnectAddress('[::1]:9000')).toEqual({ kind: 'tcp', host: '::1', port: 9000 })
    expect(parseConnectAddress('php-fpm:9000')).toEqual({ kind: 'tcp', host: 'php-fpm', port: 9000 })
    expect(parseConnectAddress({ port: 9000, host: 'app.internal' })).toEqual({ kind: 'tcp', host: 'app.internal', port: 9000 })
    expect(() => parseConnectAddress('127.0.0.1:0')).toThrow(/port 0/)
    expect(() => parseConnectAddress({ fd: 3 } as never)).toThrow(/file descriptor/)
    const r = parseCgiResponse(Buffer.from('Status: 404\nContent-Type: text/plain\n\nnope'))
    expect(r).toMatchObject({ status: 404, statusText: 'Not Found', headers: { 'content-type': 'text/plain' } })
    expect(r.body.toString()).toBe('nope')
    expect(() => parseCgiResponse(Buffer.from('Status: abc\r\n\r\n'))).toThrow(/Status/)
    expect(() => parseCgiResponse(Buffer.from('no colon here\r\n\r\n'))).toThrow(/header line/)
  })
})

// ------------------------------------------------------------------ a non-Node server

// A FastCGI responder in C on the system's libfcgi (Debian libfcgi-dev), run
// by spawn-fcgi, as PHP-FPM-less deployments run C apps.
const C_APP = `
#include <fcgiapp.h>
#include <stdlib.h>
int main(void) {
  FCGX_Request r;
  char buf[4096];
  FCGX_Init();
  FCGX_InitRequest(&r, 0, 0);
  while (FCGX_Accept_r(&r) >= 0) {
    const char *m = FCGX_GetParam("REQUEST_METHOD", r.envp);
    const char *u = FCGX_GetParam("REQUEST_URI", r.envp);
    const char *cl = FCGX_GetParam("CONTENT_LENGTH", r.envp);
    long n = cl ? atol(cl) : 0, got = 0;
    FCGX_FPrintF(r.out, "Status: 201 Created\\r\\nContent-Type: text/plain\\r\\n\\r\\n%s %s\\n", m ? m : "-", u ? u : "-");
    while (got < n) {
      int k = FCGX_GetStr(buf, sizeof buf, r.in);
      if (k <= 0) break;
      FCGX_PutStr(buf, k, r.out);
      got += k;
    }
    FCGX_FPrintF(r.err, "c-app: %ld bytes\\n", got);
    FCGX_SetExitStatus(7, r.out);
    FCGX_Finish_r(&r);
  }
  return 0;
}
`

const haveCTools = existsSync('/usr/include/fcgiapp.h') && existsSync('/usr/bin/spawn-fcgi') && existsSync('/usr/bin/cgi-fcgi') && (() => {
  try { execFileSync('sh', ['-c', 'command -v cc'], { stdio: 'ignore' }); return true } catch { return false }
})()

async function cAppServer(): Promise<string> {
  const src = path.join(tmp, 'capp.c')
  const bin = path.join(tmp, 'capp')
  if (!existsSync(bin)) {
    writeFileSync(src, C_APP)
    execFileSync('cc', ['-O1', '-o', bin, src, '-lfcgi'], { stdio: 'pipe', timeout: 20000 })
  }
  const sockPath = tmpSocketPath('capp')
  // -n: no fork, spawn-fcgi execs the app (so this pid is the app's).
  const child = spawn('spawn-fcgi', ['-n', '-s', sockPath, '--', bin], { stdio: 'ignore' })
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await withTimeout(new Promise((r) => child.once('exit', r)), 5000, 'the C app to exit')
    }
  })
  // The file exists once bound, before listen(): wait until a connect succeeds.
  const connects = (): Promise<boolean> => new Promise((resolve) => {
    const c = net.connect({ path: sockPath })
    c.once('connect', () => { c.destroy(); resolve(true) })
    c.once('error', () => resolve(false))
  })
  await waitFor(async () => existsSync(sockPath) && (await connects()), { timeoutMs: 5000, what: 'the C app to listen' })
  return sockPath
}

describe.runIf(haveCTools)('interoperability with a C libfcgi application (spawn-fcgi)', () => {
  it('API and CLI: status, body, stdin, stderr, appStatus', async () => {
    const p = await cAppServer()
    const res = await fcgiRequest({ connect: p, path: '/c?x', body: BINARY, timeout: 10000 })
    expect(res.status).toBe(201)
    expect(res.appStatus).toBe(7)
    expect(res.stderr.toString()).toBe(`c-app: ${BINARY.length} bytes\n`)
    expect(res.body.equals(Buffer.concat([Buffer.from('POST /c?x\n'), BINARY]))).toBe(true)
    // Debian's cgi-fcgi, given the same params as its environment, gets the same response.
    const viaCgiFcgi = await runCgiFcgi({ path: p }, { env: Object.fromEntries(res.params), stdin: BINARY })
    expect(viaCgiFcgi.code).toBe(7) // cgi-fcgi exits with the appStatus
    const parsed = parseCgiResponse(viaCgiFcgi.stdout)
    expect({ ...parsed, body: parsed.body.toString('latin1') }).toEqual({ status: res.status, statusText: res.statusText, headers: res.headers, rawHeaders: res.rawHeaders, body: res.body.toString('latin1') })
    const cli = await runCli(['-c', p, '-i', '/from-cli'])
    expect(cli.code).toBe(0)
    expect(cli.stdout.toString()).toBe('HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\n\r\nGET /from-cli\n')
    expect(cli.stderr).toBe('c-app: 0 bytes\n')
  })
})

// ------------------------------------------------------------------ the CLI

describe('libfcgi request (dist/cli.js)', () => {
  beforeAll(() => {
    if (!existsSync(CLI)) throw new Error(`${CLI} does not exist: run \`npx tsup\` in ${ROOT} first`)
    const built = statSync(CLI).mtimeMs
    const sources = ['src/client.ts', 'src/cli/request.ts', 'src/cli/main.ts', 'src/cli/args.ts', 'src/address.ts']
    const newer = sources.filter((f) => statSync(path.join(ROOT, f)).mtimeMs > built)
    if (newer.length > 0) throw new Error(`dist/cli.js is older than ${newer.join(', ')}: run \`npx tsup\` in ${ROOT} first`)
  })

  it('GET prints the body; -i prints the status line and headers first; a 404 is exit 0, a 500 exit 1', async () => {
    const { connect } = await expressServer(tmpSocketPath('cli'))
    const plain = await runCli(['--connect', connect, '/hello?name=ann'])
    expect(plain.code).toBe(0)
    expect(json(plain)).toEqual({ q: { name: 'ann' }, host: 'localhost', ua: null })
    const inc = await runCli(['-c', connect, '-i', '-H', 'User-Agent: cli', 'http://example.test:8080/hello'])
    expect(inc.code).toBe(0)
    const text = inc.stdout.toString()
    const [head, body] = text.split('\r\n\r\n')
    const lines = head!.split('\r\n')
    expect(lines[0]).toBe('HTTP/1.1 200 OK')
    expect(lines).toContain('Content-Type: application/json; charset=utf-8')
    expect(lines.slice(1).every((l) => /^[A-Za-z-]+: /.test(l))).toBe(true)
    expect(JSON.parse(body!)).toEqual({ q: {}, host: 'example.test:8080', ua: 'cli' })
    const notFound = await runCli(['-c', connect, '/missing'])
    expect(notFound.code).toBe(0)
    const boom = await runCli(['-c', connect, '/boom'])
    expect(boom.code).toBe(1)
    expect(boom.stderr).toContain('libfcgi request: the server answered 500 Internal Server Error')
    const strict = await runCli(['-c', connect, '--fail-status', '400', '-s', '/missing'])
    expect(strict.code).toBe(1)
    expect(strict.stdout.length).toBe(0)
    const redirect = await runCli(['-c', connect, '-i', '/redirect'])
    expect(redirect.code).toBe(0)
    expect(redirect.stdout.toString()).toMatch(/^HTTP\/1\.1 302 Found\r\n(.*\r\n)*Location: \/hello\r\n/)
  })

  it('-d text, -d @file, -d @- (stdin), -X, -H, -p; binary bytes exact both ways; a 5 MiB file streamed', async () => {
    const { connect } = await expressServer({ port: 0, host: '127.0.0.1' })
    const text = await runCli(['-c', connect, '-i', '-d', 'a=1', '-d', 'b=2', '/echo'])
    expect(text.code).toBe(0)
    const res = text.stdout.toString()
    expect(res).toContain('X-Method: POST\r\n')
    expect(res).toContain('X-Content-Type: application/x-www-form-urlencoded\r\n')
    expect(res.endsWith('\r\n\r\na=1&b=2')).toBe(true)

    const file = path.join(tmp, 'binary.bin')
    writeFileSync(file, BINARY)
    const fromFile = await runCli(['-c', connect, '-X', 'PUT', '-H', 'Content-Type: application/x-thing', '-d', `@${file}`, '/echo'])
    expect(fromFile.code).toBe(0)
    expect(fromFile.stdout.equals(BINARY)).toBe(true)

    const fromStdin = await runCli(['-c', connect, '-d', '@-', '/echo'], { stdin: BINARY })
    expect(fromStdin.code).toBe(0)
    expect(fromStdin.stdout.equals(BINARY)).toBe(true)

    const big = Buffer.alloc(5 * 1024 * 1024, 'x')
    for (let i = 0; i < big.length; i += 997) big[i] = i & 0xff
    const bigFile = path.join(tmp, 'big.bin')
    writeFileSync(bigFile, big)
    const streamed = await runCli(['-c', connect, '-m', '20s', '-d', `@${bigFile}`, '/echo'], { timeoutMs: 25000 })
    expect(streamed.code).toBe(0)
    expect(streamed.stdout.length).toBe(big.length)
    expect(sha(streamed.stdout)).toBe(sha(big))

    const missing = await runCli(['-c', connect, '-d', `@${path.join(tmp, 'nope.txt')}`, '/echo'])
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain('nope.txt')
  })

  it('-p params and headers reach the low-level server; the app\'s stderr goes to stderr; LIBFCGI_LISTEN is the default address', async () => {
    const p = tmpSocketPath('clilow')
    lowLevelServer(p)
    const r = await runCli(['-H', 'X-Api-Key: k', '-p', 'HTTPS=on', '-p', 'SCRIPT_FILENAME=/srv/x.php', '/p'], { env: { LIBFCGI_LISTEN: p } })
    expect(r.code).toBe(0)
    expect(r.stderr).toBe('warning from the app\n')
    const { env } = json(r)
    expect(env).toMatchObject({ HTTP_X_API_KEY: 'k', HTTPS: 'on', SCRIPT_FILENAME: '/srv/x.php', REQUEST_URI: '/p' })
    // LIBFCGI_CONNECT wins over LIBFCGI_LISTEN; -s prints nothing.
    const s = await runCli(['-s', '/p'], { env: { LIBFCGI_CONNECT: p, LIBFCGI_LISTEN: '/nonexistent.sock' } })
    expect(s).toMatchObject({ code: 0, stderr: '' })
    expect(s.stdout.length).toBe(0)
    const values = await runCli(['--get-values', '-c', p])
    expect(values.code).toBe(0)
    expect(values.stdout.toString()).toMatch(/^FCGI_MAX_CONNS=\d+\nFCGI_MAX_REQS=\d+\nFCGI_MPXS_CONNS=0\n$/)
  })

  it('exit 3 refused / no socket, 4 timeout (within --max-time), 5 garbage or an early close, 2 usage', async () => {
    const closed = net.createServer()
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r))
    const port = (closed.address() as net.AddressInfo).port
    await new Promise<void>((r) => closed.close(() => r()))
    const refused = await runCli(['-c', `127.0.0.1:${port}`, '/'])
    expect(refused.code).toBe(3)
    expect(refused.stderr).toMatch(/^libfcgi request: .*ECONNREFUSED/)
    const noSocket = await runCli(['-c', path.join(tmp, 'none.sock'), '/'])
    expect(noSocket.code).toBe(3)

    const never = await rawServer(() => {})
    const slow = await runCli(['-c', never, '-m', '700ms', '/'])
    expect(slow.code).toBe(4)
    expect(slow.stderr).toContain('timed out after 700 ms')
    expect(slow.ms).toBeLessThan(8000)

    // --max-time also bounds reading a stdin that never closes.
    const stuck = await runCli(['-c', never, '-m', '700ms', '-d', '@-', '/'], { stdin: 'partial', keepStdinOpen: true })
    expect(stuck.code).toBe(4)
    expect(stuck.stderr).toContain('reading the body')
    expect(stuck.ms).toBeLessThan(8000)

    const garbage = await rawServer((s) => s.end('SSH-2.0-OpenSSH_9.2\r\n'))
    const g = await runCli(['-c', garbage, '/'])
    expect(g.code).toBe(5)
    expect(g.stderr).toContain('not a FastCGI record')
    const early = await rawServer((s) => afterRequest(s, (sock) => sock.end(encodeRecord(FCGI_STDOUT, 1, 'Status: 200\r\n\r\npartial'))))
    const e = await runCli(['-c', early, '/'])
    expect(e.code).toBe(5)
    expect(e.stderr).toContain('before the end of the response')

    expect((await runCli(['-c', early, '--bogus'])).code).toBe(2)
    expect((await runCli(['/'])).code).toBe(2) // no address anywhere
    const help = await runCli(['--help'])
    expect(help.code).toBe(0)
    expect(help.stdout.toString()).toContain('exit status:')
  })
})
