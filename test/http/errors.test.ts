// createServer() when things go wrong: listeners that throw or reject,
// responses that never end, timeouts, clients that go away, writes after
// end(), listen()/close() errors. node:http is the reference wherever it has
// the same situation: the same listener runs on a real node:http server and
// what both do is compared. After each failure the server must keep serving.
import { execFile } from 'node:child_process'
import http from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'

import { afterEach, describe, expect, it } from 'vitest'

import { createServer, type IncomingMessage, type Server, type ServerOptions, type ServerResponse } from '../../src/index.js'
import { bundleChild } from '../helpers/bundle.js'
import {
  defaultParams,
  encodeAbort,
  encodeBeginRequest,
  encodeParams,
  encodeRecord,
  encodeRequest,
  FCGI_END_REQUEST,
  FCGI_STDIN,
  FCGI_STDERR,
  FCGI_STDOUT,
  FcgiConnection,
  fcgiRequest,
  parseCgiResponse,
} from '../helpers/fcgi-client.js'
import { httpRequest } from '../helpers/http-client.js'
import { startNginx, stopAllNginx } from '../helpers/nginx.js'
import { trackUncaught } from '../helpers/uncaught.js'
import { sleep, tmpSocketPath, waitFor, withTimeout } from '../helpers/wait.js'

type Listener = (req: IncomingMessage, res: ServerResponse) => unknown
type NodeListener = (req: http.IncomingMessage, res: http.ServerResponse) => unknown

const servers: Array<Server | http.Server | net.Server> = []
const connections: FcgiConnection[] = []
const sockets: net.Socket[] = []

afterEach(async () => {
  for (const c of connections.splice(0)) c.destroy()
  for (const s of sockets.splice(0)) s.destroy()
  await stopAllNginx()
  await Promise.all(servers.splice(0).map((s) => {
    if (s instanceof http.Server) s.closeAllConnections()
    return withTimeout(new Promise<void>((r) => s.close(() => r())), 15000, 'server.close() in afterEach')
  }))
})
// After the clean-up hook, so that it stops listening before the clean-up runs.
const uncaught = trackUncaught()

interface Started { server: Server; path: string }

async function start(listener: Listener, options: ServerOptions = {}): Promise<Started> {
  const path = tmpSocketPath('errors')
  const server = createServer(options, listener)
  servers.push(server)
  server.listen(path)
  await withTimeout(new Promise((r, j) => { server.once('listening', r); server.once('error', j) }), 5000, 'listening')
  return { server, path }
}

/** The same listener on node:http (the reference). */
async function startNode(listener: NodeListener): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer(listener)
  servers.push(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return { server, port: (server.address() as AddressInfo).port }
}

async function get(path: string, uri: string, timeoutMs = 5000) {
  const r = await fcgiRequest({ path }, { params: defaultParams({ REQUEST_URI: uri }), timeoutMs })
  return { ...parseCgiResponse(r.stdout), stdout: r.stdout }
}

/**
 * A request whose response fails half-way: the connection is closed without
 * FCGI_END_REQUEST, so a web server cuts the response short (node:http resets
 * the socket). Returns what arrived before.
 */
async function getCut(path: string, uri: string): Promise<{ stdout: Buffer; ended: boolean }> {
  return exchange(path, encodeRequest({ requestId: 1, params: defaultParams({ REQUEST_URI: uri }) }))
}

/** Sends raw records, collects FCGI_STDOUT (and FCGI_STDERR) until FCGI_END_REQUEST (ended) or the connection closes. */
async function exchange(path: string, records: Buffer): Promise<{ stdout: Buffer; stderr: string; ended: boolean }> {
  const conn = await FcgiConnection.connect({ path })
  try {
    void conn.write(records)
    const stdout: Buffer[] = []
    const stderr: Buffer[] = []
    const result = (ended: boolean) => ({ stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr).toString(), ended })
    for (;;) {
      if (conn.closed && conn.pending.length === 0) return result(false)
      let rec
      try {
        rec = await conn.readRecord(10000)
      } catch (err) {
        if (conn.closed) return result(false)
        throw err
      }
      if (rec.type === FCGI_STDOUT) stdout.push(rec.content)
      if (rec.type === FCGI_STDERR) stderr.push(rec.content)
      if (rec.type === FCGI_END_REQUEST) return result(true)
    }
  } finally {
    conn.destroy()
  }
}

/** The server answers a plain request (every listener here serves /ok). */
async function expectServing(path: string): Promise<void> {
  const r = await get(path, '/ok')
  expect(r.status).toBe(200)
  expect(r.body.toString()).toBe('ok')
}

function ok(req: http.IncomingMessage, res: http.ServerResponse): boolean {
  if (req.url !== '/ok') return false
  res.end('ok')
  return true
}

interface Failure { err: Error; req: IncomingMessage; res: ServerResponse }

function collectFailures(server: Server): Failure[] {
  const failures: Failure[] = []
  server.on('requestError', (err: Error, req: IncomingMessage, res: ServerResponse) => failures.push({ err, req, res }))
  return failures
}

describe('a request listener that fails', () => {
  it("throws: 500, 'requestError' with (err, req, res), and the server keeps serving", async () => {
    const { server, path } = await start((req, res) => {
      if (ok(req, res)) return
      throw new Error('listener blew up')
    })
    const failures = collectFailures(server)
    const r = await get(path, '/boom?x=1')
    expect(r.status).toBe(500)
    expect(r.body.toString()).toBe('Internal Server Error\n')
    expect(failures).toHaveLength(1)
    const [f] = failures
    expect(f!.err.message).toBe('listener blew up')
    expect(f!.req.url).toBe('/boom?x=1')
    expect(f!.res).toBeInstanceOf(http.ServerResponse)
    expect(f!.res.req).toBe(f!.req)
    expect(f!.res.writableEnded).toBe(true)
    await expectServing(path)
    await uncaught.expectNone()
  })

  it("an async listener rejects: 500, 'requestError' with (err, req, res), and the server keeps serving", async () => {
    const { server, path } = await start(async (req, res) => {
      if (ok(req, res)) return
      await sleep(20)
      throw new Error('async listener rejected')
    })
    const failures = collectFailures(server)
    const r = await get(path, '/async-boom')
    expect(r.status).toBe(500)
    expect(failures).toHaveLength(1)
    expect(failures[0]!.err.message).toBe('async listener rejected')
    expect(failures[0]!.req.url).toBe('/async-boom')
    expect(failures[0]!.res.req).toBe(failures[0]!.req)
    await expectServing(path)
    await uncaught.expectNone()
  })

  it('throws (async) after the head and part of the body went out: the client sees the response cut short, the server keeps serving', async () => {
    const { server, path } = await start(async (req, res) => {
      if (ok(req, res)) return
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': '100' })
      res.write('partial')
      await sleep(50)
      throw new Error('late failure')
    })
    const failures = collectFailures(server)
    // Raw FastCGI: the head and the partial body, then the connection
    // closes without FCGI_END_REQUEST.
    const cut = await getCut(path, '/late')
    expect(cut.ended).toBe(false)
    const raw = parseCgiResponse(cut.stdout)
    expect(raw.status).toBe(200)
    expect(raw.headers['content-length']).toBe('100')
    expect(raw.body.toString()).toBe('partial')
    expect(failures.map((f) => f.err.message)).toEqual(['late failure'])
    expect(failures[0]!.res.headersSent).toBe(true)
    // Through nginx: the client sees a response cut short (7 of 100 bytes).
    const nginx = await startNginx({ upstream: { path } })
    const viaNginx = await httpRequest(`${nginx.url}/late`, { allowTruncated: true })
    expect(viaNginx.status).toBe(200)
    expect(viaNginx.complete).toBe(false)
    expect(viaNginx.body.toString()).toBe('partial')
    const after = await httpRequest(`${nginx.url}/ok`)
    expect(after.body.toString()).toBe('ok')
    await expectServing(path)
    await uncaught.expectNone()
  })

  it('throws in the same tick as writeHead()+write(): the response is destroyed before anything left, as res.destroy() on node:http', async () => {
    // node:http with the same writes followed by res.destroy(): what was
    // written is still corked in the socket and is dropped with it.
    const reference = await startNode((req, res) => {
      if (ok(req, res)) return
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': '100' })
      res.write('partial')
      res.destroy(new Error('late failure'))
    })
    const refSock = net.connect(reference.port, '127.0.0.1')
    sockets.push(refSock)
    let refGot = ''
    refSock.on('data', (d: Buffer) => { refGot += d.toString('latin1') })
    refSock.on('error', () => {})
    refSock.write('GET /late HTTP/1.1\r\nHost: x\r\n\r\n')
    await withTimeout(new Promise((r) => refSock.once('close', r)), 5000, 'node:http to close the connection')
    expect(refGot).toBe('')

    const { server, path } = await start((req, res) => {
      if (ok(req, res)) return
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': '100' })
      res.write('partial')
      throw new Error('late failure')
    })
    const failures = collectFailures(server)
    // The request ends with no output at all (and no FCGI_END_REQUEST)...
    const raw = await getCut(path, '/late')
    expect(raw.ended).toBe(false)
    expect(raw.stdout.toString('latin1')).toBe(refGot)
    expect(failures.map((f) => f.err.message)).toEqual(['late failure'])
    // ...which nginx answers with 502 Bad Gateway.
    const nginx = await startNginx({ upstream: { path } })
    const viaNginx = await httpRequest(`${nginx.url}/late`, { allowTruncated: true })
    expect(viaNginx.status).toBe(502)
    expect((await httpRequest(`${nginx.url}/ok`)).body.toString()).toBe('ok')
    await expectServing(path)
    await uncaught.expectNone()
  })
})

describe('requestTimeout (as node:http: the time to receive the request)', () => {
  /** A POST announcing 10 body bytes of which only 3 ever arrive; returns what came back and whether END_REQUEST did. */
  function postStalled(path: string, uri: string): Promise<{ stdout: Buffer; stderr: string; ended: boolean }> {
    return exchange(path, Buffer.concat([
      encodeBeginRequest(1, 1, false),
      encodeParams(1, defaultParams({ REQUEST_URI: uri, REQUEST_METHOD: 'POST', CONTENT_LENGTH: '10' })),
      encodeRecord(FCGI_STDIN, 1, Buffer.from('abc')),
    ]))
  }

  it("a request whose body does not arrive in time is answered 408, logged on FCGI_STDERR, 'clientError' ERR_HTTP_REQUEST_TIMEOUT", async () => {
    const events: string[] = []
    const { server, path } = await start((req, res) => {
      if (ok(req, res)) return
      res.on('close', () => events.push('res close'))
      req.on('close', () => events.push('req close'))
      req.resume()  // reads the body, which never completes
    }, { requestTimeout: 500 })
    const failures = collectFailures(server)
    const clientErrors: string[] = []
    server.on('clientError', (err: Error & { code?: string }) => clientErrors.push(err.code ?? ''))
    const t0 = Date.now()
    const r = await postStalled(path, '/stalled')
    expect(Date.now() - t0).toBeGreaterThanOrEqual(450)
    expect(r.ended).toBe(true)
    expect(parseCgiResponse(r.stdout).status).toBe(408)
    expect(r.stderr).toBe('libfcgi: POST /stalled: request body not complete after requestTimeout 500 ms: answered 408\n')
    expect(clientErrors).toEqual(['ERR_HTTP_REQUEST_TIMEOUT'])
    await waitFor(() => events.length === 2, { what: "'close' on req and res" })
    expect(events.sort()).toEqual(['req close', 'res close'])
    expect(failures).toEqual([])
    await expectServing(path)
    await uncaught.expectNone()
  })

  it('a response already started when the body times out is cut short', async () => {
    const { server, path } = await start((req, res) => {
      if (ok(req, res)) return
      res.writeHead(200, { 'Content-Type': 'text/plain' })
      res.write('started')
      req.resume()
    }, { requestTimeout: 500 })
    const failures = collectFailures(server)
    const t0 = Date.now()
    const cut = await postStalled(path, '/unended')
    expect(Date.now() - t0).toBeGreaterThanOrEqual(450)
    expect(cut.ended).toBe(false)  // the web server must not take it for complete
    const r = parseCgiResponse(cut.stdout)
    expect(r.status).toBe(200)
    expect(r.body.toString()).toBe('started')
    expect(failures).toEqual([])
    await expectServing(path)
    await uncaught.expectNone()
  })

  it('a complete request may take longer than requestTimeout to answer (SSE, long downloads), as on node:http', async () => {
    const { path } = await start(async (req, res) => {
      if (ok(req, res)) return
      res.writeHead(200, { 'Content-Type': 'text/plain' })
      for (let i = 0; i < 8; i++) {
        res.write(String(i))
        await sleep(100)
      }
      res.end('!')
    }, { requestTimeout: 300 })
    const r = await get(path, '/slow-but-fine', 10000)
    expect(r.status).toBe(200)
    expect(r.body.toString()).toBe('01234567!')
    await uncaught.expectNone()
  })
})

describe('server.setTimeout()', () => {
  it("with a 'timeout' listener: the listener gets the socket and the request is left to it", async () => {
    let pending: ServerResponse | undefined
    const { server, path } = await start((req, res) => {
      if (ok(req, res)) return
      pending = res
    })
    const timeouts: unknown[] = []
    server.setTimeout(300)
    server.on('timeout', (socket: unknown) => { timeouts.push(socket) })
    const t0 = Date.now()
    const answer = get(path, '/slow', 10000)
    await waitFor(() => timeouts.length > 0, { what: "the server's 'timeout' event", timeoutMs: 5000 })
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250)
    expect(timeouts[0]).toBe(pending!.socket)
    // As node:http: a handled timeout does not end the request.
    await sleep(100)
    expect(pending!.writableEnded).toBe(false)
    pending!.end('late but fine')
    const r = await answer
    expect(r.status).toBe(200)
    expect(r.body.toString()).toBe('late but fine')
    await expectServing(path)
    await uncaught.expectNone()
  })

  it("without a 'timeout' listener the request is cut short (node:http destroys the socket)", async () => {
    const closed: string[] = []
    const { server, path } = await start((req, res) => {
      if (ok(req, res)) return
      res.on('close', () => closed.push('res close'))
    })
    server.setTimeout(300)
    const t0 = Date.now()
    const r = await getCut(path, '/slow')
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250)
    expect(r.ended).toBe(false)
    expect(r.stdout.length).toBe(0)
    await waitFor(() => closed.length === 1, { what: "'close' on res" })
    await expectServing(path)
    await uncaught.expectNone()
  })

  it('is an inactivity timeout, as node:http: a response that keeps writing is not cut', async () => {
    // Writes every 100 ms for 1 s, with a 300 ms timeout and no 'timeout' listener.
    const trickle = async (res: http.ServerResponse) => {
      res.writeHead(200, { 'Content-Type': 'text/plain' })
      for (let i = 0; i < 10; i++) {
        if (res.destroyed) return
        res.write(`${i}`)
        await sleep(100)
      }
      res.end('!')
    }
    const reference = await startNode((req, res) => { if (!ok(req, res)) void trickle(res) })
    reference.server.setTimeout(300)
    const ref = await httpRequest(`http://127.0.0.1:${reference.port}/trickle`, { allowTruncated: true })
    expect({ complete: ref.complete, body: ref.body.toString() }).toEqual({ complete: true, body: '0123456789!' })

    const { server, path } = await start((req, res) => { if (!ok(req, res)) void trickle(res) })
    server.setTimeout(300)
    const r = await get(path, '/trickle', 10000)
    expect(r.body.toString()).toBe(ref.body.toString())
    await expectServing(path)
    await uncaught.expectNone()
  })
})

/** What a listener saw of a request whose client went away. */
interface GoneOutcome {
  events: string[]
  reqDestroyed?: boolean
  resWritableEnded?: boolean
  reqErrorCode?: string
  bytes: number
}

function goneRecorder(seen: GoneOutcome, onData: () => void): NodeListener {
  return (req, res) => {
    if (ok(req, res)) return
    req.on('data', (c: Buffer) => {
      seen.bytes += c.length
      onData()
    })
    req.on('aborted', () => seen.events.push('req aborted'))
    req.on('error', (e: Error & { code?: string }) => { seen.reqErrorCode = e.code })
    req.on('close', () => {
      seen.events.push('req close')
      seen.reqDestroyed = req.destroyed
    })
    res.on('close', () => {
      seen.events.push('res close')
      seen.resWritableEnded = res.writableEnded
    })
  }
}

/** node:http, client sends half a body and disconnects. */
async function nodeClientGone(): Promise<GoneOutcome> {
  const seen: GoneOutcome = { events: [], bytes: 0 }
  let gotData!: () => void
  const data = new Promise<void>((r) => { gotData = r })
  const { port } = await startNode(goneRecorder(seen, () => gotData()))
  const sock = net.connect(port, '127.0.0.1')
  sockets.push(sock)
  sock.on('error', () => {})
  sock.write(`POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n${'x'.repeat(1000)}`)
  await withTimeout(data, 5000, 'the body to arrive at node:http')
  sock.destroy()
  await waitFor(() => seen.events.length >= 3, { what: "node:http's events" })
  await sleep(50)
  return seen
}

/** Ours, the raw FastCGI client sends half a body and then disconnects or sends FCGI_ABORT_REQUEST. */
async function fcgiClientGone(how: 'disconnect' | 'abort record'): Promise<{ seen: GoneOutcome; path: string; conn: FcgiConnection }> {
  const seen: GoneOutcome = { events: [], bytes: 0 }
  let gotData!: () => void
  const data = new Promise<void>((r) => { gotData = r })
  const { path } = await start(goneRecorder(seen, () => gotData()) as Listener)
  const conn = await FcgiConnection.connect({ path })
  connections.push(conn)
  const params = defaultParams({ REQUEST_URI: '/upload', REQUEST_METHOD: 'POST', CONTENT_LENGTH: '100000' })
  await conn.write(Buffer.concat([
    encodeBeginRequest(1, 1, how === 'abort record'),
    encodeParams(1, params),
    encodeRecord(FCGI_STDIN, 1, Buffer.alloc(1000, 'x')),
  ]))
  await withTimeout(data, 5000, 'the body to arrive at the listener')
  if (how === 'disconnect') conn.destroy()
  else await conn.write(encodeAbort(1))
  await waitFor(() => seen.events.length >= 3, { what: 'the events of the aborted request', timeoutMs: 5000 })
  await sleep(50)
  return { seen, path, conn }
}

describe('the client goes away mid-request', () => {
  it("connection dropped during the body: 'aborted' and 'close' on req, 'close' on res, req.destroyed — as node:http", async () => {
    const ref = await nodeClientGone()
    const { seen, path } = await fcgiClientGone('disconnect')
    expect(seen.events).toContain('req close')
    expect(seen.events).toContain('res close')
    expect(seen.reqDestroyed).toBe(true)
    expect(seen.resWritableEnded).toBe(false)
    expect(seen.bytes).toBe(1000)
    expect([...seen.events].sort()).toEqual([...ref.events].sort())
    expect({ reqDestroyed: seen.reqDestroyed, resWritableEnded: seen.resWritableEnded })
      .toEqual({ reqDestroyed: ref.reqDestroyed, resWritableEnded: ref.resWritableEnded })
    await expectServing(path)
    await uncaught.expectNone()
  })

  it('FCGI_ABORT_REQUEST on a kept connection: the same events, then FCGI_END_REQUEST', async () => {
    const { seen, path, conn } = await fcgiClientGone('abort record')
    expect([...seen.events].sort()).toEqual(['req aborted', 'req close', 'res close'])
    expect(seen.reqDestroyed).toBe(true)
    expect(seen.resWritableEnded).toBe(false)
    const end = await conn.readUntilEnd(1, 5000)
    expect(end.stdout.length).toBe(0)
    await expectServing(path)
    await uncaught.expectNone()
  })

  it("the error an 'error' listener on req gets has node:http's code", async () => {
    // node:http destroys the request with ECONNRESET ("aborted").
    const ref = await nodeClientGone()
    const { seen } = await fcgiClientGone('disconnect')
    expect(ref.reqErrorCode).toBe('ECONNRESET')
    expect(seen.reqErrorCode).toBe(ref.reqErrorCode)
  })

  it("connection dropped while the response is being written: 'close' on res, writes after it are dropped quietly", async () => {
    let res0: ServerResponse | undefined
    const events: string[] = []
    const { path } = await start((req, res) => {
      if (ok(req, res)) return
      res0 = res
      res.on('close', () => events.push('res close'))
      req.on('close', () => events.push('req close'))
      res.writeHead(200, { 'Content-Type': 'text/plain' })
      res.write('first part')
    })
    const conn = await FcgiConnection.connect({ path })
    connections.push(conn)
    await conn.write(Buffer.concat([
      encodeBeginRequest(1, 1, false),
      encodeParams(1, defaultParams({ REQUEST_URI: '/stream' })),
      encodeRecord(FCGI_STDIN, 1),
    ]))
    await withTimeout(conn.readRecord(5000), 5000, 'the first STDOUT record')
    conn.destroy()
    await waitFor(() => events.includes('res close'), { what: "'close' on res" })
    expect(res0!.destroyed).toBe(true)
    res0!.write('after the client left')
    res0!.end()
    await sleep(100)
    await expectServing(path)
    await uncaught.expectNone()
  })
})

describe('writing after end()', () => {
  it('the same as node:http: ERR_STREAM_WRITE_AFTER_END, and uncaught exactly where node:http throws', async () => {
    // In child processes: node:http itself raises an uncaught exception for
    // a write right after end() when nobody listens for 'error'.
    const script = bundleChild(fileURLToPath(new URL('./fixtures/errors-write-after-end.ts', import.meta.url)))
    const run = (kind: string) => new Promise<unknown[]>((resolve, reject) => {
      execFile(process.execPath, [script, kind], { timeout: 20000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`child (${kind}) failed: ${err.message}\n${stderr}`))
        else resolve(JSON.parse(stdout.trim()) as unknown[])
      })
    })
    const [reference, ours] = await Promise.all([run('node'), run('fcgi')])
    const byMode = (list: unknown[]) => Object.fromEntries((list as Array<{ mode: string }>).map((o) => [o.mode, o]))
    expect(byMode(reference)['sync+errorListener']).toMatchObject({ errorEvent: 'ERR_STREAM_WRITE_AFTER_END', uncaught: [] })
    expect(byMode(ours)['sync+errorListener']).toMatchObject({ errorEvent: 'ERR_STREAM_WRITE_AFTER_END', uncaught: [] })
    expect(byMode(ours)).toEqual(byMode(reference))
  })
})

describe('listen() and close() errors', () => {
  it("listen() on a unix socket in use: 'error' EADDRINUSE (as node:net), the first server keeps serving", async () => {
    const { path } = await start((req, res) => { ok(req, res) })
    const reference = await new Promise<NodeJS.ErrnoException>((resolve) => {
      const s = net.createServer()
      s.once('error', resolve)
      s.listen(path)
    })
    expect(reference.code).toBe('EADDRINUSE')
    const second = createServer((_req, res) => { res.end('second') })
    let listened = false
    second.once('listening', () => { listened = true })
    const err = new Promise<NodeJS.ErrnoException>((r) => second.once('error', r))
    second.listen(path)
    const e = await withTimeout(err, 5000, "'error' from listen()")
    expect(e.code).toBe(reference.code)
    expect(second.listening).toBe(false)
    expect(listened).toBe(false)
    await expectServing(path)
    await uncaught.expectNone()
  })

  it("listen() on a TCP port in use: 'error' EADDRINUSE", async () => {
    const first = createServer((req, res) => { ok(req, res) })
    servers.push(first)
    first.listen(0, '127.0.0.1')
    await withTimeout(new Promise((r) => first.once('listening', r)), 5000, 'listening')
    const port = (first.address() as AddressInfo).port
    const second = createServer(() => {})
    const err = new Promise<NodeJS.ErrnoException>((r) => second.once('error', r))
    second.listen(port, '127.0.0.1')
    expect((await withTimeout(err, 5000, "'error' from listen()")).code).toBe('EADDRINUSE')
    expect(second.listening).toBe(false)
    const r = await fcgiRequest({ port, host: '127.0.0.1' }, { params: defaultParams({ REQUEST_URI: '/ok' }) })
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('ok')
  })

  it('close(cb) when not listening: cb gets ERR_SERVER_NOT_RUNNING, as node:http', async () => {
    const reference = await closeOutcome(http.createServer())
    expect(reference.code).toBe('ERR_SERVER_NOT_RUNNING')
    // Never listened.
    expect((await closeOutcome(createServer(() => {}))).code).toBe(reference.code)
    // Listened, closed, closed again.
    const { server } = await start(() => {})
    servers.pop()
    await withTimeout(new Promise<void>((r) => server.close(() => r())), 15000, 'the first close()')
    expect((await closeOutcome(server)).code).toBe(reference.code)
  })

  it("close(cb) when not listening also emits 'close', as node:http", async () => {
    const reference = await closeOutcome(http.createServer())
    expect(reference.closeEvents).toBe(1)
    expect((await closeOutcome(createServer(() => {}))).closeEvents).toBe(reference.closeEvents)
  })
})

/** close(cb) on a server that is not listening: the error cb gets and how many 'close' events follow. */
async function closeOutcome(server: { close(cb: (err?: Error) => void): unknown; on(e: 'close', l: () => void): unknown }) {
  let closeEvents = 0
  server.on('close', () => { closeEvents++ })
  const err = await withTimeout(new Promise<Error | undefined>((r) => server.close(r)), 5000, 'close(cb)')
  await sleep(20)
  return { code: (err as (Error & { code?: string }) | undefined)?.code, closeEvents }
}

describe('after all of that', () => {
  it('one server through every failure above keeps serving', async () => {
    let parked: ServerResponse | undefined
    const { server, path } = await start(async (req, res) => {
      if (ok(req, res)) return
      switch (req.url) {
        case '/throw': throw new Error('x')
        case '/reject': await sleep(10); throw new Error('y')
        case '/late': res.write('part'); await sleep(10); throw new Error('z')
        case '/write-after-end': res.on('error', () => {}); res.end('done'); res.write('more'); return
        case '/park': parked = res; return
        default: res.statusCode = 404; res.end()
      }
    }, { requestTimeout: 400 })
    const failures = collectFailures(server)
    expect((await get(path, '/throw')).status).toBe(500)
    expect((await get(path, '/reject')).status).toBe(500)
    const late = await getCut(path, '/late')
    expect(late.ended).toBe(false)
    expect(parseCgiResponse(late.stdout).body.toString()).toBe('part')
    expect((await get(path, '/write-after-end')).body.toString()).toBe('done')
    const stalled = await FcgiConnection.connect({ path })
    await stalled.write(Buffer.concat([encodeBeginRequest(1, 1, false), encodeParams(1, defaultParams({ REQUEST_URI: '/park', REQUEST_METHOD: 'POST', CONTENT_LENGTH: '10' }))]))
    expect(parseCgiResponse((await stalled.readUntilEnd(1, 5000)).stdout).status).toBe(408)
    stalled.destroy()
    expect(parked?.writableEnded).toBe(true)
    // a client that leaves
    const conn = await FcgiConnection.connect({ path })
    await conn.write(Buffer.concat([encodeBeginRequest(1, 1, false), encodeParams(1, defaultParams({ REQUEST_URI: '/park', REQUEST_METHOD: 'POST', CONTENT_LENGTH: '10' }))]))
    await sleep(50)
    conn.destroy()
    expect(failures.map((f) => f.err.message)).toEqual(['x', 'y', 'z'])
    const results = await Promise.all(Array.from({ length: 20 }, () => get(path, '/ok')))
    expect(results.map((r) => r.body.toString())).toEqual(Array(20).fill('ok'))
    await waitFor(() => server.fcgiSocket!.stats().busyConnections === 0, { what: 'no busy connections left' })
    await uncaught.expectNone()
  })
})
