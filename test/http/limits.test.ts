// maxBodySize: a body over the limit is answered 413 without the app seeing
// it (declared CONTENT_LENGTH) or cut off once it grows past the limit (no
// declared length), with a line on FCGI_STDERR (the web server's error log)
// and 'clientError'; the server goes on serving. Through a real nginx too.
import { afterEach, describe, expect, it } from 'vitest'

import { createServer, type IncomingMessage, type Server, type ServerResponse } from '../../src/index.js'
import { defaultParams, FcgiConnection, fcgiRequest, parseCgiResponse } from '../helpers/fcgi-client.js'
import { httpRequest } from '../helpers/http-client.js'
import { startNginx, stopAllNginx } from '../helpers/nginx.js'
import { tmpSocketPath, waitFor } from '../helpers/wait.js'

let server: Server | undefined
afterEach(async () => {
  await stopAllNginx()
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()))
  server = undefined
})

interface Seen { requests: string[]; errors: Array<{ code?: string; message: string }>; bodyErrors: string[] }

async function start(maxBodySize: number): Promise<{ path: string; seen: Seen }> {
  const seen: Seen = { requests: [], errors: [], bodyErrors: [] }
  const path = tmpSocketPath('limits')
  server = createServer({ maxBodySize }, (req: IncomingMessage, res: ServerResponse) => {
    seen.requests.push(`${req.method} ${req.url}`)
    let n = 0
    req.on('data', (c: Buffer) => { n += c.length })
    req.on('error', (err: Error & { code?: string }) => seen.bodyErrors.push(err.code ?? err.message))
    req.on('end', () => res.end(`got ${n}\n`))
  })
  server.on('clientError', (err: Error & { code?: string }) => seen.errors.push({ code: err.code, message: err.message }))
  server.listen({ path })
  await new Promise((r) => server!.once('listening', r))
  return { path, seen }
}

describe('maxBodySize', () => {
  it('rejects a bad value with ERR_OUT_OF_RANGE', () => {
    for (const bad of [-1, 1.5, Number.NaN, '10' as unknown as number]) {
      expect(() => createServer({ maxBodySize: bad })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }))
    }
  })

  it('a declared CONTENT_LENGTH over the limit: 413 without calling the app, a line on FCGI_STDERR, clientError; the kept connection serves on', async () => {
    const { path, seen } = await start(1000)
    const conn = await FcgiConnection.connect({ path }, 5000)
    try {
      const big = Buffer.alloc(5000, 'b')
      const r = await fcgiRequest({ path }, { connection: conn, keepConn: true, requestId: 1, params: defaultParams({ REQUEST_METHOD: 'POST', REQUEST_URI: '/upload' }, big), stdin: big })
      const parsed = parseCgiResponse(r.stdout)
      expect(parsed.status).toBe(413)
      expect(parsed.body.toString()).toBe('Payload Too Large\n')
      expect(r.stderr.toString()).toMatch(/^libfcgi: POST \/upload: request body of 5000 bytes \(CONTENT_LENGTH\) over maxBodySize 1000: answered 413\n$/)
      expect(seen.requests).toEqual([])
      expect(seen.errors).toEqual([{ code: 'ERR_LIBFCGI_BODY_TOO_LARGE', message: 'request body of 5000 bytes (CONTENT_LENGTH) over maxBodySize 1000' }])
      // Exactly the limit is fine, on the same connection.
      const ok = Buffer.alloc(1000, 'o')
      const r2 = await fcgiRequest({ path }, { connection: conn, keepConn: true, requestId: 2, params: defaultParams({ REQUEST_METHOD: 'POST', REQUEST_URI: '/ok' }, ok), stdin: ok })
      expect(parseCgiResponse(r2.stdout).body.toString()).toBe('got 1000\n')
    } finally {
      conn.destroy()
    }
  })

  it('a body without a declared length that grows past the limit: cut off, the app sees ERR_LIBFCGI_BODY_TOO_LARGE, 413', async () => {
    const { path, seen } = await start(1000)
    const body = Buffer.alloc(3000, 'c')
    const params = defaultParams({ REQUEST_METHOD: 'POST', REQUEST_URI: '/chunked', HTTP_TRANSFER_ENCODING: 'chunked' })
    delete params.CONTENT_LENGTH
    const r = await fcgiRequest({ path }, { params, stdin: body })
    expect(parseCgiResponse(r.stdout).status).toBe(413)
    expect(r.stderr.toString()).toContain('request body over maxBodySize 1000 bytes (no CONTENT_LENGTH): answered 413')
    expect(seen.requests).toEqual(['POST /chunked'])
    // req fails once the response is over (see Server#bodyTooLarge).
    await waitFor(() => seen.bodyErrors.length > 0, { timeoutMs: 2000, what: 'the body error on req' })
    expect(seen.bodyErrors).toEqual(['ERR_LIBFCGI_BODY_TOO_LARGE'])
    expect(seen.errors.map((e) => e.code)).toEqual(['ERR_LIBFCGI_BODY_TOO_LARGE'])
    // And the next request is served.
    const small = Buffer.from('tiny')
    const r2 = await fcgiRequest({ path }, { params: defaultParams({ REQUEST_METHOD: 'POST' }, small), stdin: small })
    expect(parseCgiResponse(r2.stdout).body.toString()).toBe('got 4\n')
  })

  it('through nginx: the client gets 413, nginx logs our line, the next request on the kept upstream connection is served', async () => {
    const { path } = await start(64 * 1024)
    const nginx = await startNginx({ upstream: { path }, keepConn: true, clientMaxBodySize: '10m' })
    const big = await httpRequest(`${nginx.url}/big`, { method: 'POST', body: Buffer.alloc(200 * 1024, 'x') })
    expect(big.status).toBe(413)
    expect(big.body.toString()).toBe('Payload Too Large\n')
    const ok = await httpRequest(`${nginx.url}/small`, { method: 'POST', body: Buffer.alloc(1024, 'y') })
    expect(ok.status).toBe(200)
    expect(ok.body.toString()).toBe('got 1024\n')
    expect(nginx.errorLog()).toContain('libfcgi: POST /big: request body of 204800 bytes (CONTENT_LENGTH) over maxBodySize 65536: answered 413')
  })
})

describe('params over paramsMaxBytes (a request dropped unread)', () => {
  it("through nginx: the client gets nginx's 502, the app reports why ('clientError', or one line on stderr), and serves on", async () => {
    const path = tmpSocketPath('params')
    const reported: Array<Error & { code?: string }> = []
    server = createServer({ paramsMaxBytes: 4096 }, (_req, res) => res.end('ok\n'))
    server.listen({ path })
    await new Promise((r) => server!.once('listening', r))
    const nginx = await startNginx({ upstream: { path }, keepConn: true })
    // Nobody listens for 'clientError': the report is one line on stderr
    // (what this process writes there is collected meanwhile).
    const lines: string[] = []
    const write = process.stderr.write
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      lines.push(String(chunk))
      return (write as (...a: unknown[]) => boolean).call(process.stderr, chunk, ...rest)
    }) as typeof process.stderr.write
    try {
      // A 6 KiB header: within nginx's header buffers, over the app's params limit.
      const big = await httpRequest(`${nginx.url}/big`, { headers: { 'X-Big': 'b'.repeat(6000) } })
      expect(big.status).toBe(502)
      await waitFor(() => server!.fcgiSocket!.stats().droppedRequests === 1, { timeoutMs: 5000, what: 'the drop to be counted' })
      await waitFor(() => lines.some((l) => l.includes('libfcgi: a request was dropped unanswered: its params are malformed or over the limits (paramsMaxBytes 4096')), { timeoutMs: 5000, what: 'the stderr line' })
    } finally {
      process.stderr.write = write
    }
    // With a listener: 'clientError' with the code instead.
    server.on('clientError', (err: Error) => reported.push(err))
    const again = await httpRequest(`${nginx.url}/big2`, { headers: { 'X-Big': 'c'.repeat(6000) } })
    expect(again.status).toBe(502)
    await waitFor(() => reported.length === 1, { timeoutMs: 5000, what: 'clientError' })
    expect(reported[0]!.code).toBe('ERR_FASTCGI_PARAMS_ERROR')
    const ok = await httpRequest(`${nginx.url}/small`)
    expect(ok.status).toBe(200)
    expect(ok.body.toString()).toBe('ok\n')
  })
})
