// The same Express 5 application served two ways, each behind a real nginx:
//   reference: node:http's own server   <- nginx proxy_pass (HTTP/1.1, upstream keepalive)
//   ours:      createServer(app) over FastCGI <- nginx fastcgi_pass, three ways:
//              unix socket with fastcgi_keep_conn on, the same socket with
//              keep_conn off, and a TCP socket on 127.0.0.1:0 (keep_conn on).
// Every route gets the identical request on every front end; what the client
// sees (status line, every header but Date, body bytes) must be the same as
// through the reference. Node's behaviour is the reference.
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createServer, type Server } from '../../src/index.js'
import { type CapturedResponse, compareResponses, formatResponse, type HttpRequestSpec, parseRawResponse, sendHttp, sendRawHttp, sha256 } from '../helpers/http-compare.js'
import { type NginxInstance, startNginx, stopAllNginx } from '../helpers/nginx.js'
import { tmpSocketPath, withTimeout } from '../helpers/wait.js'
import { buildExpressApp, STREAM_CHUNKS } from './fixtures/express-app.js'

const BIG_SIZE = 10 * 1024 * 1024
const HASH_SIZE = 1024 * 1024

/** Sent with every request, so that both sides see the very same request. */
const COMMON_HEADERS: Record<string, string> = {
  Host: 'app.example',
  'User-Agent': 'express-equivalence/1.0',
  Accept: '*/*',
}

interface Front {
  name: string
  nginx: NginxInstance
  agent: http.Agent
}

let dir = ''
let bigFile: Buffer
let hashBody: Buffer
let nodeServer: http.Server | undefined
let nodePort = 0
let fcgiUnix: Server | undefined
let fcgiTcp: Server | undefined
let reference: Front | undefined
const ours: Front[] = []
const serverErrors: string[] = []

function listening(server: Server): Promise<void> {
  return withTimeout(
    new Promise<void>((resolve, reject) => {
      server.once('listening', resolve)
      server.once('error', reject)
    }),
    10000,
    'createServer().listen()',
  )
}

function closeServer(server: Server | undefined): Promise<void> {
  if (!server?.listening) return Promise.resolve()
  return withTimeout(new Promise<void>((resolve) => server.close(() => resolve())), 15000, 'Server.close()')
}

function front(name: string, nginx: NginxInstance): Front {
  return { name, nginx, agent: new http.Agent({ keepAlive: true, maxSockets: 4 }) }
}

async function send(f: Front, spec: HttpRequestSpec): Promise<CapturedResponse> {
  const headers = Array.isArray(spec.headers)
    ? [...Object.entries(COMMON_HEADERS).flatMap(([name, value]) => [name, String(value)]), ...spec.headers]
    : { ...COMMON_HEADERS, ...spec.headers }
  return sendHttp({ port: f.nginx.port, agent: f.agent }, { ...spec, headers }, 20000)
}

/**
 * Sends `spec` through the reference, runs `check` on that response (so that
 * a route that fails the same way on both sides does not pass unnoticed),
 * then sends it through each of our front ends and expects no difference.
 */
async function compareRoute(spec: HttpRequestSpec, check: (ref: CapturedResponse) => void): Promise<void> {
  const ref = await send(reference!, spec)
  check(ref)
  const diffs: string[] = []
  const shown: string[] = []
  for (const f of ours) {
    const got = await send(f, spec)
    const d = compareResponses(ref, got)
    diffs.push(...d.map((line) => `[${f.name}] ${line}`))
    if (d.length > 0 && shown.length === 0) {
      shown.push(`--- reference (node:http behind proxy_pass) ---\n${formatResponse(ref)}`, `--- ${f.name} ---\n${formatResponse(got)}`)
    }
  }
  if (diffs.length > 0) console.log(`${spec.method ?? 'GET'} ${spec.path}\n${diffs.join('\n')}\n${shown.join('\n')}`)
  expect(diffs, `${spec.method ?? 'GET'} ${spec.path}: responses differ from the reference`).toEqual([])
}

const json = (r: CapturedResponse): unknown => JSON.parse(r.body.toString('utf8'))
const header = (r: CapturedResponse, name: string): string[] | undefined => r.headers.get(name)

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'express-eq-'))
  bigFile = randomBytes(BIG_SIZE)
  hashBody = randomBytes(HASH_SIZE)
  writeFileSync(join(dir, 'big.bin'), bigFile)
  writeFileSync(join(dir, 'report.txt'), 'quarterly report\nline 2\n')
  const app = buildExpressApp({ bigFile: join(dir, 'big.bin'), downloadFile: join(dir, 'report.txt') })

  // (b) the reference: node:http, behind nginx proxy_pass.
  nodeServer = http.createServer(app)
  // Longer than nginx's upstream keepalive_timeout (60 s): nginx never reuses
  // a connection node is closing at that moment.
  nodeServer.keepAliveTimeout = 65000
  nodeServer.on('clientError', (err: Error) => serverErrors.push(`node:http clientError: ${err.message}`))
  await withTimeout(new Promise<void>((resolve) => nodeServer!.listen(0, '127.0.0.1', resolve)), 10000, 'node:http listen')
  nodePort = (nodeServer.address() as AddressInfo).port

  // (a) ours: a unix socket (two nginx: keep_conn on and off) and a TCP one.
  const sockPath = tmpSocketPath('express-eq')
  fcgiUnix = createServer(app)
  fcgiTcp = createServer(app)
  for (const [name, s] of [['unix', fcgiUnix], ['tcp', fcgiTcp]] as const) {
    s.on('requestError', (err: Error, req?: http.IncomingMessage) => serverErrors.push(`${name} requestError on ${req?.url}: ${err.stack ?? err.message}`))
  }
  const unixUp = listening(fcgiUnix)
  fcgiUnix.listen(sockPath)
  await unixUp
  const tcpUp = listening(fcgiTcp)
  fcgiTcp.listen({ port: 0, host: '127.0.0.1' })
  await tcpUp
  const tcpAddress = fcgiTcp.address()
  if (tcpAddress === null || typeof tcpAddress === 'string' || tcpAddress.port === undefined) throw new Error(`unexpected TCP address ${JSON.stringify(tcpAddress)}`)

  // startNginx always writes a fastcgi `location /`; a regex location takes
  // precedence over every plain prefix location, so `location ~ ^/` below
  // serves all requests with proxy_pass (the fastcgi location and its
  // upstream, a socket path nobody listens on, stay unused).
  const [proxy, unixKeep, unixClose, tcpKeep] = await Promise.all([
    startNginx({
      upstream: { path: tmpSocketPath('unused') },
      extraHttp: [
        '    upstream node_backend {',
        `        server 127.0.0.1:${nodePort};`,
        '        keepalive 16;',
        '    }',
      ].join('\n'),
      extraServer: [
        '        location ~ ^/ {',
        '            proxy_pass http://node_backend;',
        '            proxy_http_version 1.1;',
        '            proxy_set_header Host $host;',
        '            proxy_set_header Connection "";',
        '            proxy_connect_timeout 5s;',
        '            proxy_read_timeout 30s;',
        '            proxy_send_timeout 30s;',
        '        }',
      ].join('\n'),
    }),
    startNginx({ upstream: { path: sockPath }, keepConn: true }),
    startNginx({ upstream: { path: sockPath }, keepConn: false }),
    startNginx({ upstream: { port: tcpAddress.port, host: '127.0.0.1' }, keepConn: true }),
  ])
  reference = front('node:http via proxy_pass', proxy)
  ours.push(front('fcgi unix keep_conn on', unixKeep), front('fcgi unix keep_conn off', unixClose), front('fcgi tcp keep_conn on', tcpKeep))
}, 40000)

afterAll(async () => {
  for (const f of [reference, ...ours]) f?.agent.destroy()
  await Promise.all([reference, ...ours].map((f) => f?.nginx.stop()))
  await stopAllNginx() // any started by a beforeAll that failed half-way
  await Promise.all([closeServer(fcgiUnix), closeServer(fcgiTcp)])
  if (nodeServer) {
    const s = nodeServer
    s.closeAllConnections()
    await withTimeout(new Promise<void>((resolve) => s.close(() => resolve())), 10000, 'node:http close()')
  }
  if (dir) rmSync(dir, { recursive: true, force: true })
}, 40000)

describe('Express 5: createServer() behind nginx fastcgi_pass answers as node:http behind proxy_pass', () => {
  it('routing with params and query', async () => {
    await compareRoute({ path: '/users/42/books/7?sort=asc&page=2' }, (ref) => {
      expect(ref.status).toBe(200)
      expect(json(ref)).toEqual({ params: { userId: '42', bookId: '7' }, query: { sort: 'asc', page: '2' }, path: '/users/42/books/7' })
    })
  })

  it('express.json() POST echo', async () => {
    const payload = { name: 'Zoë', list: [1, 2, 3], nested: { ok: true } }
    await compareRoute(
      { method: 'POST', path: '/json', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(payload) },
      (ref) => {
        expect(ref.status).toBe(201)
        expect(json(ref)).toEqual({ received: payload, contentType: 'application/json' })
      },
    )
  })

  it('express.json() with a malformed body: 400 through the error middleware', async () => {
    await compareRoute({ method: 'POST', path: '/json', headers: { 'Content-Type': 'application/json' }, body: '{"broken":' }, (ref) => {
      expect(ref.status).toBe(400)
      expect(header(ref, 'x-error-handler')).toEqual(['custom'])
    })
  })

  it('express.urlencoded() POST', async () => {
    await compareRoute(
      { method: 'POST', path: '/form', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'a=1&b=two+words&c=%C3%A9&a=3' },
      (ref) => {
        expect(ref.status).toBe(200)
        expect(json(ref)).toEqual({ form: { a: ['1', '3'], b: 'two words', c: 'é' } })
      },
    )
  })

  it('res.sendFile() of a 10 MiB file', async () => {
    await compareRoute({ path: '/file' }, (ref) => {
      expect(ref.status).toBe(200)
      expect(header(ref, 'content-length')).toEqual([String(BIG_SIZE)])
      expect(sha256(ref.body)).toBe(sha256(bigFile))
    })
  })

  it('res.sendFile() with a Range: 206', async () => {
    await compareRoute({ path: '/file', headers: { Range: 'bytes=100-199' } }, (ref) => {
      expect(ref.status).toBe(206)
      expect(header(ref, 'content-range')).toEqual([`bytes 100-199/${BIG_SIZE}`])
      expect(ref.body.equals(bigFile.subarray(100, 200))).toBe(true)
    })
  })

  it('res.sendFile() conditional GET with If-None-Match: 304', async () => {
    const first = await send(reference!, { path: '/file', method: 'HEAD' })
    const etag = header(first, 'etag')?.[0]
    expect(etag).toBeDefined()
    await compareRoute({ path: '/file', headers: { 'If-None-Match': etag! } }, (ref) => {
      expect(ref.status).toBe(304)
      expect(ref.body.length).toBe(0)
    })
  })

  it('res.sendFile() conditional GET with If-Modified-Since: 304', async () => {
    const first = await send(reference!, { path: '/file', method: 'HEAD' })
    const lastModified = header(first, 'last-modified')?.[0]
    expect(lastModified).toBeDefined()
    await compareRoute({ path: '/file', headers: { 'If-Modified-Since': lastModified! } }, (ref) => {
      expect(ref.status).toBe(304)
    })
  })

  it('HEAD of res.sendFile(): no body, same headers incl. Content-Length', async () => {
    await compareRoute({ method: 'HEAD', path: '/file' }, (ref) => {
      expect(ref.status).toBe(200)
      expect(header(ref, 'content-length')).toEqual([String(BIG_SIZE)])
      expect(ref.body.length).toBe(0)
    })
  })

  it('res.download()', async () => {
    await compareRoute({ path: '/download' }, (ref) => {
      expect(ref.status).toBe(200)
      expect(header(ref, 'content-disposition')?.[0]).toMatch(/^attachment; filename="report 2024 \?t\?\.txt"; filename\*=UTF-8''report%202024%20%C3%A9t%C3%A9\.txt$/)
      expect(ref.body.toString()).toBe('quarterly report\nline 2\n')
    })
  })

  it('res.redirect() 302', async () => {
    await compareRoute({ path: '/redirect/302' }, (ref) => {
      expect(ref.status).toBe(302)
      expect(header(ref, 'location')).toEqual(['/users/1/books/2?from=302'])
    })
  })

  it('res.redirect() 301', async () => {
    await compareRoute({ path: '/redirect/301', headers: { Accept: 'text/html' } }, (ref) => {
      expect(ref.status).toBe(301)
      expect(header(ref, 'location')).toEqual(['/users/1/books/2?from=301'])
    })
  })

  it('two res.cookie() -> two Set-Cookie; the Cookie header reaches the app', async () => {
    await compareRoute({ path: '/cookies', headers: { Cookie: 'a=1; b=two' } }, (ref) => {
      expect(ref.status).toBe(200)
      expect(header(ref, 'set-cookie')).toEqual([
        'session=abc123; Path=/; HttpOnly; SameSite=Lax',
        'prefs=dark%20mode; Path=/cookies; Expires=Wed, 02 Jan 2030 03:04:05 GMT; Secure',
      ])
      expect(json(ref)).toEqual({ cookieHeader: 'a=1; b=two' })
    })
  })

  for (const status of [418, 422, 503]) {
    it(`error thrown in a route, handled by the error middleware: ${status}`, async () => {
      await compareRoute({ path: `/error/${status}` }, (ref) => {
        expect(ref.status).toBe(status)
        expect(header(ref, 'x-error-handler')).toEqual(['custom'])
        expect(json(ref)).toEqual({ error: `failed with ${status}`, status })
      })
    })
  }

  it('plain Error thrown in a route: 500 from the error middleware', async () => {
    await compareRoute({ path: '/error/plain' }, (ref) => {
      expect(ref.status).toBe(500)
      expect(json(ref)).toEqual({ error: 'plain failure', status: 500 })
    })
  })

  it('async route that rejects: Express 5 forwards to the error middleware', async () => {
    await compareRoute({ path: '/async-reject' }, (ref) => {
      expect(ref.status).toBe(503)
      expect(json(ref)).toEqual({ error: 'async failure', status: 503 })
    })
  })

  it('res.status(204).end()', async () => {
    await compareRoute({ path: '/no-content' }, (ref) => {
      expect(ref.status).toBe(204)
      expect(ref.body.length).toBe(0)
    })
  })

  it('ETag on res.send(), and 304 for a matching If-None-Match', async () => {
    const first = await send(reference!, { path: '/etag' })
    const etag = header(first, 'etag')?.[0]
    expect(etag).toMatch(/^W\/"/)
    await compareRoute({ path: '/etag' }, (ref) => {
      expect(ref.status).toBe(200)
      expect(header(ref, 'etag')).toEqual([etag])
    })
    await compareRoute({ path: '/etag', headers: { 'If-None-Match': etag! } }, (ref) => {
      expect(ref.status).toBe(304)
      expect(ref.body.length).toBe(0)
    })
  })

  it('HEAD of a route with a body: no body, same headers incl. Content-Length', async () => {
    await compareRoute({ method: 'HEAD', path: '/etag' }, (ref) => {
      expect(ref.status).toBe(200)
      expect(header(ref, 'content-length')).toEqual([String(Buffer.byteLength('<p>a body that gets an ETag</p>\n'))])
      expect(ref.body.length).toBe(0)
    })
  })

  it("res.writeHead(200, 'Custom Message', [['X-A','1'],['X-A','2']]) and the flat ['X-A','1','X-A','2']", async () => {
    for (const path of ['/raw-head', '/raw-head-flat']) {
      await compareRoute({ path }, (ref) => {
        expect(ref.status).toBe(200)
        expect(ref.statusMessage).toBe('Custom Message')
        expect(header(ref, 'x-a')).toEqual(['1', '2'])
        expect(ref.body.toString()).toBe('raw head\n')
      })
    }
  })

  it("res.writeHead(201, { 'x-b': ['1','2'] })", async () => {
    await compareRoute({ path: '/multi-header' }, (ref) => {
      expect(ref.status).toBe(201)
      expect(header(ref, 'x-b')).toEqual(['1', '2'])
      expect(ref.body.toString()).toBe('created\n')
    })
  })

  it('an explicit Content-Length is kept as set', async () => {
    await compareRoute({ path: '/explicit-length' }, (ref) => {
      expect(header(ref, 'content-length')).toEqual(['12'])
      expect(header(ref, 'transfer-encoding')).toBeUndefined()
      expect(ref.body.toString()).toBe('hello world\n')
    })
  })

  it('res.end(body) without a Content-Length: node:http computes it', async () => {
    await compareRoute({ path: '/auto-length' }, (ref) => {
      expect(header(ref, 'content-length')).toEqual(['24'])
      expect(header(ref, 'transfer-encoding')).toBeUndefined()
      expect(ref.body.toString()).toBe('node computes my length\n')
    })
  })

  it('HEAD of that route: no Content-Length on either side', async () => {
    await compareRoute({ method: 'HEAD', path: '/auto-length' }, (ref) => {
      expect(ref.status).toBe(200)
      expect(ref.body.length).toBe(0)
    })
  })

  it('res.end() with no body: node:http sends Content-Length: 0', async () => {
    await compareRoute({ path: '/empty' }, (ref) => {
      expect(ref.status).toBe(200)
      expect(header(ref, 'content-length')).toEqual(['0'])
      expect(header(ref, 'transfer-encoding')).toBeUndefined()
    })
  })

  // nginx 1.22 cannot proxy an interim (1xx) response: proxy_pass takes a 103
  // for the final response and then waits for the upstream to close. So the
  // reference here is node:http itself, without nginx: its final response
  // (node's client skips the interim ones) minus what nginx adds or removes
  // anyway. Through our front ends the client must get that final response as
  // the first and only one: a CGI response has no interim responses.
  for (const route of ['/early-hints', '/continue']) {
    it(`interim 1xx response (${route === '/continue' ? 'res.writeContinue()' : 'res.writeEarlyHints()'}) before the response`, async () => {
      const direct = await sendHttp({ port: nodePort }, { path: route, headers: COMMON_HEADERS })
      expect(direct.status).toBe(200)
      const viaNginx = new Set(['date', 'server', 'connection', 'keep-alive', 'transfer-encoding'])
      const strip = (r: CapturedResponse): CapturedResponse => ({ ...r, headers: new Map([...r.headers].filter(([name]) => !viaNginx.has(name))) })
      const diffs: string[] = []
      for (const f of ours) {
        const raw = await sendRawHttp(
          { port: f.nginx.port },
          `GET ${route} HTTP/1.1\r\nHost: app.example\r\nUser-Agent: express-equivalence/1.0\r\nAccept: */*\r\nConnection: close\r\n\r\n`,
        )
        const got = parseRawResponse(raw)
        if (got.status !== 200) diffs.push(`[${f.name}] first response line: expected "HTTP/1.1 200 OK", got ${JSON.stringify(got.statusLine)}; the whole response:\n${raw.toString('latin1')}`)
        else diffs.push(...compareResponses(strip(direct), strip(got)).map((line) => `[${f.name}] ${line}`))
      }
      expect(diffs, `GET ${route}: final response differs from node:http's`).toEqual([])
    })
  }

  it('201 with a Location header, and 200 with a Location header: no redirect', async () => {
    await compareRoute({ method: 'POST', path: '/created', body: '' }, (ref) => {
      expect(ref.status).toBe(201)
      expect(header(ref, 'location')).toEqual(['/users/9/books/1'])
    })
    await compareRoute({ path: '/ok-with-location' }, (ref) => {
      expect(ref.status).toBe(200)
      expect(header(ref, 'location')).toEqual(['/elsewhere'])
      expect(ref.body.toString()).toBe('200 with a Location\n')
    })
  })

  it('status codes with unusual or unknown reason phrases', async () => {
    for (const [code, message] of [[299, 'unknown'], [451, 'Unavailable For Legal Reasons'], [599, 'unknown']] as const) {
      await compareRoute({ path: `/status/${code}` }, (ref) => {
        expect(ref.status).toBe(code)
        expect(ref.statusMessage).toBe(message)
      })
    }
  })

  it('unusual response header values: empty, number, inner spaces, 3000 bytes long', async () => {
    await compareRoute({ path: '/misc-headers' }, (ref) => {
      expect(header(ref, 'x-empty')).toEqual([''])
      expect(header(ref, 'x-number')).toEqual(['42'])
      expect(header(ref, 'x-spaces')).toEqual(['a  b   c'])
      expect(header(ref, 'x-long')).toEqual(['L'.repeat(3000)])
    })
  })

  it('OPTIONS: Express answers with Allow', async () => {
    await compareRoute({ method: 'OPTIONS', path: '/users/1/books/2' }, (ref) => {
      expect(ref.status).toBe(200)
      expect(header(ref, 'allow')).toEqual(['GET, HEAD'])
    })
  })

  it('a 4 MiB body streamed in 64 KiB writes with backpressure, no Content-Length', async () => {
    await compareRoute({ path: '/big-stream' }, (ref) => {
      expect(ref.status).toBe(200)
      expect(ref.body.length).toBe(4 * 1024 * 1024)
      expect(header(ref, 'transfer-encoding')).toEqual(['chunked'])
    })
  })

  it('Transfer-Encoding: chunked set by the app: the client gets the body, not the chunk framing', async () => {
    await compareRoute({ path: '/explicit-chunked' }, (ref) => {
      expect(ref.status).toBe(200)
      expect(ref.body.toString()).toBe('first piece\nsecond piece\n')
    })
  })

  it('a response streamed in 5 chunks with pauses, no Content-Length', async () => {
    await compareRoute({ path: '/stream' }, (ref) => {
      expect(ref.status).toBe(200)
      expect(header(ref, 'transfer-encoding')).toEqual(['chunked'])
      expect(header(ref, 'content-length')).toBeUndefined()
      expect(ref.body.toString().split('\n').filter(Boolean)).toHaveLength(STREAM_CHUNKS)
    })
  })

  it("res.set('Content-Type') with a charset (kept) and without (Express adds utf-8)", async () => {
    await compareRoute({ path: '/charset/latin1' }, (ref) => {
      expect(header(ref, 'content-type')).toEqual(['text/plain; charset=iso-8859-1'])
      expect(ref.body.equals(Buffer.from('café crème\n', 'latin1'))).toBe(true)
    })
    await compareRoute({ path: '/charset/default' }, (ref) => {
      expect(header(ref, 'content-type')).toEqual(['text/html; charset=utf-8'])
      expect(ref.body.toString('utf8')).toBe('<b>héllo</b>\n')
    })
  })

  it('a 1 MiB POST body piped into a hash', async () => {
    await compareRoute({ method: 'POST', path: '/hash', headers: { 'Content-Type': 'application/octet-stream' }, body: hashBody }, (ref) => {
      expect(ref.status).toBe(200)
      expect(json(ref)).toEqual({ bytes: HASH_SIZE, sha256: sha256(hashBody) })
    })
  })

  it('a 1 MiB chunked POST body (no Content-Length from the client) piped into a hash', async () => {
    await compareRoute(
      { method: 'POST', path: '/hash', headers: { 'Content-Type': 'application/octet-stream', 'Transfer-Encoding': 'chunked' }, body: hashBody, bodyPieces: 16 },
      (ref) => {
        expect(ref.status).toBe(200)
        expect(json(ref)).toEqual({ bytes: HASH_SIZE, sha256: sha256(hashBody) })
      },
    )
  })

  it('repeated request headers reach the app joined as node:http joins them', async () => {
    const headers = ['X-Multi', 'a', 'X-Multi', 'b', 'X-Single', 'one', 'Cookie', 'c1=1', 'Cookie', 'c2=2']
    await compareRoute({ path: '/request-headers', headers }, (ref) => {
      expect(ref.status).toBe(200)
      expect(json(ref)).toEqual({ multi: 'a, b', single: 'one', cookie: 'c1=1; c2=2', raw: ['x-multi', 'a', 'x-multi', 'b', 'x-single', 'one', 'cookie', 'c1=1', 'cookie', 'c2=2'] })
    })
  })

  it('a response header value with latin1 bytes', async () => {
    await compareRoute({ path: '/latin1-header' }, (ref) => {
      expect(header(ref, 'x-latin1')).toEqual(['café'])
    })
  })

  it('req.ip, req.protocol, req.hostname, req.originalUrl, req.get(user-agent)', async () => {
    await compareRoute({ path: '/whoami?x=1&y=%20z' }, (ref) => {
      expect(json(ref)).toEqual({
        ip: '127.0.0.1',
        protocol: 'http',
        secure: false,
        hostname: 'app.example',
        originalUrl: '/whoami?x=1&y=%20z',
        userAgent: 'express-equivalence/1.0',
        method: 'GET',
        httpVersion: '1.1',
      })
    })
  })

  it('404 for an unknown route (Express default handler)', async () => {
    await compareRoute({ path: '/no/such/route?q=1' }, (ref) => {
      expect(ref.status).toBe(404)
      expect(ref.body.toString()).toContain('Cannot GET /no/such/route')
    })
  })

  it('unicode (percent-encoded) path and a query with repeated keys', async () => {
    const path = '/unicode/%C3%A9t%C3%A9/%E2%9C%93?tag=a&tag=b&tag=%C3%BC&one=1'
    await compareRoute({ path }, (ref) => {
      expect(ref.status).toBe(200)
      expect(json(ref)).toEqual({ params: { word: 'été', mark: '✓' }, query: { tag: ['a', 'b', 'ü'], one: '1' }, originalUrl: path })
    })
  })

  // Last: after every route above went through all four nginx.
  it('nginx error logs are clean and no server reported an error', () => {
    for (const f of [reference!, ...ours]) {
      expect(f.nginx.errorLogProblems(), `${f.name}: nginx error.log`).toEqual([])
    }
    expect(serverErrors).toEqual([])
    // Each of our servers did serve (keep_conn on and off share the unix one).
    expect(fcgiUnix!.fcgiSocket!.stats().requests).toBeGreaterThan(0)
    const tcp = fcgiTcp!.fcgiSocket!.stats()
    expect(tcp.requests).toBeGreaterThan(0)
    // Only the keep_conn on nginx uses the TCP server: it reused its connections.
    expect(tcp.acceptedConnections).toBeLessThan(tcp.requests)
  })
})
