// Concurrency of the native core: parallel accepts, the seed's threaded accept
// loop, idle kept connections holding no thread, libuv's thread pool left to
// the application, and stdout backpressure.
import { type ChildProcess, spawn } from 'node:child_process'
import crypto from 'node:crypto'
import { once } from 'node:events'
import fs from 'node:fs'
import { fileURLToPath } from 'node:url'
import util from 'node:util'

import { afterEach, describe, expect, it } from 'vitest'

import { Request } from '../../src/index.js'
import {
  defaultParams,
  encodeBeginRequest,
  encodeParams,
  encodeRecord,
  encodeRequest,
  FCGI_STDIN,
  type FcgiConnection,
  type FcgiTarget,
  fcgiRequest,
  parseCgiResponse,
} from '../helpers/fcgi-client.js'
import { serveLoops, TestSession } from '../helpers/session.js'
import { sleep, tmpSocketPath, waitFor, withTimeout } from '../helpers/wait.js'

const pbkdf2 = util.promisify(crypto.pbkdf2)
const THIS_FILE = fileURLToPath(import.meta.url)

// ---------------------------------------------------------------- bookkeeping

const session = new TestSession()
/** The slow clients' processes, SIGKILLed in afterEach if still running. */
const children: ChildProcess[] = []

afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  await session.release()
})

function taskCount(): number {
  return fs.readdirSync('/proc/self/task').length
}

function body(text: string): string {
  return `Content-Type: text/plain\r\n\r\n${text}`
}

async function readAll(req: Request): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of req.stdin) parts.push(c as Buffer)
  return Buffer.concat(parts)
}

/** Soft RLIMIT_NOFILE of this process (Node raises it to the hard limit at start). */
function softFdLimit(): number {
  const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'))
  const soft = line?.split(/\s{2,}/)[1]
  if (soft === undefined) throw new Error(`cannot read "Max open files" from /proc/self/limits: ${String(line)}`)
  return soft === 'unlimited' ? Number.POSITIVE_INFINITY : Number(soft)
}

// ---------------------------------------------------------------------- tests

describe('parallel accepts', () => {
  it('8 pending accepts serve 8 requests at the same time', async () => {
    const path = tmpSocketPath('par8')
    const sock = session.listen(path)
    const N = 8
    let inside = 0
    let maxInside = 0
    const all = session.gate()
    const handlers: Array<Promise<void>> = []
    for (let i = 0; i < N; i++) {
      const req = new Request(sock)
      handlers.push((async () => {
        expect(await req.accept()).toBe(true)
        inside++
        maxInside = Math.max(maxInside, inside)
        if (inside === N) all.open()
        // Wait until every request is inside a handler at once.
        let together = true
        await withTimeout(all.promise, 10000, `${N} requests inside handlers at once`).catch(() => { together = false })
        req.stdout.write(body(`${req.env.REQUEST_URI} together=${together}`))
        inside--
        await req.finish()
      })())
    }
    const results = await Promise.all(Array.from({ length: N }, (_, i) =>
      fcgiRequest({ path }, { params: defaultParams({ REQUEST_URI: `/p/${i}` }), timeoutMs: 20000 })))
    await withTimeout(Promise.all(handlers), 5000, 'the handlers to finish')
    expect(maxInside).toBe(N)
    results.forEach((r, i) => {
      expect(r.protocolStatus).toBe(0)
      expect(parseCgiResponse(r.stdout).body.toString()).toBe(`/p/${i} together=true`)
    })
  })

  it('the seed threaded pattern: 4 accept loops, 200 requests over 20 lanes, no cross-talk', async () => {
    const path = tmpSocketPath('seed4')
    const sock = session.listen(path)
    const perLoop = new Map<number, number>()
    let loopIndex = 0
    const loops: Array<Promise<number>> = []
    for (let i = 0; i < 4; i++) {
      const req = new Request(sock)
      const me = loopIndex++
      loops.push((async () => {
        let n = 0
        while (await req.accept()) {
          const input = await readAll(req)
          // Let the other loops interleave.
          if (n % 3 === 0) await sleep(1)
          else await new Promise((r) => setImmediate(r))
          req.stdout.write(body(`Hello from ${req.env.REQUEST_URI} [${input.toString()}]`))
          await req.finish()
          n++
          perLoop.set(me, n)
        }
        return n
      })())
    }

    const LANES = 20
    const PER_LANE = 10
    const target: FcgiTarget = { path }
    const lane = async (l: number): Promise<string[]> => {
      const got: string[] = []
      const keep = l % 2 === 0
      const conn = keep ? await session.connect(target) : undefined
      for (let j = 0; j < PER_LANE; j++) {
        const uri = `/lane/${l}/req/${j}?q=${l * 100 + j}`
        const stdin = j % 2 === 0 ? `body-${l}-${j}` : ''
        // On a kept connection every request asks to keep it, the last one too.
        const r = await fcgiRequest(target, {
          params: defaultParams({ REQUEST_URI: uri }, stdin || undefined),
          stdin,
          keepConn: keep,
          requestId: keep ? j + 1 : 1,
          connection: conn,
          timeoutMs: 20000,
        })
        expect(r.protocolStatus).toBe(0)
        got.push(parseCgiResponse(r.stdout).body.toString())
        expect(got[j]).toBe(`Hello from ${uri} [${stdin}]`)
      }
      return got
    }
    const lanes = await Promise.all(Array.from({ length: LANES }, (_, l) => lane(l)))
    expect(lanes.flat()).toHaveLength(LANES * PER_LANE)
    expect(sock.stats().requests).toBe(LANES * PER_LANE)
    // 10 kept connections + 100 one-shot ones.
    expect(sock.stats().acceptedConnections).toBe(LANES / 2 + (LANES / 2) * PER_LANE)
    await withTimeout(sock.close(), 10000, 'socket close')
    const served = await withTimeout(Promise.all(loops), 5000, 'the accept loops to end')
    expect(served.reduce((a, b) => a + b, 0)).toBe(LANES * PER_LANE)
    expect(perLoop.size).toBeGreaterThan(0)
  })
})

describe('idle kept connections', () => {
  it('1000 idle FCGI_KEEP_CONN connections hold no thread; new and kept connections are still served', async () => {
    let COUNT = 1000
    const limit = softFdLimit()
    // Each connection costs two descriptors here (client and server side).
    const needed = 2 * COUNT + 200
    if (limit < needed) {
      const possible = Math.floor((limit - 200) / 2)
      // Never test fewer than 1000 without failing.
      expect(possible, `RLIMIT_NOFILE soft limit ${limit} allows only ${possible} connections (needs ${needed} descriptors for 1000)`).toBeGreaterThanOrEqual(1000)
      COUNT = possible
    }

    // Baseline: this process's threads before the server exists (libuv's pool warmed up).
    await fs.promises.readFile(THIS_FILE)
    const baselineThreads = taskCount()

    const path = tmpSocketPath('idle')
    const sock = session.listen(path, { maxConns: COUNT + 64 })
    const LOOPS = 8
    const loops = serveLoops(sock, LOOPS, async (req) => {
      await readAll(req)
      req.stdout.write(body(`ok ${req.env.REQUEST_URI} keep=${req.keepConnection}`))
    })
    void loops.catch(() => {})

    const target: FcgiTarget = { path }
    const conns: FcgiConnection[] = []
    const BATCH = 100
    for (let start = 0; start < COUNT; start += BATCH) {
      const batch = await Promise.all(Array.from({ length: Math.min(BATCH, COUNT - start) }, async (_, k) => {
        const i = start + k
        const conn = await session.connect(target, 10000)
        const r = await fcgiRequest(target, {
          params: defaultParams({ REQUEST_URI: `/idle/${i}` }),
          keepConn: true,
          connection: conn,
          timeoutMs: 20000,
        })
        expect(parseCgiResponse(r.stdout).body.toString()).toBe(`ok /idle/${i} keep=true`)
        return conn
      }))
      conns.push(...batch)
    }
    expect(conns).toHaveLength(COUNT)

    // Every connection is now idle on the server, kept open by its client.
    const stats = await waitFor(() => {
      const s = sock.stats()
      return s.idleConnections === COUNT ? s : undefined
    }, { timeoutMs: 10000, what: `${COUNT} idle connections (last: ${JSON.stringify(sock.stats())})` })
    expect(stats.connections).toBe(COUNT)
    expect(stats.busyConnections).toBe(0)
    expect(stats.threads).toBeLessThanOrEqual(16)
    const threadsNow = taskCount()
    // The poller + at most 16 workers + a small margin for V8/libuv helpers;
    // nowhere near one thread per connection.
    expect(threadsNow, `baseline ${baselineThreads} threads`).toBeLessThanOrEqual(baselineThreads + 1 + 16 + 8)
    expect(threadsNow).toBeLessThan(60)

    // A new connection is served while the 1000 are idle.
    const fresh = await fcgiRequest(target, { params: defaultParams({ REQUEST_URI: '/fresh' }), timeoutMs: 10000 })
    expect(parseCgiResponse(fresh.stdout).body.toString()).toBe('ok /fresh keep=false')

    // So is a second request on one of the idle kept connections.
    const again = await fcgiRequest(target, {
      params: defaultParams({ REQUEST_URI: '/again' }),
      keepConn: true,
      requestId: 2,
      connection: conns[Math.floor(COUNT / 2)],
      timeoutMs: 10000,
    })
    expect(parseCgiResponse(again.stdout).body.toString()).toBe('ok /again keep=true')
    expect(sock.stats().requests).toBe(COUNT + 2)

    // The web server closing its kept connections frees them on our side.
    for (const c of conns) c.destroy()
    await waitFor(() => sock.stats().idleConnections === 0 && sock.stats().connections === 0,
      { timeoutMs: 10000, what: 'idleConnections back to 0 after the clients closed' })
    await withTimeout(sock.close(), 10000, 'socket close')
    const served = await withTimeout(loops, 5000, 'the accept loops to end')
    expect(served.reduce((a, b) => a + b, 0)).toBe(COUNT + 2)
  }, 60000)
})

describe("libuv's thread pool is left to the application", () => {
  it('256 pending accepts do not block fs and crypto in a handler', async () => {
    const path = tmpSocketPath('uvpool')
    const sock = session.listen(path)
    const expected = fs.readFileSync(THIS_FILE)
    const expectedKey = crypto.pbkdf2Sync('secret', 'salt', 1000, 32, 'sha256').toString('hex')
    const accepted: Array<Promise<boolean>> = []
    for (let i = 0; i < 256; i++) {
      const req = new Request(sock)
      accepted.push(req.accept().then(async (ok) => {
        if (!ok) return false
        const file = await fs.promises.readFile(THIS_FILE)
        const key = await pbkdf2('secret', 'salt', 1000, 32, 'sha256')
        req.stdout.write(body(`${file.length} ${file.equals(expected)} ${key.toString('hex')}`))
        await req.finish()
        return true
      }))
    }
    // Give the 256 accepts time to be pending everywhere they could be.
    await sleep(100)
    const r = await fcgiRequest({ path }, { params: defaultParams({ REQUEST_URI: '/fs' }), timeoutMs: 10000 })
    expect(parseCgiResponse(r.stdout).body.toString()).toBe(`${expected.length} true ${expectedKey}`)
    await withTimeout(sock.close(), 10000, 'socket close')
    const outcomes = await withTimeout(Promise.all(accepted), 5000, 'the 255 other accepts to resolve false')
    expect(outcomes.filter(Boolean)).toHaveLength(1)
  })

  it('64 slow uploads held open do not stall fs.promises.readFile in another handler', async () => {
    const path = tmpSocketPath('slowup')
    const sock = session.listen(path)
    const UPLOADS = 64
    const expected = fs.readFileSync(THIS_FILE)
    let uploadsInside = 0
    const loops = serveLoops(sock, UPLOADS + 4, async (req) => {
      if (req.env.REQUEST_URI === '/read') {
        const file = await fs.promises.readFile(THIS_FILE)
        req.stdout.write(body(`read ${file.equals(expected)}`))
        return
      }
      uploadsInside++
      const input = await readAll(req)
      req.stdout.write(body(`${req.env.REQUEST_URI} got ${input.length} ${input.toString().startsWith('chunk')}`))
    })
    void loops.catch(() => {})

    // Clients sending their body a few bytes at a time, in whole records.
    let stop = false
    const uploads = Array.from({ length: UPLOADS }, async (_, i) => {
      const conn = await session.connect({ path }, 10000)
      await conn.write(Buffer.concat([encodeBeginRequest(1), encodeParams(1, defaultParams({ REQUEST_URI: `/up/${i}` }))]))
      let sent = 0
      while (!stop) {
        const piece = Buffer.from(`chunk${i % 10}`)
        await conn.write(encodeRecord(FCGI_STDIN, 1, piece))
        sent += piece.length
        await sleep(50 + (i % 7) * 10)
      }
      await conn.write(encodeRecord(FCGI_STDIN, 1))
      const r = await conn.readUntilEnd(1, 20000)
      return { i, sent, body: parseCgiResponse(r.stdout).body.toString() }
    })
    await waitFor(() => uploadsInside === UPLOADS, { timeoutMs: 15000, what: `${UPLOADS} uploads inside handlers` })
    await sleep(200)

    const r = await fcgiRequest({ path }, { params: defaultParams({ REQUEST_URI: '/read' }), timeoutMs: 10000 })
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('read true')
    // Still all in progress: the read did not wait for the uploads.
    expect(sock.stats().busyConnections).toBeGreaterThanOrEqual(UPLOADS)

    stop = true
    const done = await withTimeout(Promise.all(uploads), 20000, 'the uploads to complete')
    for (const d of done) expect(d.body).toBe(`/up/${d.i} got ${d.sent} true`)
  })
})

// A FastCGI client in its own process (so that its receive buffers do not
// count in this process's RSS): sends one request, reads nothing until told
// "go" on stdin, then reads slowly (pausing now and then), hashes the body
// after the CGI headers and prints {bytes, hash, appStatus} at END_REQUEST.
const SLOW_CLIENT = `
const net = require('node:net'), crypto = require('node:crypto')
const [path, request] = process.argv.slice(1)
const s = net.connect(path)
s.pause()
s.on('connect', () => s.write(Buffer.from(request, 'base64'), () => process.stdout.write('sent\\n')))
s.on('error', (e) => { process.stdout.write(JSON.stringify({ error: e.message }) + '\\n'); process.exit(2) })
s.on('close', () => { process.stdout.write(JSON.stringify({ error: 'closed before END_REQUEST', bytes }) + '\\n'); process.exit(3) })
let buf = Buffer.alloc(0), head = Buffer.alloc(0), headerEnd = -1, bytes = 0
const hash = crypto.createHash('sha256')
s.on('data', (c) => {
  buf = buf.length ? Buffer.concat([buf, c]) : c
  while (buf.length >= 8) {
    const len = buf.readUInt16BE(4), total = 8 + len + buf[6]
    if (buf.length < total) break
    const type = buf[1]
    let content = buf.subarray(8, 8 + len)
    buf = buf.subarray(total)
    if (type === 6) {
      if (headerEnd < 0) {
        head = Buffer.concat([head, content])
        const at = head.indexOf('\\r\\n\\r\\n')
        if (at < 0) continue
        headerEnd = at + 4
        content = head.subarray(headerEnd)
      }
      hash.update(content)
      bytes += content.length
    } else if (type === 3) {
      process.stdout.write(JSON.stringify({ bytes, hash: hash.digest('hex'), appStatus: content.readUInt32BE(0) }) + '\\n')
      process.exit(0)
    }
  }
})
process.stdin.on('data', (d) => {
  if (!String(d).includes('go')) return
  s.resume()
  setInterval(() => { s.pause(); setTimeout(() => s.resume(), 10) }, 40).unref()
})
`

interface SlowClientResult { bytes: number; hash: string; appStatus: number; error?: string }

function slowClient(path: string, uri: string): { sent: Promise<void>; go: () => void; done: Promise<SlowClientResult> } {
  const request = encodeRequest({ params: defaultParams({ REQUEST_URI: uri }), requestId: 1 }).toString('base64')
  const child = spawn(process.execPath, ['-e', SLOW_CLIENT, path, request], { stdio: ['pipe', 'pipe', 'pipe'] })
  children.push(child)
  let out = ''
  let err = ''
  let sentResolve!: () => void
  const sent = new Promise<void>((resolve) => { sentResolve = resolve })
  const done = new Promise<SlowClientResult>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('sent\n')) sentResolve()
      const line = out.split('\n').find((l) => l.startsWith('{'))
      if (line) resolve(JSON.parse(line) as SlowClientResult)
    })
    child.stderr.on('data', (d: Buffer) => { err += d.toString() })
    child.on('exit', (code) => reject(new Error(`slow client exited (${code}) without a result; stdout ${out} stderr ${err}`)))
  })
  done.catch(() => {})
  return { sent, go: () => child.stdin.write('go\n'), done }
}

describe('backpressure', () => {
  it('64 MiB to a slow reader: write() returns false, drain is awaited, memory stays bounded, bytes exact', async () => {
    const path = tmpSocketPath('bp')
    const sock = session.listen(path)
    const CHUNK = 64 * 1024
    const TOTAL = 64 * 1024 * 1024
    const patterns = Array.from({ length: 16 }, (_, i) => {
      const b = Buffer.alloc(CHUNK)
      for (let k = 0; k < CHUNK; k++) b[k] = (k * 31 + i * 7) & 0xff
      return b
    })
    const expectedHash = crypto.createHash('sha256')
    for (let i = 0; i < TOTAL / CHUNK; i++) expectedHash.update(patterns[i % 16]!)
    const expectedDigest = expectedHash.digest('hex')

    let falses = 0
    let drains = 0
    const req = new Request(sock)
    const handler = (async () => {
      expect(await req.accept()).toBe(true)
      req.stdout.write('Content-Type: application/octet-stream\r\n\r\n')
      for (let i = 0; i < TOTAL / CHUNK; i++) {
        if (!req.stdout.write(patterns[i % 16]!)) {
          falses++
          await withTimeout(once(req.stdout, 'drain'), 20000, "stdout 'drain'")
          drains++
        }
      }
      await req.finish()
    })()
    handler.catch(() => {})

    // Settle, then measure this process (the server side only).
    await sleep(50)
    const rssBefore = process.memoryUsage().rss
    let rssMax = rssBefore
    const sampler = setInterval(() => { rssMax = Math.max(rssMax, process.memoryUsage().rss) }, 20)
    try {
      const client = slowClient(path, '/big')
      await withTimeout(client.sent, 10000, 'the slow client to send its request')
      // It reads nothing for now: everything must back up to the handler.
      await waitFor(() => falses > 0, { timeoutMs: 10000, what: 'stdout.write() to return false' })
      await sleep(1000)
      expect(drains).toBeLessThan(falses)
      const stalledAt = falses
      await sleep(300)
      expect(falses).toBe(stalledAt) // the handler is waiting for 'drain', not writing on
      client.go()
      const res = await withTimeout(client.done, 40000, 'the 64 MiB body')
      await withTimeout(handler, 5000, 'the handler to finish')
      expect(res.error).toBeUndefined()
      expect(res.bytes).toBe(TOTAL)
      expect(res.hash).toBe(expectedDigest)
      expect(res.appStatus).toBe(0)
    } finally {
      clearInterval(sampler)
    }
    expect(drains).toBe(falses)
    expect(drains).toBeGreaterThan(0)
    const growth = rssMax - rssBefore
    expect(growth, `RSS grew by ${(growth / 1048576).toFixed(1)} MiB while writing 64 MiB`).toBeLessThan(32 * 1024 * 1024)
  }, 60000)
})
