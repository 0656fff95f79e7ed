/**
 * examples/express and examples/hono run as a user runs them: `node
 * examples/<name>/server.mjs` as a child process of its own (on a temporary
 * unix socket or 127.0.0.1:0, from FCGI_LISTEN), behind a real nginx; a few
 * routes fetched through nginx; SIGTERM or SIGINT -> the request in flight
 * finishes, exit 0, the socket file is gone and nothing is left running.
 *
 * The examples import the built library (../../dist/index.js): dist/ must be
 * newer than src/ (run `npx tsup` first), checked before anything starts.
 *
 * At the end, two differences from node:http found while writing
 * docs/http.md (fixed since), kept as regression tests.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { afterEach, beforeAll, describe, expect, it, onTestFailed } from 'vitest'

import { createServer, type Server } from '../../src/index.js'
import { type NginxInstance, startNginx, stopAllNginx } from '../helpers/nginx.js'
import { tmpSocketPath, waitFor, withTimeout } from '../helpers/wait.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

// ---------------------------------------------------------------- dist/ freshness

function tsFiles(dir: string): string[] {
  const out: string[] = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name)
    if (entry.isDirectory()) out.push(...tsFiles(full))
    else if (entry.name.endsWith('.ts')) out.push(full)
  }
  return out
}

/** The examples run dist/index.js: it must exist and be newer than every src/**.ts. */
function assertDistFresh(): void {
  const built = path.join(ROOT, 'dist/index.js')
  if (!existsSync(built)) {
    throw new Error(`dist/index.js does not exist: the examples import the built library; run \`npx tsup\` in ${ROOT} first`)
  }
  const builtAt = statSync(built).mtimeMs
  const newer = tsFiles(path.join(ROOT, 'src')).filter((f) => statSync(f).mtimeMs > builtAt).map((f) => path.relative(ROOT, f))
  if (newer.length > 0) {
    throw new Error(`dist/index.js is older than ${newer.join(', ')}: the examples would run a stale build; run \`npx tsup\` in ${ROOT} first`)
  }
}

beforeAll(() => {
  assertDistFresh()
})

// ---------------------------------------------------------------- child processes

const children = new Set<Example>()

/** `node <args>` with its output collected; SIGKILLed after 30 s whatever happens. */
class Example {
  readonly proc: ChildProcess
  output = ''
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  readonly #lifetime: NodeJS.Timeout

  /** `script`: a name for messages; `args`: node's arguments (default: the script). */
  constructor(readonly script: string, env: Record<string, string>, args: string[] = [script]) {
    const childEnv: Record<string, string> = {}
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined) childEnv[k] = v
    delete childEnv.NODE_OPTIONS // vitest's loader must not leak into the example
    this.proc = spawn(process.execPath, args, { cwd: ROOT, env: { ...childEnv, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    this.proc.stdout!.on('data', (d: Buffer) => (this.output += d.toString()))
    this.proc.stderr!.on('data', (d: Buffer) => (this.output += d.toString()))
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve({ code, signal })))
    this.#lifetime = setTimeout(() => this.proc.kill('SIGKILL'), 30_000)
    void this.exited.then(() => clearTimeout(this.#lifetime))
    children.add(this)
    onTestFailed(() => console.error(`[http-examples] ${script} (pid ${this.proc.pid}) output:\n${this.output}`))
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null
  }

  /** Resolves with the first match of `re` in the output; rejects if the process exits first or after `ms`. */
  waitOutput(re: RegExp, ms = 15_000): Promise<RegExpMatchArray> {
    return waitFor(() => {
      const m = re.exec(this.output)
      if (m) return m
      if (!this.alive) throw new Error(`${this.script} exited before printing ${re}:\n${this.output}`)
      return null
    }, { timeoutMs: ms, intervalMs: 20, what: `${re} from ${this.script} (output so far:\n${this.output})` })
  }

  waitExit(ms = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return withTimeout(this.exited, ms, `the exit of ${this.script} (output:\n${this.output})`)
  }
}

/** Starts an example on FCGI_LISTEN=`listen`; resolves once it printed where it listens. */
async function startExample(name: 'express' | 'hono', listen: string, env: Record<string, string> = {}): Promise<{ app: Example; where: string }> {
  const app = new Example(`examples/${name}/server.mjs`, { FCGI_LISTEN: listen, ...env })
  const m = await app.waitOutput(new RegExp(`${name}-example: listening on (\\S+)`))
  return { app, where: m[1]! }
}

function isRunning(pid: number | undefined): boolean {
  if (pid === undefined) return false
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** SIGTERM/SIGINT -> exit 0, the goodbye line printed, the socket file removed. */
async function expectCleanExit(app: Example, signal: 'SIGTERM' | 'SIGINT', name: string, socketPath?: string): Promise<void> {
  app.proc.kill(signal)
  const { code, signal: bySignal } = await app.waitExit()
  expect({ code, signal: bySignal }).toEqual({ code: 0, signal: null })
  expect(app.output).toContain(`${name}-example: ${signal}, closing`)
  expect(app.output).toContain(`${name}-example: closed, bye`)
  if (socketPath) expect(existsSync(socketPath)).toBe(false)
  expect(isRunning(app.proc.pid)).toBe(false)
}

const servers: Server[] = []
const nodeServers: http.Server[] = []

afterEach(async () => {
  for (const c of children) {
    if (c.alive) c.proc.kill('SIGKILL')
    await withTimeout(c.exited, 5000, `${c.script} to die`).catch(() => {})
  }
  children.clear()
  const pids: number[] = []
  for (const n of nginxes) pids.push(n.pid)
  nginxes.length = 0
  await stopAllNginx()
  for (const pid of pids) expect(isRunning(pid), `nginx ${pid} still running`).toBe(false)
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((r) => (s.listening ? s.close(() => r()) : r()))))
  await Promise.all(nodeServers.splice(0).map((s) => new Promise<void>((r) => s.close(() => r()))))
})

const nginxes: NginxInstance[] = []
async function nginxFor(upstream: { path: string } | { port: number; host: string }, extraServer?: string): Promise<NginxInstance> {
  const n = await startNginx({ upstream, keepConn: true, extraServer })
  nginxes.push(n)
  return n
}

// ---------------------------------------------------------------- fetching

const TIMEOUT = 10_000

async function get(url: string, init: RequestInit = {}): Promise<Response> {
  return fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(TIMEOUT), ...init })
}

async function getJson(url: string): Promise<Record<string, unknown>> {
  const res = await get(url)
  expect(res.status, url).toBe(200)
  expect(res.headers.get('content-type')).toMatch(/^application\/json/)
  return (await res.json()) as Record<string, unknown>
}

/** The body in the pieces the client read it in. */
async function readPieces(res: Response): Promise<string[]> {
  const pieces: string[] = []
  const reader = res.body!.getReader()
  for (;;) {
    const { done, value } = await reader.read()
    if (done) return pieces
    pieces.push(Buffer.from(value).toString())
  }
}

const TICKS = 'tick 1\ntick 2\ntick 3\n'

/** The requests both examples answer alike, at mount point `base` ('' or '/app'). */
async function commonRoutes(url: string, base: string, hello: RegExp): Promise<void> {
  const home = await get(`${url}${base}/`)
  expect(home.status).toBe(200)
  expect(home.headers.get('content-type')).toMatch(/^text\/plain/)
  expect(await home.text()).toMatch(hello)

  expect(await getJson(`${url}${base}/hello/a%20b?x=1&y=%2F`)).toEqual({ hello: 'a b', query: { x: '1', y: '/' } })

  const echo = await get(`${url}${base}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"list":[1,2,3],"s":"é"}' })
  expect(echo.status).toBe(201)
  expect(await echo.json()).toEqual({ received: { list: [1, 2, 3], s: 'é' } })

  const redirect = await get(`${url}${base}/redirect`)
  expect(redirect.status).toBe(302)
  expect(redirect.headers.get('location')).toBe(`${base}/hello/redirected`)

  const failing = await get(`${url}${base}/error`)
  expect(failing.status).toBe(500)
  await failing.arrayBuffer()

  const missing = await get(`${url}${base}/no/such/route`)
  expect(missing.status).toBe(404)
  await missing.arrayBuffer()

  // /stream writes three lines 200 ms apart with X-Accel-Buffering: no:
  // nginx hides the header and passes each line on as it comes (as node:http
  // would: a line is not held back until the next one is written), and the
  // body carries no chunk framing of the application's.
  const stream = await get(`${url}${base}/stream`)
  expect(stream.status).toBe(200)
  expect(stream.headers.get('x-accel-buffering')).toBeNull()
  const pieces = await readPieces(stream)
  expect(pieces.join('')).toBe(TICKS)
  expect.soft(pieces.slice(0, 2), 'each line on its own').toEqual(['tick 1\n', 'tick 2\n'])
}

// ---------------------------------------------------------------- the examples

describe('examples/express/server.mjs behind nginx', () => {
  it('serves its routes; SIGTERM with a request in flight: the request completes, exit 0, nothing left', async () => {
    const socketPath = tmpSocketPath('express')
    const { app, where } = await startExample('express', socketPath)
    expect(where).toBe(`unix:${socketPath}`)
    const nginx = await nginxFor({ path: socketPath })

    await commonRoutes(nginx.url, '', /^Hello from Express over FastCGI\n$/)

    // What the app sees: REMOTE_ADDR as req.ip, REQUEST_URI as req.url, the Host header with the port.
    const seen = await getJson(`${nginx.url}/request?q=%2F`)
    expect(seen).toMatchObject({
      method: 'GET',
      url: '/request?q=%2F',
      originalUrl: '/request?q=%2F',
      baseUrl: '',
      ip: '127.0.0.1',
      protocol: 'http',
      host: `127.0.0.1:${nginx.port}`,
      httpVersion: '1.1',
      cgi: { REQUEST_URI: '/request?q=%2F', QUERY_STRING: 'q=%2F' },
    })
    expect((seen.headers as Record<string, string>).host).toBe(`127.0.0.1:${nginx.port}`)

    // SIGTERM while /stream is half-way: the response still completes.
    const inFlight = await get(`${nginx.url}/stream`)
    const reader = inFlight.body!.getReader()
    const first = await reader.read()
    expect(Buffer.from(first.value!).toString()).toBe('tick 1\n')
    app.proc.kill('SIGTERM')
    await app.waitOutput(/express-example: SIGTERM, closing/)
    let rest = ''
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      rest += Buffer.from(value).toString()
    }
    expect(`tick 1\n${rest}`).toBe(TICKS)
    const { code, signal } = await app.waitExit()
    expect({ code, signal }).toEqual({ code: 0, signal: null })
    expect(app.output).toMatch(/express-example: closed, bye\n$/)
    expect(existsSync(socketPath)).toBe(false)
    expect(isRunning(app.proc.pid)).toBe(false)

    // nginx now finds nobody there.
    const after = await get(`${nginx.url}/`)
    expect(after.status).toBe(502)
    await after.arrayBuffer()
  })

  it('APP_PREFIX=/app behind `location /app/` with fastcgi_params (docs/deployment-nginx-apache.md): routes under /app, req.baseUrl; SIGINT -> exit 0', async () => {
    const fastcgiParams = '/etc/nginx/fastcgi_params'
    expect(existsSync(fastcgiParams), `${fastcgiParams} (shipped with nginx) is needed`).toBe(true)
    const socketPath = tmpSocketPath('express-app')
    const { app } = await startExample('express', socketPath, { APP_PREFIX: '/app' })
    const nginx = await nginxFor({ path: socketPath }, [
      '        location /app/ {',
      `            include ${fastcgiParams};`,
      '            fastcgi_pass fcgi_backend;',
      '            fastcgi_keep_conn on;',
      '        }',
    ].join('\n'))

    await commonRoutes(nginx.url, '/app', /^Hello from Express over FastCGI\n$/)
    expect(await getJson(`${nginx.url}/app/request?x=1`)).toMatchObject({ url: '/request?x=1', originalUrl: '/app/request?x=1', baseUrl: '/app' })

    // nginx redirects /app to /app/ itself; outside the prefix the app has nothing.
    const bare = await get(`${nginx.url}/app`)
    expect(bare.status).toBe(301)
    expect(bare.headers.get('location')).toMatch(/\/app\/$/)
    await bare.arrayBuffer()
    const outside = await get(`${nginx.url}/request`)
    expect(outside.status).toBe(404)
    await outside.arrayBuffer()

    await expectCleanExit(app, 'SIGINT', 'express', socketPath)
  })
})

describe('examples/hono/server.mjs behind nginx', () => {
  it('serves its routes over serve({ fetch }); SIGTERM -> exit 0, socket removed', async () => {
    const socketPath = tmpSocketPath('hono')
    const { app, where } = await startExample('hono', socketPath)
    expect(where).toBe(`unix:${socketPath}`)
    const nginx = await nginxFor({ path: socketPath })

    await commonRoutes(nginx.url, '', /^Hello from Hono over FastCGI\n$/)

    // c.req.url is absolute (Host header + REQUEST_URI); c.env is serve()'s context.
    expect(await getJson(`${nginx.url}/request?x=1`)).toMatchObject({
      method: 'GET',
      url: `http://127.0.0.1:${nginx.port}/request?x=1`,
      path: '/request',
      remoteAddress: '127.0.0.1',
      cgi: { REQUEST_URI: '/request?x=1', SCRIPT_NAME: '/request', QUERY_STRING: 'x=1' },
    })

    await expectCleanExit(app, 'SIGTERM', 'hono', socketPath)
  })

  it('FCGI_LISTEN=127.0.0.1:0 (TCP), APP_PREFIX=/app: /app/ and /app both answer; SIGTERM -> exit 0', async () => {
    const { app, where } = await startExample('hono', '127.0.0.1:0', { APP_PREFIX: '/app' })
    const m = /^127\.0\.0\.1:(\d+)$/.exec(where)
    expect(m, where).not.toBeNull()
    const port = Number(m![1])
    expect(port).toBeGreaterThan(0)
    const nginx = await nginxFor({ port, host: '127.0.0.1' })

    await commonRoutes(nginx.url, '/app', /^Hello from Hono over FastCGI\n$/)
    const bare = await get(`${nginx.url}/app`)
    expect(bare.status).toBe(200)
    expect(await bare.text()).toBe('Hello from Hono over FastCGI\n')
    expect(await getJson(`${nginx.url}/app/request`)).toMatchObject({ path: '/app/request', remoteAddress: '127.0.0.1' })

    await expectCleanExit(app, 'SIGTERM', 'hono')
  })
})

// ---------------------------------------------------------------- differences from node:http

/** A node:http server on 127.0.0.1:0 with `listener`: the reference behaviour. */
async function nodeReference(listener: http.RequestListener): Promise<string> {
  const s = http.createServer(listener)
  nodeServers.push(s)
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`
}

describe('differences from node:http found while writing docs/http.md', () => {
  it('a response with a Trailer header: 200 and its body as under node:http; the process survives its requestTimeout', async () => {
    // The same handler twice: here for node:http, as source for the child.
    const handler: http.RequestListener = (_req, res) => {
      res.setHeader('Content-Type', 'text/plain')
      res.setHeader('Trailer', 'X-Checksum')
      res.write('body\n')
      res.addTrailers({ 'X-Checksum': 'abc' })
      res.end()
    }
    const handlerSource = `(_req, res) => {
      res.setHeader('Content-Type', 'text/plain')
      res.setHeader('Trailer', 'X-Checksum')
      res.write('body\\n')
      res.addTrailers({ 'X-Checksum': 'abc' })
      res.end()
    }`
    // node:http: chunked, trailers sent, the client gets the body.
    const base = await nodeReference(handler)
    const ref = await get(`${base}/`)
    expect({ status: ref.status, body: await ref.text() }).toEqual({ status: 200, body: 'body\n' })

    // libfcgi, in a child process (an uncaught exception must not hit the test runner), behind nginx.
    const socketPath = tmpSocketPath('trailer')
    const script = [
      `import { createServer } from ${JSON.stringify(path.join(ROOT, 'dist/index.js'))}`,
      `const server = createServer({ requestTimeout: 300 }, ${handlerSource})`,
      `server.on('requestError', (err) => console.error('requestError', err.code))`,
      `server.listen(${JSON.stringify(socketPath)}, () => console.log('trailer-app: listening'))`,
      `process.on('SIGTERM', () => server.close())`,
    ].join('\n')
    const app = new Example('the Trailer app', {}, ['--input-type=module', '-e', script])
    await app.waitOutput(/trailer-app: listening/)
    const nginx = await nginxFor({ path: socketPath })
    const res = await get(`${nginx.url}/`)
    const body = await res.text()
    // requestTimeout (300 ms) of that request passes.
    await new Promise((r) => setTimeout(r, 800))
    expect({ status: res.status, body, alive: app.alive }).toEqual({ status: 200, body: 'body\n', alive: true })
    expect(app.output).not.toContain('ERR_HTTP_TRAILER_INVALID')
  })

  it('without REQUEST_URI, req.url is rebuilt from SCRIPT_NAME/PATH_INFO percent-encoded again (node:http: the raw request target)', async () => {
    const listener: http.RequestListener = (req, res) => {
      res.setHeader('Content-Type', 'text/plain')
      res.end(req.url)
    }
    const base = await nodeReference(listener)
    const target = '/noreq/a%3Fb%25c%20d?x=1'
    expect(await (await get(`${base}${target}`)).text()).toBe(target)

    const socketPath = tmpSocketPath('noreq')
    const server = createServer(listener)
    servers.push(server)
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(socketPath, () => resolve())
    })
    // A hand-written parameter list without REQUEST_URI: nginx's
    // $fastcgi_script_name is the decoded path ("/noreq/a?b%c d").
    const nginx = await nginxFor({ path: socketPath }, [
      '        location /noreq/ {',
      '            fastcgi_param REQUEST_METHOD $request_method;',
      '            fastcgi_param QUERY_STRING $query_string;',
      '            fastcgi_param SCRIPT_NAME $fastcgi_script_name;',
      '            fastcgi_pass fcgi_backend;',
      '        }',
    ].join('\n'))
    const res = await get(`${nginx.url}${target}`)
    expect(res.status).toBe(200)
    expect(await res.text()).toBe(target)
  })
})
