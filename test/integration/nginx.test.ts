// The seed's accept loop behind a real nginx: unix socket and TCP upstreams,
// fastcgi_keep_conn on (with upstream keepalive) and off.
import crypto from 'node:crypto'

import { afterEach, beforeEach, describe, expect, it } from 'vitest'

import { type FcgiSocket } from '../../src/index.js'
import { type NginxInstance, type NginxUpstream, startNginx, stopAllNginx } from '../helpers/nginx.js'
import { serveLoops, TestSession } from '../helpers/session.js'
import { trackUncaught } from '../helpers/uncaught.js'
import { tmpSocketPath, waitFor } from '../helpers/wait.js'

interface SlowOutcome { aborted: boolean; ms: number }

interface App {
  sock: FcgiSocket
  upstream: NginxUpstream
  loops: Promise<number[]>
  slow: SlowOutcome[]
}

const session = new TestSession()
afterEach(async () => {
  await stopAllNginx()
  await session.release()
})
// After the clean-up hook, so that it stops listening before the clean-up runs.
const uncaught = trackUncaught()

/**
 * The seed program, ported: a few Request objects on one socket, each in a
 * `while (await req.accept())` loop answering with its REQUEST_URI. Besides:
 * /echo returns the request body, /missing answers 404 with a custom header,
 * /slow waits 5 s unless aborted first.
 */
function startApp(kind: 'unix' | 'tcp', threads = 4): App {
  const sock = session.listen(kind === 'unix' ? tmpSocketPath('nginx') : '127.0.0.1:0')
  const addr = sock.address()
  if (!addr) throw new Error('socket has no address')
  const upstream: NginxUpstream = addr.family === 'unix' ? { path: addr.address } : { port: addr.port!, host: '127.0.0.1' }
  const slow: SlowOutcome[] = []
  const all = serveLoops(sock, threads, async (req) => {
    const uri = req.env.REQUEST_URI ?? ''
    const chunks: Buffer[] = []
    const t0 = Date.now()
    try {
      for await (const c of req.stdin) chunks.push(c as Buffer)
    } catch (err) {
      // nginx may abort while the (empty) body is still being read: for
      // /slow that is the abort the test waits for, not a failed loop.
      if (!req.aborted) throw err
      if (uri.startsWith('/slow')) slow.push({ aborted: true, ms: Date.now() - t0 })
      return
    }
    const input = Buffer.concat(chunks)
    if (uri.startsWith('/echo')) {
      req.stdout.write(`Content-Type: application/octet-stream\r\nContent-Length: ${input.length}\r\n\r\n`)
      req.stdout.write(input)
    } else if (uri.startsWith('/missing')) {
      req.stdout.write('Status: 404 Not Found\r\nX-Fcgi-Test: custom-value\r\nContent-Type: text/plain\r\n\r\nno such thing\n')
    } else if (uri.startsWith('/slow')) {
      const aborted = req.aborted || await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 5000)
        req.once('aborted', () => { clearTimeout(timer); resolve(true) })
      })
      slow.push({ aborted, ms: Date.now() - t0 })
      if (!aborted) req.stdout.write('Content-Type: text/plain\r\n\r\nslow done\n')
    } else {
      req.stdout.write(`Content-Type: text/plain\r\n\r\nHello from ${uri}\n`)
    }
  })
  all.catch(() => {})
  return { sock, upstream, loops: all, slow }
}

async function pool<T>(count: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(count)
  let next = 0
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) {
      const i = next++
      out[i] = await fn(i)
    }
  }))
  return out
}

async function get(url: string): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(15000) })
  return { status: res.status, text: await res.text() }
}

const MATRIX = [
  { kind: 'unix', keepConn: true },
  { kind: 'unix', keepConn: false },
  { kind: 'tcp', keepConn: true },
  { kind: 'tcp', keepConn: false },
] as const

describe.each(MATRIX)('behind nginx: $kind upstream, fastcgi_keep_conn $keepConn', ({ kind, keepConn }) => {
  let app: App
  let nginx: NginxInstance

  beforeEach(async () => {
    app = startApp(kind)
    nginx = await startNginx({ upstream: app.upstream, keepConn, ...(keepConn ? { keepalive: 16 } : {}) })
  })

  it('200 GETs with concurrency 16 all answer 200 with their own REQUEST_URI', async () => {
    const results = await pool(200, 16, (i) => get(`${nginx.url}/req/${i}?n=${i}`))
    results.forEach((r, i) => {
      expect(r.status).toBe(200)
      expect(r.text).toBe(`Hello from /req/${i}?n=${i}\n`)
    })
    expect(app.sock.stats().requests).toBe(200)
    expect(nginx.errorLogProblems()).toEqual([])
    await uncaught.expectNone()
  })

  it('1 MiB POST bodies come back byte-exact', async () => {
    const bodies = Array.from({ length: 4 }, () => crypto.randomBytes(1024 * 1024))
    const echoed = await pool(bodies.length, 2, async (i) => {
      const res = await fetch(`${nginx.url}/echo/${i}`, {
        method: 'POST',
        body: bodies[i],
        headers: { 'content-type': 'application/octet-stream' },
        signal: AbortSignal.timeout(20000),
      })
      expect(res.status).toBe(200)
      return Buffer.from(await res.arrayBuffer())
    })
    echoed.forEach((b, i) => {
      expect(b.length).toBe(bodies[i]!.length)
      expect(b.equals(bodies[i]!)).toBe(true)
    })
    expect(nginx.errorLogProblems()).toEqual([])
    await uncaught.expectNone()
  })

  it('Status: 404 and custom headers reach the HTTP client', async () => {
    const res = await fetch(`${nginx.url}/missing`, { signal: AbortSignal.timeout(15000) })
    expect(res.status).toBe(404)
    expect(res.headers.get('x-fcgi-test')).toBe('custom-value')
    expect(await res.text()).toBe('no such thing\n')
    expect(nginx.errorLogProblems()).toEqual([])
  })

  it('an HTTP client that gives up makes the handler see aborted (nginx drops the upstream request)', async () => {
    const ac = new AbortController()
    const timer = setTimeout(() => ac.abort(), 100)
    const outcome = await fetch(`${nginx.url}/slow`, { signal: ac.signal }).then(
      (res) => `status ${res.status}`,
      (err: Error) => err.name,
    )
    clearTimeout(timer)
    expect(outcome).toBe('AbortError')
    await waitFor(() => app.slow.length > 0, { timeoutMs: 8000, what: 'the /slow handler to return' })
    expect(app.slow[0]!.aborted).toBe(true)
    // Seen well before the handler's own 5 s wait ran out.
    expect(app.slow[0]!.ms).toBeLessThan(4500)
    // Still serving.
    const after = await get(`${nginx.url}/after`)
    expect(after).toEqual({ status: 200, text: 'Hello from /after\n' })
    expect(nginx.errorLogProblems()).toEqual([])
    await uncaught.expectNone()
  })
})

describe('connection reuse', () => {
  it('with fastcgi_keep_conn on, 50 sequential requests reuse a few connections', async () => {
    const app = startApp('unix')
    const nginx = await startNginx({ upstream: app.upstream, keepConn: true, keepalive: 8 })
    for (let i = 0; i < 50; i++) {
      expect(await get(`${nginx.url}/seq/${i}`)).toEqual({ status: 200, text: `Hello from /seq/${i}\n` })
    }
    const stats = app.sock.stats()
    expect(stats.requests).toBe(50)
    expect(stats.acceptedConnections).toBeLessThanOrEqual(3)
    // The kept connection waits, idle, for the next request.
    expect(stats.idleConnections).toBeGreaterThanOrEqual(1)
    expect(nginx.errorLogProblems()).toEqual([])
  })

  it('with fastcgi_keep_conn off, every request has its own connection', async () => {
    const app = startApp('unix')
    const nginx = await startNginx({ upstream: app.upstream, keepConn: false })
    for (let i = 0; i < 50; i++) {
      expect(await get(`${nginx.url}/seq/${i}`)).toEqual({ status: 200, text: `Hello from /seq/${i}\n` })
    }
    expect(app.sock.stats().acceptedConnections).toBe(50)
    expect(nginx.errorLogProblems()).toEqual([])
  })
})
