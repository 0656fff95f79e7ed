// src/http/connection.ts relies on node:http internals: a ServerResponse
// writes its head into whatever socket it was assigned, honours the
// instance fields _removedTE and shouldKeepAlive, and frames the body with
// chunks only when the app sets Transfer-Encoding itself. This test pins that
// behaviour of the running Node version, without the addon.
import http from 'node:http'
import { Duplex } from 'node:stream'
import { describe, expect, it } from 'vitest'

class Sink extends Duplex {
  out: Buffer[] = []
  override _write(c: Buffer, _e: BufferEncoding, cb: () => void): void { this.out.push(Buffer.from(c)); cb() }
  override _read(): void {}
}

function respond(method: string, act: (res: http.ServerResponse) => void): Promise<string> {
  const sock = new Sink()
  const req = new http.IncomingMessage(sock as never)
  req.method = method
  req.httpVersion = '1.1'
  req.httpVersionMajor = 1
  req.httpVersionMinor = 1
  const res = new http.ServerResponse(req)
  ;(res as unknown as { _removedTE: boolean })._removedTE = true
  res.shouldKeepAlive = false
  res.assignSocket(sock as never)
  act(res)
  return new Promise((resolve) => res.once('finish', () => setImmediate(() => resolve(Buffer.concat(sock.out).toString('latin1')))))
}

describe('node:http internals used by the FastCGI socket shim', () => {
  it('res.end(body): Content-Length from node, no chunking', async () => {
    const out = await respond('GET', (res) => res.end('hello'))
    expect(out).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
    expect(out).toContain('Content-Length: 5\r\n')
    expect(out).not.toContain('Transfer-Encoding')
    expect(out.endsWith('\r\n\r\nhello')).toBe(true)
  })
  it('streamed body: no Content-Length, no chunk framing', async () => {
    const out = await respond('GET', (res) => { res.write('a'); res.write('b'); res.end('c') })
    expect(out).not.toContain('Content-Length')
    expect(out).not.toContain('Transfer-Encoding')
    expect(out.endsWith('\r\n\r\nabc')).toBe(true)
  })
  it('HEAD: no body', async () => {
    const out = await respond('HEAD', (res) => res.end('hello'))
    expect(out.endsWith('\r\n\r\n')).toBe(true)
  })
  it('Transfer-Encoding set by the app: node frames the body (the shim removes it)', async () => {
    const out = await respond('GET', (res) => { res.setHeader('Transfer-Encoding', 'chunked'); res.write('abc'); res.end() })
    expect(out).toContain('Transfer-Encoding: chunked\r\n')
    expect(out.endsWith('\r\n\r\n3\r\nabc\r\n0\r\n\r\n')).toBe(true)
  })
})
