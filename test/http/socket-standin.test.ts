// The socket stand-in (FcgiConnection) and req.env, as an application sees
// them: what node:http's messages and frameworks read from a socket, the
// events it emits, and req.env built on first read.
import http from 'node:http'
import express from 'express'
import { afterEach, describe, expect, it } from 'vitest'

import { createServer, FcgiConnection, type IncomingMessage, type Server, type ServerResponse } from '../../src/index.js'
import { defaultParams, fcgiRequest, parseCgiResponse } from '../helpers/fcgi-client.js'
import { tmpSocketPath } from '../helpers/wait.js'

let server: Server | undefined
afterEach(async () => {
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()))
  server = undefined
})

async function start(listener: (req: IncomingMessage, res: ServerResponse) => unknown): Promise<string> {
  const path = tmpSocketPath('standin')
  server = createServer(listener as never).listen({ path })
  await new Promise((r) => server!.once('listening', r))
  return path
}

describe('req.socket (FcgiConnection)', () => {
  it('has what node:http and frameworks read; end of the request: finish then close, once', async () => {
    const seen: Record<string, unknown> = {}
    const events: string[] = []
    let closed!: () => void
    const closedP = new Promise<void>((r) => { closed = r })
    const path = await start((req, res) => {
      const s = req.socket as unknown as FcgiConnection
      Object.assign(seen, {
        same: s === (res.socket as unknown) && s === (req.connection as unknown), isConn: s instanceof FcgiConnection,
        remoteAddress: s.remoteAddress, remotePort: s.remotePort, remoteFamily: s.remoteFamily,
        localAddress: s.localAddress, localPort: s.localPort, address: s.address(), encrypted: s.encrypted,
        writable: s.writable, destroyed: s.destroyed, writableLength: s.writableLength, writableCorked: s.writableCorked,
        writableHighWaterMark: s.writableHighWaterMark, chain: [s.setNoDelay(), s.setKeepAlive(), s.ref(), s.unref()].every((x) => x === s),
      })
      s.on('finish', () => events.push('socket finish'))
      s.on('close', (hadError: boolean) => { events.push(`socket close ${hadError}`); closed() })
      res.on('finish', () => events.push('res finish'))
      res.on('close', () => events.push('res close'))
      res.end('ok')
    })
    const raw = await fcgiRequest({ path }, { params: defaultParams({ REMOTE_ADDR: '2001:db8::1', REMOTE_PORT: '4000', SERVER_PORT: '8443', HTTPS: 'on' }) })
    expect(parseCgiResponse(raw.stdout).body.toString()).toBe('ok')
    await closedP
    await new Promise((r) => setImmediate(r))
    expect(seen).toEqual({
      same: true, isConn: true, remoteAddress: '2001:db8::1', remotePort: 4000, remoteFamily: 'IPv6',
      localAddress: '127.0.0.1', localPort: 8443, address: { address: '127.0.0.1', port: 8443, family: 'IPv4' }, encrypted: true,
      writable: true, destroyed: false, writableLength: 0, writableCorked: 0, writableHighWaterMark: 64 * 1024, chain: true,
    })
    // res hears the socket's 'close' first (node:http's listener, added by assignSocket).
    expect(events).toEqual(['res finish', 'socket finish', 'res close', 'socket close false'])
  })

  it('a write callback runs; write() after end is refused through the callback, as a stream', async () => {
    const results: unknown[] = []
    const path = await start((req, res) => {
      const s = req.socket as unknown as FcgiConnection
      res.write('a', () => {
        results.push('write cb')
        res.end('b', () => {
          s.write('late', (err?: Error | null) => results.push((err as Error & { code?: string })?.code))
        })
      })
    })
    const raw = await fcgiRequest({ path }, { params: defaultParams() })
    expect(parseCgiResponse(raw.stdout).body.toString()).toBe('ab')
    await new Promise((r) => setTimeout(r, 50))
    expect(results[0]).toBe('write cb')
    expect(['ERR_STREAM_WRITE_AFTER_END', 'ERR_STREAM_DESTROYED']).toContain(results[1])
  })

  it('a Buffer body after the head, Uint8Array chunks, and res.writableFinished once done', async () => {
    let finished: boolean | undefined
    const path = await start((_req, res) => {
      res.setHeader('Content-Type', 'application/octet-stream')
      res.write(Buffer.from('buf-'))
      res.write(new Uint8Array([0x75, 0x38]))
      res.end(() => { finished = res.writableFinished })
    })
    const raw = await fcgiRequest({ path }, { params: defaultParams() })
    const parsed = parseCgiResponse(raw.stdout)
    expect(parsed.status).toBe(200)
    expect(parsed.headers['content-type']).toBe('application/octet-stream')
    expect(parsed.body.toString()).toBe('buf-u8')
    expect(finished).toBe(true)
  })

  it('an app reusing its Buffer once write() returned or called back sends what it wrote then (small and large chunks)', async () => {
    // As with node:http on a socket: once the write callback ran, the bytes
    // are taken; our writes leave later, so the app's memory must be copied.
    const small = Buffer.from('first-')
    const large = Buffer.alloc(40 * 1024, 'L')
    const path = await start((_req, res) => {
      res.setHeader('Content-Type', 'text/plain')
      res.write(small, () => small.fill('X'))
      res.write(large)
      large.fill('Y')  // right after write() returned
      setTimeout(() => res.end('end'), 5)
    })
    const raw = await fcgiRequest({ path }, { params: defaultParams() })
    const body = parseCgiResponse(raw.stdout).body.toString()
    expect(body.length).toBe(6 + 40 * 1024 + 3)
    expect(body).toBe(`first-${'L'.repeat(40 * 1024)}end`)
  })
})

describe('req.env (built on first read)', () => {
  it('holds every param (first value wins, HTTP_* joined); assignable; absent on other IncomingMessages', async () => {
    let env: Record<string, string> | undefined
    let keysOfReq: string[] = []
    let assigned: unknown
    const path = await start((req, res) => {
      keysOfReq = Object.keys(req)
      env = req.env
      ;(req as { env: unknown }).env = { replaced: true }
      assigned = req.env
      res.end()
    })
    await fcgiRequest({ path }, { params: defaultParams({ REQUEST_URI: '/e?x=1', X_CUSTOM: 'v' }) })
    expect(env).toMatchObject({ REQUEST_URI: '/e?x=1', X_CUSTOM: 'v', HTTP_HOST: 'localhost', QUERY_STRING: 'x=1' })
    expect(Object.getPrototypeOf(env)).toBe(Object.prototype)
    expect(assigned).toEqual({ replaced: true })
    expect(keysOfReq).not.toContain('env')
    expect((new http.IncomingMessage(null as never) as { env?: unknown }).env).toBeUndefined()
  })

  it('through Express (its own req prototype): req.env is there', async () => {
    const app = express()
    app.get('/x', (req, res) => { res.json((req as unknown as IncomingMessage).env.SERVER_SOFTWARE) })
    const path = await start(app as never)
    const raw = await fcgiRequest({ path }, { params: defaultParams({ REQUEST_URI: '/x' }) })
    expect(JSON.parse(parseCgiResponse(raw.stdout).body.toString())).toBe('libfcgi-test-client/1.0')
  })
})
