// Fault injection against the server in a child process
// (scripts/fuzz-target.mjs through test/helpers/fault-target.ts): the web
// server closing at every stage, stalling mid-record, reading slowly or not
// at all, 10,000 connections at once, descriptors running out, handlers that
// throw, never end or end twice. Each test checks that the process keeps
// serving, that the requests of other connections in flight meanwhile
// (bystanders) all complete exactly, and that descriptors, threads and
// memory return to their idle values.
import { randomBytes } from 'node:crypto'
import net from 'node:net'

import { afterEach, describe, expect, it } from 'vitest'

import { encodeAbort, encodeGetValues, encodeRecord, FCGI_PARAMS, FcgiConnection } from '../helpers/fcgi-client.js'
import { buildRequest, cgiBody, exchange, FaultTarget, pattern, startBystanders } from '../helpers/fault-target.js'
import { assertDistFresh } from '../lifecycle/child.js'
import { sleep, waitFor, withTimeout } from '../helpers/wait.js'

const targets: FaultTarget[] = []
const sockets: net.Socket[] = []
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy()
  await Promise.all(targets.splice(0).map((t) => t.stop()))
})

async function start(kind: 'loop' | 'http', opts: Parameters<typeof FaultTarget.start>[1] = {}): Promise<FaultTarget> {
  assertDistFresh()
  const t = await FaultTarget.start(kind, opts)
  targets.push(t)
  return t
}

/** A raw client socket (closed after the test), connected. */
async function rawConnect(path: string): Promise<net.Socket> {
  const s = net.connect(path)
  sockets.push(s)
  s.on('error', () => {})
  await withTimeout(new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('error', reject) }), 5000, 'connect')
  return s
}

const MiB = 1 << 20

describe.each(['loop', 'http'] as const)('%s: the web server closes the connection', (kind) => {
  it('before, during and after params, stdin and stdout: 8 connections per point, the rest keeps being served', async () => {
    const t = await start(kind)
    const base = await t.baseline()
    const by = startBystanders(t, 4)
    const body = Buffer.alloc(40000, 7)
    // Each point: what the client sends, then what it waits for before it closes.
    const points: Array<[string, (s: net.Socket) => Promise<void>]> = [
      ['after BEGIN_REQUEST', async (s) => { s.write(buildRequest().head.subarray(0, 16)) }],
      ['in a PARAMS record', async (s) => { s.write(buildRequest().head.subarray(0, 40)) }],
      ['in a PARAMS record header', async (s) => {
        const r = buildRequest()
        s.write(Buffer.concat([r.head.subarray(0, 16), encodeRecord(FCGI_PARAMS, 1, 'x').subarray(0, 5)]))
      }],
      ['after the params', async (s) => { s.write(buildRequest({ stdin: body }).head) }],
      ['in a STDIN record', async (s) => {
        const r = buildRequest({ stdin: body })
        s.write(r.bytes.subarray(0, r.head.length + 8 + 1000))
      }],
      ['in a STDIN record header', async (s) => {
        const r = buildRequest({ stdin: body })
        s.write(r.bytes.subarray(0, r.head.length + 3))
      }],
      ['after stdin, the handler running', async (s) => {
        s.write(buildRequest({ stdin: body, fuzz: { DELAY: '400' } }).bytes)
        await sleep(100)
      }],
      ['during stdout (8 MiB streamed)', async (s) => {
        s.write(buildRequest({ fuzz: { STREAM: String(8 * MiB) } }).bytes)
        let got = 0
        await withTimeout(new Promise<void>((resolve) => s.on('data', (d: Buffer) => { got += d.length; if (got > 200000) resolve() })), 10000, 'part of stdout')
      }],
      ['after stdout, on a kept connection', async (s) => {
        const r = buildRequest({ keep: true })
        s.write(r.bytes)
        let got = Buffer.alloc(0)
        await withTimeout(new Promise<void>((resolve) => s.on('data', (d: Buffer) => {
          got = Buffer.concat([got, d])
          if (got.includes(r.token)) resolve()
        })), 10000, 'the response')
        await sleep(20)
      }],
      ['after stdout, with an abort', async (s) => {
        const r = buildRequest({ keep: true, fuzz: { DELAY: '200' } })
        s.write(r.bytes)
        await sleep(50)
        s.write(encodeAbort(1))
        await sleep(50)
      }],
    ]
    for (const [what, act] of points) {
      await Promise.all(Array.from({ length: 8 }, async (_, i) => {
        const s = await rawConnect(t.path)
        await act(s)
        // half of them close gracefully (FIN), half reset
        if (i % 2 === 0) s.end()
        else s.destroy()
      })).catch((err: Error) => { throw new Error(`${what}: ${err.message}`) })
      expect(t.alive, `alive after "${what}"`).toBe(true)
    }
    await exchange(t, { stdin: body })
    expect(await by.stop()).toEqual([])
    expect(by.completed).toBeGreaterThan(10)
    for (const s of sockets.splice(0)) s.destroy()
    await t.expectIdle(base, { rssGrowth: 64 * MiB })
  }, 90_000)
})

/** Connections that stall: 1/3 mid-PARAMS, 1/3 inside a STDIN record header, 1/3 inside STDIN content. */
async function stall(path: string, n: number): Promise<net.Socket[]> {
  const body = Buffer.alloc(30000, 1)
  const out: net.Socket[] = []
  for (let i = 0; i < n; i++) {
    const s = await rawConnect(path)
    s.resume()  // read what comes, so that the end of the stream is seen
    const r = buildRequest({ stdin: body })
    if (i % 3 === 0) s.write(r.head.subarray(0, 40))
    else if (i % 3 === 1) s.write(r.bytes.subarray(0, r.head.length + 3))
    else s.write(r.bytes.subarray(0, r.head.length + 8 + 5000))
    out.push(s)
  }
  return out
}

describe('stalls', () => {
  // A peer that stops in the middle of a record holds no thread: the request
  // head waits in the poller until it has all arrived, and a read of the
  // input waits there until libfcgi will find all it needs (a whole record
  // header, a skipped record, a padding). readTimeout ends each stall: a
  // stalled head is dropped, a stalled read fails and its request is
  // aborted. See docs/limits.md.
  it.each(['loop', 'http'] as const)('%s: peers that stall mid-PARAMS, inside a STDIN header, inside STDIN content: no thread held, every other request completes, each stalled peer dropped after readTimeout', async (kind) => {
    const t = await start(kind, { env: { FUZZ_MAX_THREADS: '16', FUZZ_READ_TIMEOUT: '1500' } })
    const base = await t.baseline()
    const by = startBystanders(t, 4)
    await sleep(200)
    const before = await t.stats()
    const stalled = await stall(t.path, 12)
    const closed = stalled.map((s) => new Promise<void>((resolve) => s.on('close', () => resolve())))
    const t0 = Date.now()
    await sleep(500)
    // The stalled peers' bytes have been looked at, nothing more: no worker
    // was started for them (the bystanders' requests need none either).
    const during = await t.stats()
    expect(during.stats!.threads, 'native threads while 12 peers stall').toBe(before.stats!.threads)
    await exchange(t, {}, undefined, 5000)
    // The bystanders have shown that the rest is served during the stall.
    expect(await by.stop()).toEqual([])
    console.log(`bystander requests served while 12 peers stall: ${by.completed}; slowest answer: ${by.slowest} ms`)
    expect(by.completed).toBeGreaterThan(10)
    await withTimeout(Promise.all(closed), 15000, 'every stalled connection to be dropped')
    const dropped = Date.now() - t0
    console.log(`12 stalled peers dropped within ${dropped} ms (readTimeout 1500 ms)`)
    expect(dropped).toBeGreaterThanOrEqual(1400)
    const after = await t.stats()
    // 4 heads dropped (counted as dropped requests too), 8 reads timed out
    expect(after.stats!.readTimeouts - before.stats!.readTimeouts).toBe(12)
    expect(after.stats!.droppedRequests - before.stats!.droppedRequests).toBe(4)
    await t.expectIdle(base, { rssGrowth: 64 * MiB })
  }, 60_000)

  it.each(['loop', 'http'] as const)('%s: a request that arrives a few bytes at a time (head, record headers, body) is answered exactly, beside a management record', async (kind) => {
    const t = await start(kind)
    const base = await t.baseline()
    for (const size of [0, 1, 3000]) {
      const c = await FcgiConnection.connect({ path: t.path }, 5000)
      try {
        const req = buildRequest({ stdin: randomBytes(size) })
        // FCGI_GET_VALUES between the params and the body's records: libfcgi
        // answers it during the first read of the body, once it is whole.
        const cut = req.head.length
        const bytes = Buffer.concat([req.bytes.subarray(0, cut), encodeGetValues(['FCGI_MAX_CONNS']), req.bytes.subarray(cut)])
        for (let at = 0; at < bytes.length; at += 7) {
          await c.write(bytes.subarray(at, at + 7))
          await sleep(1)
        }
        const res = await c.readUntilEnd(req.id, 15000)
        expect(res.protocolStatus).toBe(0)
        expect(cgiBody(res.stdout)).toBe(req.body)
      } finally {
        c.destroy()
      }
    }
    expect((await t.stats()).stats!.readTimeouts).toBe(0)
    await t.expectIdle(base, { rssGrowth: 64 * MiB })
  }, 60_000)

  it('more stalled peers than worker threads: a new request does not wait for readTimeout', async () => {
    const t = await start('loop', { env: { FUZZ_MAX_THREADS: '4', FUZZ_READ_TIMEOUT: '20000' } })
    const base = await t.baseline()
    const by = startBystanders(t, 2)
    await sleep(100)
    const stalled = await stall(t.path, 12)
    await sleep(200)
    const t0 = Date.now()
    await exchange(t, { stdin: randomBytes(100000) }, undefined, 10000)
    const waited = Date.now() - t0
    console.log(`a request behind 12 stalled peers with maxThreads 4 (readTimeout 20 s) waited ${waited} ms`)
    // Before the poller kept stalled peers, each of 8 of them held one of the
    // 4 threads until readTimeout: the request waited 20 s or more.
    expect(waited).toBeLessThan(10000)
    expect(await by.stop()).toEqual([])
    for (const s of stalled) s.destroy()
    await t.expectIdle(base, { rssGrowth: 64 * MiB })
  }, 60_000)
})

describe.each(['loop', 'http'] as const)('%s: web servers that read slowly or not at all', (kind) => {
  it('4 peers that never read a 64 MiB response: the writes wait (RSS stays flat), the rest is served; a slow reader gets every byte', async () => {
    const t = await start(kind)
    const base = await t.baseline()
    const stuck: net.Socket[] = []
    for (let i = 0; i < 4; i++) {
      const s = await rawConnect(t.path)
      s.pause()
      s.write(buildRequest({ fuzz: { STREAM: String(64 * MiB) } }).bytes)
      stuck.push(s)
    }
    // Measured before the bystanders start: their garbage would blur it.
    await sleep(1000)
    const during = await t.stats()
    expect(during.running, 'handlers waiting for drain').toBeGreaterThanOrEqual(4)
    await sleep(1000)
    const later = await t.stats()
    console.log(`${kind}: RSS growth with 4 peers not reading: ${((during.rss - base.rss) / MiB).toFixed(1)} MiB after 1 s, ${((later.rss - base.rss) / MiB).toFixed(1)} MiB after 2 s`)
    // 4 x 64 MiB buffered would be 256 MiB: what is held stays small, and
    // does not grow while the peers keep not reading.
    expect(later.rss - base.rss, 'RSS growth with 4 peers not reading (bytes)').toBeLessThan(32 * MiB)
    expect(later.rss - during.rss, 'RSS growth from 1 s to 2 s (bytes)').toBeLessThan(8 * MiB)
    const by = startBystanders(t, 4)

    // A slow reader: 4 MiB read in pauses, every byte checked.
    const conn = await FcgiConnection.connect({ path: t.path })
    const r = buildRequest({ fuzz: { STREAM: String(4 * MiB) } })
    void conn.write(r.bytes)
    const reading = (async () => {
      for (let i = 0; i < 20; i++) {
        conn.socket.pause()
        await sleep(30)
        conn.socket.resume()
        await sleep(5)
      }
    })()
    const res = await conn.readUntilEnd(r.id, 30000)
    await reading
    conn.destroy()
    const got = cgiBody(res.stdout)
    expect(got.length).toBe(r.body.length + 4 * MiB)
    expect(got.slice(0, r.body.length)).toBe(r.body)
    expect(got.slice(r.body.length) === pattern(r.token, 0, 4 * MiB)).toBe(true)

    expect(t.alive).toBe(true)
    for (const s of stuck) s.destroy()
    expect(await by.stop()).toEqual([])
    // The slow reader's 4 MiB and the bystanders leave garbage V8 keeps a while.
    await t.expectIdle(base, { rssGrowth: 96 * MiB })
  }, 60_000)
})

/** `n` connections opened at once, each with one valid request; resolves with the failures (connects retried on EAGAIN). */
async function burst(path: string, n: number, timeoutMs: number): Promise<{ failures: string[]; retries: number }> {
  const failures: string[] = []
  let retries = 0
  const deadline = Date.now() + timeoutMs
  await Promise.all(Array.from({ length: n }, async (_, i) => {
    const r = buildRequest({ stdin: Buffer.from(`body ${i}`) })
    for (;;) {
      const s = net.connect(path)
      const outcome = await new Promise<string>((resolve) => {
        let got = Buffer.alloc(0)
        s.on('connect', () => s.write(r.bytes))
        s.on('data', (d: Buffer) => { got = Buffer.concat([got, d]) })
        s.on('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code}`))
        s.on('close', () => resolve(got.includes(Buffer.from(r.body)) ? 'ok' : `closed with ${got.length} bytes`))
        setTimeout(() => resolve('timeout'), Math.max(1, deadline - Date.now()))
      })
      s.destroy()
      if (outcome === 'ok') return
      if (outcome === 'error EAGAIN' && Date.now() < deadline) {
        // the listen backlog is full: what a web server sees too; try again
        retries++
        await sleep(10 + Math.floor(Math.random() * 40))
        continue
      }
      failures.push(`${i}: ${outcome}`)
      return
    }
  }))
  return { failures, retries }
}

describe('many connections', () => {
  it('10,000 connections at once, one request each: every one answered exactly', async () => {
    const t = await start('loop', { parallel: 64 })
    const base = await t.baseline()
    const { failures, retries } = await burst(t.path, 10_000, 90_000)
    expect(failures.slice(0, 10)).toEqual([])
    expect(t.alive).toBe(true)
    console.log(`10,000 connections: ${retries} connects retried (EAGAIN, backlog full)`)
    await exchange(t)
    await t.expectIdle(base, { timeoutMs: 15000, rssGrowth: 128 * MiB })
  }, 150_000)

  it('descriptors run out (ulimit -n 256, 1,500 connections at once): EMFILE is survived, every request is answered', async () => {
    const t = await start('loop', { fdLimit: 256, parallel: 32 })
    const base = await t.baseline()
    const { failures } = await burst(t.path, 1500, 60_000)
    expect(failures.slice(0, 10)).toEqual([])
    expect(t.alive).toBe(true)
    await exchange(t)
    await t.expectIdle(base, { timeoutMs: 15000, rssGrowth: 64 * MiB })
  }, 120_000)
})

describe('handlers that misbehave', () => {
  it('createServer: handlers that throw, reject, never end or end twice; the others are served', async () => {
    const t = await start('http')
    const base = await t.baseline()
    const by = startBystanders(t, 4)
    const one = async (fault: string): Promise<string> => {
      const conn = await FcgiConnection.connect({ path: t.path })
      try {
        const r = buildRequest({ keep: true, params: { HTTP_X_FUZZ_FAULT: fault }, fuzz: fault === 'twice' ? { FAULT: 'twice' } : {} })
        void conn.write(r.bytes)
        if (fault === 'never') {
          await sleep(300)
          void conn.write(encodeAbort(r.id))
          // the aborted request ends: FCGI_END_REQUEST (or the connection closes)
          await waitFor(() => conn.closed || conn.pending.some((x) => x.type === 3), { timeoutMs: 5000, what: 'the end of an aborted never-ending handler' })
          return 'ended'
        }
        const res = await conn.readUntilEnd(r.id, 10000)
        const out = res.stdout.toString('latin1')
        if (fault === 'twice') return cgiBody(res.stdout) === r.body ? 'exact' : `wrong: ${out.slice(0, 200)}`
        return /^Status: (\d+)/m.exec(out)?.[1] ?? `no status: ${out.slice(0, 200)}`
      } finally {
        conn.destroy()
      }
    }
    const faults = ['throw', 'reject', 'twice', 'never']
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => one(faults[i % 4]!)))
    for (let i = 0; i < 40; i++) {
      const want = { throw: '500', reject: '500', twice: 'exact', never: 'ended' }[faults[i % 4]!]
      expect(`${faults[i % 4]}: ${results[i]}`).toBe(`${faults[i % 4]}: ${want}`)
    }
    // Never-ending handlers whose web server simply closes the connection.
    await Promise.all(Array.from({ length: 10 }, async () => {
      const s = await rawConnect(t.path)
      s.write(buildRequest({ params: { HTTP_X_FUZZ_FAULT: 'never' } }).bytes)
      await sleep(200)
      s.destroy()
    }))
    expect((await t.stats()).requestErrors).toBe(20)
    expect(await by.stop()).toEqual([])
    await exchange(t)
    await t.expectIdle(base, { rssGrowth: 64 * MiB })
  }, 60_000)

  it('accept loop: finish() twice after every request, the loop goes on', async () => {
    const t = await start('loop')
    const base = await t.baseline()
    const by = startBystanders(t, 2)
    await Promise.all(Array.from({ length: 40 }, (_, i) => exchange(t, { fuzz: { FAULT: 'twice' }, stdin: Buffer.alloc(i * 100, 3) })))
    expect(await by.stop()).toEqual([])
    await t.expectIdle(base, { rssGrowth: 64 * MiB })
  }, 60_000)
})

