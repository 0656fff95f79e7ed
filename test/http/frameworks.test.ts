// Hono (serve({ fetch }) and @hono/node-server's listener), Koa 3 and
// Fastify 5 on our http layer behind a real nginx (fastcgi_keep_conn on).
// Each framework answers a table of requests; the same table also runs
// against the same app on node's own http server (the reference: what a
// client sees there is what it must see through FastCGI).
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import http from 'node:http'
import { type AddressInfo, connect as netConnect } from 'node:net'

import { getRequestListener } from '@hono/node-server'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createServer, serve, type Server } from '../../src/index.js'
import {
  defaultParams,
  encodeBeginRequest,
  encodeParams,
  encodeRecord,
  FCGI_RESPONDER,
  FCGI_STDIN,
  FcgiConnection,
} from '../helpers/fcgi-client.js'
import { type NginxInstance, type NginxUpstream, startNginx } from '../helpers/nginx.js'
import { trackUncaught } from '../helpers/uncaught.js'
import { tmpSocketPath, waitFor, withTimeout } from '../helpers/wait.js'
import { createFastifyApp } from './fixtures/fastify-app.js'
import { createHonoApp, type HonoProbe } from './fixtures/hono-app.js'
import { httpRequest, sha256 } from './fixtures/http-client.js'
import { createKoaApp } from './fixtures/koa-app.js'

const uncaught = trackUncaught()

// ---------------------------------------------------------------- the table

type BodyExpectation =
  | string
  | RegExp
  | { json: unknown }
  | { jsonLike: Record<string, unknown> }
  | { sha256: string; length: number }

interface Row {
  name: string
  method?: string
  path: string
  headers?: Record<string, string>
  body?: string | Buffer
  expected: {
    status: number
    /** null: the header must be absent. */
    headers?: Record<string, string | string[] | RegExp | null>
    body?: BodyExpectation
  }
  /** Needs the nginx set-up (the /tls/ location passes HTTPS=on). */
  nginxOnly?: boolean
}

async function checkRow(base: string, row: Row, agent: http.Agent): Promise<void> {
  const method = row.method ?? 'GET'
  const label = `${method} ${row.path}`
  const res = await httpRequest(base, { method, path: row.path, headers: { Host: 'app.example', ...row.headers }, body: row.body, agent })
  const e = row.expected
  expect(res.status, `${label}: status (body: ${res.body.toString().slice(0, 200)})`).toBe(e.status)
  for (const [name, want] of Object.entries(e.headers ?? {})) {
    const got = res.headers[name.toLowerCase()]
    if (want === null) expect(got, `${label}: header ${name} must be absent`).toBeUndefined()
    else if (want instanceof RegExp) expect(String(got), `${label}: header ${name}`).toMatch(want)
    else expect(got, `${label}: header ${name}`).toEqual(want)
  }
  const b = e.body
  if (b === undefined) return
  if (typeof b === 'string') expect(res.body.toString(), `${label}: body`).toBe(b)
  else if (b instanceof RegExp) expect(res.body.toString(), `${label}: body`).toMatch(b)
  else if ('json' in b) expect(JSON.parse(res.body.toString()), `${label}: JSON body`).toEqual(b.json)
  else if ('jsonLike' in b) expect(JSON.parse(res.body.toString()), `${label}: JSON body`).toMatchObject(b.jsonLike)
  else {
    expect(res.body.length, `${label}: body length`).toBe(b.length)
    expect(sha256(res.body), `${label}: body sha256`).toBe(b.sha256)
  }
}

/** One it() per row; the rows marked nginxOnly are left out of the reference run. */
function tableTests(rows: Row[], base: () => string, agent: () => http.Agent, viaNginx: boolean): void {
  for (const row of rows) {
    if (row.nginxOnly && !viaNginx) continue
    it(row.name, async () => {
      await checkRow(base(), row, agent())
      await uncaught.expectNone()
    })
  }
}

const JSON_TYPE = /^application\/json/
const MiB = 1024 * 1024
const bigText = randomBytes(MiB * 3 / 4).toString('base64') // 1 MiB of ASCII
const bigBinary = randomBytes(MiB)
const boundary = '----frameworks-test-7MA4YWxkTrZu0gW'
const multipart = [
  `--${boundary}`,
  'Content-Disposition: form-data; name="field"',
  '',
  'value',
  `--${boundary}`,
  'Content-Disposition: form-data; name="upload"; filename="hello.txt"',
  'Content-Type: text/plain',
  '',
  'hello world',
  `--${boundary}--`,
  '',
].join('\r\n')

const honoRows: Row[] = [
  { name: 'routing + params', path: '/users/42/posts/hello-world', expected: { status: 200, headers: { 'content-type': JSON_TYPE }, body: { json: { id: '42', slug: 'hello-world' } } } },
  { name: 'percent-encoded params', path: '/users/a%20b/posts/%C3%A9t%C3%A9', expected: { status: 200, body: { json: { id: 'a b', slug: 'été' } } } },
  { name: 'query string (repeated key, encoded)', path: '/search?q=a%20b%26c&tag=x&tag=y', expected: { status: 200, body: { json: { q: 'a b&c', tags: ['x', 'y'] } } } },
  {
    name: 'JSON body POST (c.req.json())', method: 'POST', path: '/json',
    headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ a: 1, nested: { list: [true, null, 'ü'] } }),
    expected: { status: 200, body: { json: { received: { a: 1, nested: { list: [true, null, 'ü'] } }, type: 'application/json' } } },
  },
  {
    name: 'urlencoded form (c.req.parseBody())', method: 'POST', path: '/form',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'name=J%C3%BCrgen&city=Z%C3%BCrich+West&empty=',
    expected: { status: 200, body: { json: { name: 'Jürgen', city: 'Zürich West', empty: '' } } },
  },
  {
    name: 'multipart form with a file (c.req.parseBody())', method: 'POST', path: '/form',
    headers: { 'Content-Type': `multipart/form-data; boundary=${boundary}` }, body: multipart,
    expected: { status: 200, body: { json: { field: 'value', upload: { name: 'hello.txt', type: 'text/plain', size: 11, text: 'hello world' } } } },
  },
  {
    name: 'text body of 1 MiB echoed', method: 'POST', path: '/echo',
    headers: { 'Content-Type': 'text/plain' }, body: bigText,
    expected: { status: 200, headers: { 'content-type': /^text\/plain/ }, body: { length: MiB, sha256: sha256(bigText) } },
  },
  {
    name: 'chunked upload (no Content-Length from the client) echoed', method: 'POST', path: '/echo',
    headers: { 'Content-Type': 'text/plain', 'Transfer-Encoding': 'chunked' }, body: bigText.slice(0, 100_000),
    expected: { status: 200, body: { length: 100_000, sha256: sha256(bigText.slice(0, 100_000)) } },
  },
  { name: 'custom status + headers', path: '/custom', expected: { status: 202, headers: { 'x-custom': 'yes', 'cache-control': 'no-store', 'content-type': /^text\/plain/ }, body: 'accepted' } },
  { name: 'two Set-Cookie headers', path: '/cookies', expected: { status: 200, headers: { 'set-cookie': ['a=1; Path=/', 'b=2; Path=/; HttpOnly'] }, body: 'two cookies' } },
  { name: 'redirect (302, relative)', path: '/redirect', expected: { status: 302, headers: { location: '/users/1/posts/x' }, body: '' } },
  { name: 'redirect (301, absolute)', path: '/moved', expected: { status: 301, headers: { location: 'https://elsewhere.example/' }, body: '' } },
  { name: '404 from notFound()', path: '/nope?x=1', expected: { status: 404, headers: { 'content-type': /^text\/plain/ }, body: 'no route for /nope' } },
  { name: 'POST to a GET-only route -> notFound()', method: 'POST', path: '/custom', headers: { 'Content-Type': 'text/plain' }, body: 'x', expected: { status: 404, body: 'no route for /custom' } },
  { name: 'thrown HTTPException -> its status', path: '/forbidden', expected: { status: 403, body: 'no entry' } },
  { name: 'thrown Error -> onError handler', path: '/boom', expected: { status: 500, body: 'handled: boom' } },
  { name: 'streaming response (3 delayed chunks) arrives complete', path: '/stream', expected: { status: 200, headers: { 'content-type': 'text/plain; charset=utf-8' }, body: 'chunk0;chunk1;chunk2;' } },
  { name: 'HEAD: headers of GET, no body', method: 'HEAD', path: '/users/7/posts/x', expected: { status: 200, headers: { 'content-type': JSON_TYPE }, body: '' } },
  {
    name: 'c.req.header(x-forwarded-for / host) and c.req.url', path: '/whoami?x=1',
    headers: { 'X-Forwarded-For': '203.0.113.9, 10.0.0.1', Host: 'app.example:8443' },
    expected: { status: 200, body: { json: { xff: '203.0.113.9, 10.0.0.1', host: 'app.example:8443', url: 'http://app.example:8443/whoami?x=1' } } },
  },
  {
    name: 'c.req.url is https:// when the web server passes HTTPS=on', path: '/tls/whoami?x=1', nginxOnly: true,
    expected: { status: 200, body: { json: { xff: null, host: 'app.example', url: 'https://app.example/tls/whoami?x=1' } } },
  },
]

const koaRows: Row[] = [
  { name: 'ctx.body = string', path: '/text', expected: { status: 200, headers: { 'content-type': 'text/plain; charset=utf-8', 'content-length': '9' }, body: 'hello koa' } },
  { name: 'ctx.body = object', path: '/object', expected: { status: 200, headers: { 'content-type': 'application/json; charset=utf-8' }, body: { json: { a: 1, list: [1, 2] } } } },
  { name: 'ctx.body = stream', path: '/stream', expected: { status: 200, headers: { 'content-type': 'text/plain; charset=utf-8' }, body: 's1;s2;s3;' } },
  {
    name: 'ctx.body = Buffer', path: '/buffer',
    expected: { status: 200, headers: { 'content-type': 'application/octet-stream', 'content-length': '256' }, body: { length: 256, sha256: sha256(Buffer.from(Array.from({ length: 256 }, (_, i) => i))) } },
  },
  {
    name: 'request body (1 MiB binary) collected from ctx.req', method: 'POST', path: '/collect',
    headers: { 'Content-Type': 'application/octet-stream' }, body: bigBinary,
    expected: { status: 200, body: { json: { length: MiB, sha256: sha256(bigBinary), type: 'application/octet-stream' } } },
  },
  {
    name: 'chunked upload (1 MiB, no Content-Length from the client) collected from ctx.req', method: 'POST', path: '/collect',
    headers: { 'Content-Type': 'application/octet-stream', 'Transfer-Encoding': 'chunked' }, body: bigBinary,
    expected: { status: 200, body: { json: { length: MiB, sha256: sha256(bigBinary), type: 'application/octet-stream' } } },
  },
  { name: "ctx.throw(418, 'teapot')", path: '/teapot', expected: { status: 418, body: 'teapot' } },
  { name: 'ctx.status = 204', path: '/empty', expected: { status: 204, headers: { 'content-type': null }, body: '' } },
  { name: 'ctx.redirect()', path: '/redirect', expected: { status: 302, headers: { location: '/text' }, body: /Redirecting to/ } },
  { name: 'ctx.cookies.set() twice', path: '/cookies', expected: { status: 200, headers: { 'set-cookie': ['a=1; path=/; httponly', 'b=2; path=/x'] }, body: 'two cookies' } },
  {
    name: 'ctx.request.ip, ctx.protocol, ctx.host, ctx.href', path: '/ip',
    expected: { status: 200, body: { json: { ip: '127.0.0.1', protocol: 'http', secure: false, host: 'app.example', href: 'http://app.example/ip' } } },
  },
  {
    name: 'ctx.protocol is https when the web server passes HTTPS=on', path: '/tls/ip', nginxOnly: true,
    expected: { status: 200, body: { json: { ip: '127.0.0.1', protocol: 'https', secure: true, host: 'app.example', href: 'https://app.example/tls/ip' } } },
  },
  { name: 'a thrown Error -> 500', path: '/error', expected: { status: 500, body: 'Internal Server Error' } },
  { name: "Koa's 404", path: '/nope', expected: { status: 404, body: 'Not Found' } },
  { name: 'HEAD: Content-Length of GET, no body', method: 'HEAD', path: '/text', expected: { status: 200, headers: { 'content-type': 'text/plain; charset=utf-8', 'content-length': '9' }, body: '' } },
]

const halfMiBText = bigText.slice(0, MiB / 2)
const fastifyRows: Row[] = [
  { name: 'GET JSON (+ onRequest hook header)', path: '/json', expected: { status: 200, headers: { 'content-type': 'application/json; charset=utf-8', 'x-hook': 'seen' }, body: { json: { hello: 'world' } } } },
  {
    name: 'POST JSON, valid body -> reply.code(201).header()', method: 'POST', path: '/items',
    headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'bolt', qty: 3 }),
    expected: { status: 201, headers: { 'x-made': 'yes', 'x-hook': 'seen' }, body: { json: { created: { name: 'bolt', qty: 3 } } } },
  },
  {
    name: 'POST JSON, chunked upload (no Content-Length from the client)', method: 'POST', path: '/items',
    headers: { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' }, body: JSON.stringify({ name: 'nut' }),
    expected: { status: 201, body: { json: { created: { name: 'nut' } } } },
  },
  {
    name: 'POST JSON failing the schema -> 400', method: 'POST', path: '/items',
    headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ qty: 'many' }),
    expected: { status: 400, headers: { 'content-type': JSON_TYPE }, body: { jsonLike: { statusCode: 400, code: 'FST_ERR_VALIDATION', error: 'Bad Request' } } },
  },
  {
    name: 'POST malformed JSON -> 400', method: 'POST', path: '/items',
    headers: { 'Content-Type': 'application/json' }, body: '{"name":',
    expected: { status: 400, body: { jsonLike: { statusCode: 400, code: 'FST_ERR_CTP_INVALID_JSON_BODY' } } },
  },
  {
    name: 'POST text/plain of 512 KiB echoed', method: 'POST', path: '/echo',
    headers: { 'Content-Type': 'text/plain' }, body: halfMiBText,
    expected: { status: 200, body: { length: MiB / 2, sha256: sha256(halfMiBText) } },
  },
  {
    name: 'POST over bodyLimit (1 MiB) -> 413', method: 'POST', path: '/echo',
    headers: { 'Content-Type': 'text/plain' }, body: bigText + bigText,
    expected: { status: 413, body: { jsonLike: { statusCode: 413, code: 'FST_ERR_CTP_BODY_TOO_LARGE' } } },
  },
  { name: 'reply.redirect()', path: '/redirect', expected: { status: 302, headers: { location: '/json' }, body: '' } },
  { name: 'async handler throwing -> 500 JSON', path: '/boom', expected: { status: 500, headers: { 'content-type': JSON_TYPE }, body: { json: { statusCode: 500, error: 'Internal Server Error', message: 'kaboom' } } } },
  { name: '404', path: '/nope', expected: { status: 404, headers: { 'x-hook': 'seen' }, body: { json: { message: 'Route GET:/nope not found', error: 'Not Found', statusCode: 404 } } } },
  { name: 'request.ip, request.protocol, request.host', path: '/ip', expected: { status: 200, body: { json: { ip: '127.0.0.1', protocol: 'http', host: 'app.example', url: '/ip' } } } },
  { name: 'request.protocol is https when the web server passes HTTPS=on', path: '/tls/ip', nginxOnly: true, expected: { status: 200, body: { json: { ip: '127.0.0.1', protocol: 'https', host: 'app.example', url: '/tls/ip' } } } },
  { name: 'reply.send(stream)', path: '/stream', expected: { status: 200, headers: { 'content-type': 'text/plain' }, body: 'f1;f2;f3;' } },
  { name: 'HEAD (exposeHeadRoutes)', method: 'HEAD', path: '/json', expected: { status: 200, headers: { 'content-type': 'application/json; charset=utf-8' }, body: '' } },
]

// ---------------------------------------------------------------- set-ups

// fastcgi params of the helper's `location /`, for the extra locations.
const FASTCGI_PARAMS = [
  'QUERY_STRING $query_string', 'REQUEST_METHOD $request_method', 'CONTENT_TYPE $content_type',
  'CONTENT_LENGTH $content_length', 'SCRIPT_NAME $fastcgi_script_name', 'REQUEST_URI $request_uri',
  'DOCUMENT_URI $document_uri', 'DOCUMENT_ROOT $document_root', 'SERVER_PROTOCOL $server_protocol',
  'REQUEST_SCHEME $scheme', 'GATEWAY_INTERFACE CGI/1.1', 'SERVER_SOFTWARE nginx/$nginx_version',
  'REMOTE_ADDR $remote_addr', 'REMOTE_PORT $remote_port', 'SERVER_ADDR $server_addr',
  'SERVER_PORT $server_port', 'SERVER_NAME $server_name', 'PATH_INFO $fastcgi_path_info',
].map((p) => `            fastcgi_param ${p};`).join('\n')

/** /tls/: as if nginx had received the request over TLS (HTTPS=on); /live/: fastcgi_buffering off. */
const EXTRA_LOCATIONS = `
        location /tls/ {
${FASTCGI_PARAMS}
            fastcgi_param HTTPS on;
            fastcgi_pass fcgi_backend;
            fastcgi_keep_conn on;
        }
        location /live/ {
${FASTCGI_PARAMS}
            fastcgi_pass fcgi_backend;
            fastcgi_keep_conn on;
            fastcgi_buffering off;
        }`

function startNginxFor(upstream: NginxUpstream): Promise<NginxInstance> {
  return startNginx({ upstream, keepConn: true, extraServer: EXTRA_LOCATIONS })
}

interface Listenable {
  once(event: 'listening' | 'error', cb: (err?: Error) => void): unknown
}

function listening(server: Listenable): Promise<void> {
  return withTimeout(new Promise<void>((resolve, reject) => {
    server.once('listening', () => resolve())
    server.once('error', reject)
  }), 5000, "the server's 'listening'")
}

function closeServer(server: Server | undefined): Promise<void> {
  if (!server || !server.listening) return Promise.resolve()
  return withTimeout(new Promise<void>((resolve) => server.close(() => resolve())), 5000, 'Server.close()')
}

function closeNodeServer(server: http.Server | undefined): Promise<void> {
  if (!server || !server.listening) return Promise.resolve()
  server.closeAllConnections()
  return withTimeout(new Promise<void>((resolve) => server.close(() => resolve())), 10_000, 'http.Server.close()')
}

function nodeListen(server: http.Server): Promise<string> {
  return withTimeout(new Promise<string>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`))
  }), 5000, 'node:http listen')
}

function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void
  const promise = new Promise<T>((r) => { resolve = r })
  return { promise, resolve }
}

/**
 * Everything a describe() opened, closed in its afterAll: nginx first, then
 * Fastify, then the servers. `nginx`, `server`, `fastify` are the latest
 * ones; earlier ones (a test that started a second set) are closed too.
 */
class Fixture {
  base = ''
  nodeServer: http.Server | undefined
  readonly agent = new http.Agent({ keepAlive: true, maxSockets: 4 })
  readonly requestErrors: unknown[] = []
  readonly gates: Array<() => void> = []
  readonly #nginx: NginxInstance[] = []
  readonly #servers: Server[] = []
  readonly #fastify = new Set<FastifyInstance>()
  #latestFastify: FastifyInstance | undefined

  get nginx(): NginxInstance | undefined {
    return this.#nginx.at(-1)
  }

  set nginx(n: NginxInstance | undefined) {
    if (n) this.#nginx.push(n)
  }

  get server(): Server | undefined {
    return this.#servers.at(-1)
  }

  get fastify(): FastifyInstance | undefined {
    return this.#latestFastify
  }

  /** Setting undefined means: the test closed it itself. */
  set fastify(app: FastifyInstance | undefined) {
    if (app) this.#fastify.add(app)
    else if (this.#latestFastify) this.#fastify.delete(this.#latestFastify)
    this.#latestFastify = app
  }

  async close(): Promise<void> {
    for (const open of this.gates.splice(0)) open()
    this.agent.destroy()
    const results = await Promise.allSettled(this.#nginx.splice(0).map((n) => n.stop()))
    for (const app of [...this.#fastify]) {
      this.#fastify.delete(app)
      results.push(...await Promise.allSettled([withTimeout(app.close(), 10_000, 'fastify.close()')]))
    }
    results.push(...await Promise.allSettled([...this.#servers.splice(0).map(closeServer), closeNodeServer(this.nodeServer)]))
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed) throw failed.reason
  }

  /** Our Server: collect listener failures instead of printing them. */
  watch(server: Server): Server {
    server.on('requestError', (err: unknown) => this.requestErrors.push(err))
    this.#servers.push(server)
    return server
  }
}

function nginxLogTest(f: Fixture): void {
  it('nginx error log is clean; no listener failure reported', () => {
    expect(f.nginx!.errorLogProblems()).toEqual([])
    expect(f.requestErrors).toEqual([])
  })
}

/**
 * A client that sends its request and hangs up at once (FIN right behind
 * it): nginx answers 499 and drops the upstream request straight away, so
 * the abort reaches the app together with the request.
 */
function hangUp(port: number, path: string): Promise<void> {
  const s = netConnect(port, '127.0.0.1', () => s.end(`GET ${path} HTTP/1.1\r\nHost: app.example\r\n\r\n`))
  s.resume()
  const closed = new Promise<void>((resolve) => {
    s.on('error', () => resolve())
    s.on('close', () => resolve())
  })
  return withTimeout(closed, 5000, 'the hung-up client connection to close').finally(() => s.destroy())
}

function hangUpTest(f: Fixture, path: string, okRow: Row): void {
  it('clients hanging up right after their request (abort arriving with the request) leave no request stuck', async () => {
    const socket = f.server!.fcgiSocket!
    const before = socket.stats().requests
    await Promise.all(Array.from({ length: 10 }, () => hangUp(f.nginx!.port, path)))
    await waitFor(() => socket.stats().requests > before, { timeoutMs: 5000, what: 'the requests to reach the app' })
    // Each stuck request holds one of the maxConns request slots for good
    // (and keeps server.close() from ever finishing).
    await waitFor(() => socket.stats().busyConnections === 0, { timeoutMs: 5000, what: 'the aborted requests to end' }).catch((err: Error) => {
      throw new Error(`${err.message}; stats now: ${JSON.stringify(socket.stats())}`)
    })
    await checkRow(f.base, okRow, f.agent)
  })
}

/** A response body failing half-way: the client must not get a response that looks complete (node:http resets the connection). */
function brokenStreamTest(base: () => string): void {
  it('a body stream failing half-way: the client sees a truncated response, not a complete one (as node:http)', async () => {
    const outcome = await httpRequest(base(), { path: '/broken-stream', headers: { Host: 'app.example' }, agent: false }).then(
      (res) => `complete ${res.status} response, body ${JSON.stringify(res.body.toString())}`,
      (err: Error) => `error: ${err.message}`,
    )
    expect(outcome).toMatch(/^error: /)
  })
}

/** @hono/node-server on node:http sends Content-Length for a body of known length (c.text, c.json). */
function contentLengthTest(base: () => string, agent: () => http.Agent): void {
  it('a response of known length (c.json) carries Content-Length', async () => {
    const res = await httpRequest(base(), { path: '/users/1/posts/x', headers: { Host: 'app.example' }, agent: agent() })
    expect(res.status).toBe(200)
    expect(res.headers['content-length']).toBe(String(res.body.length))
  })
}

// ---------------------------------------------------------------- Hono

type HonoMode = 'serve({ fetch: app.fetch, path })' | 'createServer(getRequestListener(app.fetch)).listen(path)'

for (const mode of ['serve({ fetch: app.fetch, path })', 'createServer(getRequestListener(app.fetch)).listen(path)'] as HonoMode[]) {
  describe(`Hono via ${mode}, behind nginx (unix socket, keep_conn on)`, () => {
    const f = new Fixture()
    const probe: HonoProbe = {}
    beforeAll(async () => {
      const app = createHonoApp(probe)
      const path = tmpSocketPath('hono')
      const server = f.watch(mode.startsWith('serve') ? serve({ fetch: app.fetch, path }) : createServer(getRequestListener(app.fetch)).listen(path))
      await listening(server)
      f.nginx = await startNginxFor({ path })
      f.base = f.nginx.url
    })
    afterAll(() => f.close())

    tableTests(honoRows, () => f.base, () => f.agent, true)

    it('unbuffered (fastcgi_buffering off): the 1st chunk reaches the client before the handler makes the others', async () => {
      const gate = deferred()
      f.gates.push(() => gate.resolve())
      probe.liveGate = () => gate.promise
      const req = http.request(`${f.base}/live/stream`, { headers: { Host: 'app.example' }, agent: false })
      try {
        req.end()
        const [res] = (await withTimeout(once(req, 'response'), 5000, 'the response head')) as [http.IncomingMessage]
        expect(res.statusCode).toBe(200)
        let text = ''
        res.setEncoding('utf8')
        const ended = withTimeout(once(res, 'end'), 5000, 'the end of the body')
        await withTimeout(new Promise<void>((resolve) => res.on('data', (d: string) => { text += d; if (text.includes('live0;')) resolve() })), 5000, 'the 1st chunk while the handler waits')
        expect(text).toBe('live0;')
        gate.resolve()
        await ended
        expect(text).toBe('live0;live1;live2;')
      } finally {
        gate.resolve()
        req.destroy()
      }
    })

    it("client abort: the handler's request.signal fires (nginx closes the upstream connection), and the server keeps serving", async () => {
      const started = deferred()
      const ended = deferred<'aborted' | 'timeout'>()
      probe.slowStarted = () => started.resolve()
      probe.slowEnded = (outcome) => ended.resolve(outcome)
      const req = http.request(`${f.base}/slow`, { headers: { Host: 'app.example' }, agent: false })
      req.on('error', () => {})
      req.end()
      await withTimeout(started.promise, 5000, 'GET /slow to reach the handler')
      req.destroy()
      // The handler waits 5 s for the signal: 'timeout' means it never fired.
      expect(await withTimeout(ended.promise, 8000, 'the /slow handler to finish')).toBe('aborted')
      await waitFor(() => / \/slow HTTP\/1\.1" 499 /.test(f.nginx!.accessLog()), { what: 'nginx to log the 499', timeoutMs: 5000 })
      await checkRow(f.base, honoRows[0]!, f.agent)
      await uncaught.expectNone()
    })

    nginxLogTest(f)
    contentLengthTest(() => f.base, () => f.agent)
    hangUpTest(f, '/users/1/posts/x', honoRows[0]!)
    brokenStreamTest(() => f.base)
  })
}

describe('Hono reference: @hono/node-server on node:http (no nginx)', () => {
  const f = new Fixture()
  beforeAll(async () => {
    f.nodeServer = http.createServer(getRequestListener(createHonoApp().fetch))
    f.base = await nodeListen(f.nodeServer)
  })
  afterAll(() => f.close())
  tableTests(honoRows, () => f.base, () => f.agent, false)
  contentLengthTest(() => f.base, () => f.agent)
  brokenStreamTest(() => f.base)
})

// ---------------------------------------------------------------- Koa

describe('Koa 3 via createServer(app.callback()), behind nginx (TCP 127.0.0.1:0, keep_conn on)', () => {
  const f = new Fixture()
  const errors: Error[] = []
  beforeAll(async () => {
    const server = f.watch(createServer(createKoaApp(errors).callback()).listen(0, '127.0.0.1'))
    await listening(server)
    const addr = server.address()
    if (!addr || typeof addr === 'string' || !addr.port) throw new Error(`unexpected address ${JSON.stringify(addr)}`)
    f.nginx = await startNginxFor({ port: addr.port, host: '127.0.0.1' })
    f.base = f.nginx.url
  })
  afterAll(() => f.close())

  tableTests(koaRows, () => f.base, () => f.agent, true)

  it("app.on('error') got both errors (Koa emits the exposed 418 too); the app still serves", async () => {
    expect(errors.map((e) => e.message)).toEqual(['teapot', 'kaboom'])
    await checkRow(f.base, koaRows[0]!, f.agent)
  })

  nginxLogTest(f)

  it('a chunked upload: the app does not see both Transfer-Encoding and Content-Length (node:http never shows both; RFC 9112 6.3)', async () => {
    const res = await httpRequest(f.base, { method: 'POST', path: '/framing', headers: { Host: 'app.example', 'Transfer-Encoding': 'chunked' }, body: 'hello world', agent: f.agent })
    const seen = JSON.parse(res.body.toString()) as { length: number; te: string | null; cl: string | null }
    expect(seen.length).toBe(11)
    expect(seen.te !== null && seen.cl !== null, `the app saw ${JSON.stringify(seen)}`).toBe(false)
  })
  // No hangUpTest here: over TCP nginx is still connecting when it sees the
  // client go, so the request never reaches the app. The unix socket set-ups
  // cover it; this is its deterministic form, with a raw FastCGI client:
  it('the web server closing the connection right behind the request: the request ends (raw client, no nginx)', async () => {
    const socket = f.server!.fcgiSocket!
    const port = (f.server!.address() as { port: number }).port
    const conn = await FcgiConnection.connect({ port, host: '127.0.0.1' })
    try {
      const before = socket.stats().requests
      await conn.write(Buffer.concat([
        encodeBeginRequest(1, FCGI_RESPONDER, true),
        encodeParams(1, defaultParams({ REQUEST_URI: '/text', HTTP_HOST: 'app.example' })),
        encodeRecord(FCGI_STDIN, 1),
      ]))
      conn.socket.end() // FIN right behind the request, as nginx when its client hung up
      await waitFor(() => socket.stats().requests > before, { timeoutMs: 5000, what: 'the request to reach the app' })
      await waitFor(() => socket.stats().busyConnections === 0, { timeoutMs: 5000, what: 'the aborted request to end' }).catch((err: Error) => {
        throw new Error(`${err.message}; stats now: ${JSON.stringify(socket.stats())}`)
      })
    } finally {
      conn.destroy()
    }
  })
  brokenStreamTest(() => f.base)
})

describe('Koa reference: node:http (no nginx)', () => {
  const f = new Fixture()
  const errors: Error[] = []
  beforeAll(async () => {
    f.nodeServer = http.createServer(createKoaApp(errors).callback())
    f.base = await nodeListen(f.nodeServer)
  })
  afterAll(() => f.close())
  tableTests(koaRows, () => f.base, () => f.agent, false)
  it("app.on('error') got both errors", () => {
    expect(errors.map((e) => e.message)).toEqual(['teapot', 'kaboom'])
  })

  it('a chunked upload: the app does not see both Transfer-Encoding and Content-Length (node:http never shows both; RFC 9112 6.3)', async () => {
    const res = await httpRequest(f.base, { method: 'POST', path: '/framing', headers: { Host: 'app.example', 'Transfer-Encoding': 'chunked' }, body: 'hello world', agent: f.agent })
    const seen = JSON.parse(res.body.toString()) as { length: number; te: string | null; cl: string | null }
    expect(seen.length).toBe(11)
    expect(seen.te !== null && seen.cl !== null, `the app saw ${JSON.stringify(seen)}`).toBe(false)
  })
  brokenStreamTest(() => f.base)
})

// ---------------------------------------------------------------- Fastify

describe('Fastify 5 via serverFactory + app.ready() + app.server.listen(path), behind nginx (unix socket, keep_conn on)', () => {
  const f = new Fixture()
  beforeAll(async () => {
    const app = createFastifyApp((handler) => f.watch(createServer(handler)) as unknown as http.Server)
    f.fastify = app
    await withTimeout(Promise.resolve(app.ready()), 5000, 'fastify.ready()')
    const path = tmpSocketPath('fastify')
    app.server.listen(path)
    await listening(app.server)
    f.nginx = await startNginxFor({ path })
    f.base = f.nginx.url
  })
  afterAll(() => f.close())

  tableTests(fastifyRows, () => f.base, () => f.agent, true)
  nginxLogTest(f)
  hangUpTest(f, '/json', fastifyRows[0]!)
  brokenStreamTest(() => f.base)

  it('40 concurrent POSTs over 8 client connections: each gets its own body back', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 })
    try {
      const results = await Promise.all(Array.from({ length: 40 }, (_, i) =>
        httpRequest(f.base, { method: 'POST', path: '/items', headers: { Host: 'app.example', 'Content-Type': 'application/json' }, body: JSON.stringify({ name: `item-${i}`, qty: i }), agent })))
      results.forEach((res, i) => {
        expect(res.status).toBe(201)
        expect(JSON.parse(res.body.toString())).toEqual({ created: { name: `item-${i}`, qty: i } })
      })
    } finally {
      agent.destroy()
    }
  })

  it('fastify.close() leaves a server it did not listen() on open (close it yourself)', async () => {
    await withTimeout(f.fastify!.close(), 5000, 'fastify.close()')
    f.fastify = undefined
    expect(f.server!.listening).toBe(true) // afterAll closes it
  })
})

describe('Fastify 5 via serverFactory + app.listen({ path }), behind nginx', () => {
  const f = new Fixture()
  afterAll(() => f.close())

  it('app.listen({ path }) listens on our server; requests pass; app.close() closes it', async () => {
    const app = createFastifyApp((handler) => f.watch(createServer(handler)) as unknown as http.Server)
    f.fastify = app
    const path = tmpSocketPath('fastify-listen')
    const address = await withTimeout(app.listen({ path }), 5000, 'fastify.listen({ path })')
    expect(address).toBe(path)
    expect(f.server!.listening).toBe(true)
    f.nginx = await startNginxFor({ path })
    await checkRow(f.nginx.url, fastifyRows[0]!, f.agent)
    await checkRow(f.nginx.url, fastifyRows[1]!, f.agent)
    await withTimeout(app.close(), 5000, 'fastify.close()')
    f.fastify = undefined
    expect(f.server!.listening).toBe(false)
    expect(f.nginx.errorLogProblems()).toEqual([])
    expect(f.requestErrors).toEqual([])
  })

  it('app.listen({ port: 0, host: "127.0.0.1" }) works too (nginx over TCP)', async () => {
    const app = createFastifyApp((handler) => f.watch(createServer(handler)) as unknown as http.Server)
    f.fastify = app
    const address = await withTimeout(app.listen({ port: 0, host: '127.0.0.1' }), 5000, 'fastify.listen({ port: 0 })')
    const port = (f.server!.address() as { port: number }).port
    expect(address).toBe(`http://127.0.0.1:${port}`)
    f.nginx = await startNginxFor({ port, host: '127.0.0.1' })
    await checkRow(f.nginx.url, fastifyRows[0]!, f.agent)
    await withTimeout(app.close(), 5000, 'fastify.close()')
    f.fastify = undefined
    expect(f.server!.listening).toBe(false)
    expect(f.nginx.errorLogProblems()).toEqual([])
  })
})

describe('Fastify reference: the same serverFactory recipe on node:http (no nginx)', () => {
  const f = new Fixture()
  beforeAll(async () => {
    const app = createFastifyApp((handler) => http.createServer(handler))
    f.fastify = app
    await withTimeout(Promise.resolve(app.ready()), 5000, 'fastify.ready()')
    f.nodeServer = app.server
    f.base = await nodeListen(app.server)
  })
  afterAll(() => f.close())
  tableTests(fastifyRows, () => f.base, () => f.agent, false)
  brokenStreamTest(() => f.base)
})
