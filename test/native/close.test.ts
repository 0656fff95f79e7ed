// FcgiSocket.close() is graceful towards the web server: what it has already
// sent, or sends on a connection it has just opened, is still answered; only
// connections it has used and keeps idle are closed (a web server retries a
// request that fails on such a connection, not on a new one). This is what a
// worker that is being replaced must do for a reload without failed requests.
import { afterEach, describe, expect, it } from 'vitest'

import { defaultParams, encodeRequest, type FcgiConnection } from '../helpers/fcgi-client.js'
import { TestSession } from '../helpers/session.js'
import { trackUncaught } from '../helpers/uncaught.js'
import { sleep, tmpSocketPath, waitFor, withTimeout } from '../helpers/wait.js'
import type { FcgiSocket, Request } from '../../src/index.js'

const session = new TestSession()
afterEach(() => session.release())
const uncaught = trackUncaught()

function send(conn: FcgiConnection, id: number, uri: string): void {
  void conn.write(encodeRequest({ requestId: id, keepConn: true, params: defaultParams({ REQUEST_URI: uri }) }))
}

/**
 * n accept loops answering "ok <uri>", each first awaiting `hold(uri)` if
 * given; resolves with the requests served once accept() says closed.
 */
function serve(sock: FcgiSocket, n: number, hold?: Promise<void> | ((uri: string) => Promise<void> | undefined)): { served: Promise<number>; reqs: Request[] } {
  const reqs = Array.from({ length: n }, () => session.request(sock))
  const served = Promise.all(reqs.map(async (req) => {
    let count = 0
    while (await req.accept()) {
      await (typeof hold === 'function' ? hold(req.getParam('REQUEST_URI') ?? '') : hold)
      req.stdout.write(`ok ${req.getParam('REQUEST_URI')}`)
      await req.finish()
      count++
    }
    return count
  })).then((counts) => counts.reduce((a, b) => a + b, 0))
  return { served, reqs }
}

describe('close() is graceful towards the web server', () => {
  it('closes idle connections the web server has used; the requests in flight finish', async () => {
    const path = tmpSocketPath('close')
    const sock = session.listen(path)
    const slow = session.gate()
    const { served } = serve(sock, 2, (uri) => (uri === '/in-flight' ? slow.promise : undefined))
    const kept = await session.connect({ path })
    send(kept, 1, '/kept')
    expect((await kept.readUntilEnd(1)).stdout.toString()).toBe('ok /kept')
    await waitFor(() => sock.stats().idleConnections === 1, { timeoutMs: 5000, what: 'the kept connection to be idle' })

    const busy = await session.connect({ path })
    send(busy, 1, '/in-flight')
    await waitFor(() => sock.stats().busyConnections === 1, { timeoutMs: 5000, what: 'the request to be in flight' })
    const closed = sock.close()
    expect(await kept.waitClosed(5000)).toBe(true)  // used and idle: closed at once
    slow.open()
    expect((await busy.readUntilEnd(1)).stdout.toString()).toBe('ok /in-flight')
    await withTimeout(closed, 5000, 'close()')
    expect(await served).toBe(2)
    await uncaught.expectNone(20)
  })

  it('answers a request that arrives on a connection opened before close() but not used yet', async () => {
    const path = tmpSocketPath('close')
    const sock = session.listen(path)
    const { served } = serve(sock, 2)
    const fresh = await session.connect({ path })
    await waitFor(() => sock.stats().connections === 1, { timeoutMs: 5000, what: 'the connection to be accepted' })
    const closed = sock.close()
    await sleep(200)
    send(fresh, 1, '/late')
    const res = await fresh.readUntilEnd(1)
    expect(res.stdout.toString()).toBe('ok /late')
    // Answered, then closed (a closing server keeps no connection).
    expect(await fresh.waitClosed(5000)).toBe(true)
    await withTimeout(closed, 5000, 'close()')
    expect(await served).toBe(1)
    await uncaught.expectNone(20)
  })

  it('answers requests that were waiting for a free slot when close() was called', async () => {
    const path = tmpSocketPath('close')
    const sock = session.listen(path)
    const gate = session.gate()
    const { served } = serve(sock, 1, gate.promise)  // one slot: the others wait
    const conns = await Promise.all([0, 1, 2].map(() => session.connect({ path })))
    conns.forEach((c, i) => send(c, 1, `/queued/${i}`))
    await waitFor(() => sock.stats().busyConnections === 1 && sock.stats().connections === 3, { timeoutMs: 5000, what: 'one request in flight, two waiting' })
    const closed = sock.close()
    gate.open()
    const bodies = await Promise.all(conns.map(async (c) => (await c.readUntilEnd(1)).stdout.toString()))
    expect(bodies.sort()).toEqual(['ok /queued/0', 'ok /queued/1', 'ok /queued/2'])
    await withTimeout(closed, 5000, 'close()')
    expect(await served).toBe(3)
    await uncaught.expectNone(20)
  })

  it('a connection that never brings a request is closed after a bounded wait; close() then resolves', async () => {
    const path = tmpSocketPath('close')
    const sock = session.listen(path)
    const { served } = serve(sock, 1)
    const silent = await session.connect({ path })
    await waitFor(() => sock.stats().connections === 1, { timeoutMs: 5000, what: 'the connection to be accepted' })
    const started = Date.now()
    await withTimeout(sock.close(), 8000, 'close()')
    expect(Date.now() - started).toBeGreaterThanOrEqual(1500)
    expect(await silent.waitClosed(2000)).toBe(true)
    expect(await served).toBe(0)
    // New connections are refused once closed.
    await expect(session.connect({ path }, 1000)).rejects.toThrow()
    await uncaught.expectNone(20)
  })

  it('without pending work, close() ends the pending accepts at once', async () => {
    const path = tmpSocketPath('close')
    const sock = session.listen(path)
    const { served } = serve(sock, 3)
    await sleep(20)
    const started = Date.now()
    await withTimeout(sock.close(), 5000, 'close()')
    expect(Date.now() - started).toBeLessThan(1000)
    expect(await served).toBe(0)
  })
})

describe('idleTimeout', () => {
  it('closes a kept connection idle for idleTimeout, used or never used; a busy one (its request running) stays', async () => {
    const path = tmpSocketPath('idle')
    const sock = session.listen({ path }, { idleTimeout: 300 })
    const gate = session.gate()
    serve(sock, 2, (uri) => (uri === '/slow' ? gate.promise : undefined))
    const used = await session.connect({ path })
    const fresh = await session.connect({ path })
    const busy = await session.connect({ path })
    send(used, 1, '/fast')
    await used.readUntilEnd(1, 5000)
    send(busy, 1, '/slow')
    await waitFor(() => sock.stats().busyConnections === 1, { timeoutMs: 5000, what: 'the slow request to run' })
    expect(await used.waitClosed(3000)).toBe(true)
    expect(await fresh.waitClosed(3000)).toBe(true)
    expect(busy.closed).toBe(false)
    expect(sock.stats().idleTimeouts).toBe(2)
    // The long request completes, then its connection idles out in turn.
    gate.open()
    const r = await busy.readUntilEnd(1, 5000)
    expect(r.stdout.toString()).toBe('ok /slow')
    expect(await busy.waitClosed(3000)).toBe(true)
    expect(uncaught.errors).toEqual([])
  })

  it('0 disables it; a bad value is refused (ERR_OUT_OF_RANGE)', async () => {
    const path = tmpSocketPath('idle0')
    const sock = session.listen({ path }, { idleTimeout: 0 })
    serve(sock, 1)
    const conn = await session.connect({ path })
    send(conn, 1, '/a')
    await conn.readUntilEnd(1, 5000)
    await sleep(1200)
    expect(conn.closed).toBe(false)
    expect(sock.stats().idleTimeouts).toBe(0)
    for (const bad of [-1, 1.5, '5']) {
      expect(() => session.listen({ path: tmpSocketPath('idlebad') }, { idleTimeout: bad as number })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }))
    }
  })
})

describe('the connection limit', () => {
  it("maxConns reached: 'warning' (ERR_FASTCGI_MAX_CONNS) and stats; the connection waiting in the backlog is served once one closes", async () => {
    const path = tmpSocketPath('maxconns')
    const sock = session.listen({ path }, { maxConns: 2 })
    const warnings: Array<Error & { code?: string }> = []
    sock.on('warning', (err: Error) => warnings.push(err))
    serve(sock, 2)
    const a = await session.connect({ path })
    const b = await session.connect({ path })
    await waitFor(() => sock.stats().connections === 2, { timeoutMs: 5000, what: 'two connections' })
    const c = await session.connect({ path })  // in the backlog: the socket accepts no more
    await waitFor(() => warnings.length === 1, { timeoutMs: 5000, what: 'the warning' })
    expect(warnings[0]!.code).toBe('ERR_FASTCGI_MAX_CONNS')
    expect(warnings[0]!.message).toMatch(/^2 connections are open, the limit/)
    expect(sock.stats().maxConnsReached).toBe(1)
    send(c, 1, '/third')
    await sleep(200)
    expect(sock.stats().connections).toBe(2)
    a.destroy()
    const r = await c.readUntilEnd(1, 5000)
    expect(r.stdout.toString()).toBe('ok /third')
    b.destroy()
    expect(uncaught.errors).toEqual([])
  })
})
