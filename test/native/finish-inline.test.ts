// The short paths of a small request: its accept runs on the poller when the
// whole head (BEGIN_REQUEST + params) has arrived, and a small response whose
// request has nothing else in flight is sent from the JS thread (one sendmsg,
// no thread hop). These tests pin what the web server sees on those paths (the
// records, in order, nothing after FCGI_END_REQUEST, the kept connection
// reusable) and the fallbacks: a head still in transit, a management record
// first, big params, a peer whose socket buffer is full.
import { afterEach, describe, expect, it } from 'vitest'

import { type FcgiSocket, Request } from '../../src/index.js'
import {
  defaultParams,
  encodeBeginRequest,
  encodeGetValues,
  encodeParams,
  encodeRecord,
  encodeRequest,
  FCGI_GET_VALUES_RESULT,
  FCGI_PARAMS,
  FCGI_STDIN,
  FCGI_END_REQUEST,
  FCGI_STDERR,
  FCGI_STDOUT,
  type FcgiConnection,
  type FcgiTarget,
} from '../helpers/fcgi-client.js'
import { TestSession } from '../helpers/session.js'
import { trackUncaught } from '../helpers/uncaught.js'
import { sleep, tmpSocketPath, waitFor, withTimeout } from '../helpers/wait.js'

const session = new TestSession()
afterEach(() => session.release())
const uncaught = trackUncaught()

function send(conn: FcgiConnection, id: number, uri: string, body?: Buffer): void {
  void conn.write(encodeRequest({ requestId: id, keepConn: true, params: defaultParams({ REQUEST_URI: uri }, body), stdin: body }))
}

/** Bytes 0..n-1 of a pattern that shows any reordering or loss. */
function pattern(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n)
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff
  return b
}

describe('fast finish on the JS thread', () => {
  it('sends STDOUT, the end records and FCGI_END_REQUEST once, in order, and keeps the connection', async () => {
    const path = tmpSocketPath('inline')
    const sock = session.listen(path)
    const req = session.request(sock)
    const conn = await session.connect({ path })
    const before = sock.stats().inlineFinishes
    for (let id = 1; id <= 3; id++) {
      send(conn, id, `/hello/${id}`)
      expect(await withTimeout(req.accept(), 5000, 'accept')).toBe(true)
      const withStderr = id === 2
      if (withStderr) {
        req.stderr.write('a warning\n')
        // Let the stderr write complete first: then nothing is in flight at finish.
        await new Promise<void>((resolve) => req.stderr.write('', () => resolve()))
      }
      req.setExitStatus(id * 10)
      req.stdout.write(`Content-Type: text/plain\r\n\r\nhello ${req.getParam('REQUEST_URI')}`)
      await withTimeout(req.finish(), 5000, 'finish')
      const res = await conn.readUntilEnd(id)
      expect(res.stdout.toString()).toBe(`Content-Type: text/plain\r\n\r\nhello /hello/${id}`)
      expect(res.appStatus).toBe(id * 10)
      expect(res.protocolStatus).toBe(0)
      const types = res.records.map((r) => r.type)
      // Data, then the empty STDOUT (and STDERR when it was used), then END_REQUEST.
      const expected = withStderr
        ? [FCGI_STDERR, FCGI_STDOUT, FCGI_STDOUT, FCGI_STDERR, FCGI_END_REQUEST]
        : [FCGI_STDOUT, FCGI_STDOUT, FCGI_END_REQUEST]
      expect(types).toEqual(expected)
      expect(res.records.filter((r) => r.type === FCGI_STDOUT).at(-1)!.content.length).toBe(0)
      if (withStderr) expect(res.stderr.toString()).toBe('a warning\n')
    }
    // All three took the fast path; nothing follows the last END_REQUEST.
    expect(sock.stats().inlineFinishes - before).toBe(3)
    await sleep(50)
    expect(conn.pending).toEqual([])
    expect(conn.closed).toBe(false)
    await uncaught.expectNone(20)
  })

  it('an empty response and a 65535-byte one (one full record) leave whole', async () => {
    const path = tmpSocketPath('inline')
    const sock = session.listen(path)
    const req = session.request(sock)
    const conn = await session.connect({ path })
    const sizes = [0, 1, 7, 8, 9, 65535]
    for (const [i, size] of sizes.entries()) {
      send(conn, i + 1, '/sized')
      expect(await withTimeout(req.accept(), 5000, 'accept')).toBe(true)
      const body = pattern(size, i)
      if (size > 0) req.stdout.write(body)
      await withTimeout(req.finish(), 5000, 'finish')
      const res = await conn.readUntilEnd(i + 1)
      expect(res.stdout.equals(body)).toBe(true)
    }
    await uncaught.expectNone(20)
  })

  // On a unix socket a send that starts below the buffer's limit goes
  // through whole (or not at all); over TCP it can go through in part.
  it.each(['unix', 'tcp'] as const)('a peer whose socket buffer is full (%s) still gets every byte, in order, and the connection stays usable', async (transport) => {
    let target: FcgiTarget
    let sock: FcgiSocket
    if (transport === 'unix') {
      const path = tmpSocketPath('inline-full')
      sock = session.listen(path)
      target = { path }
    } else {
      sock = session.listen({ port: 0, host: '127.0.0.1' })
      target = { port: sock.address()!.port!, host: '127.0.0.1' }
    }
    const req = session.request(sock)

    // How much a peer that does not read absorbs (the kernel's room on this
    // machine), measured with 16 KiB writes on a connection of its own.
    const probe = await session.connect(target)
    probe.socket.pause()
    send(probe, 1, '/probe')
    expect(await withTimeout(req.accept(), 5000, 'accept')).toBe(true)
    let room = 0
    for (;;) {
      const done = new Promise<boolean>((resolve) => req.stdout.write(pattern(16384, 0), (err) => resolve(!err)))
      if (!(await Promise.race([done, sleep(200).then(() => false)]))) break
      room += 16384
      expect(room).toBeLessThan(64 * 1024 * 1024)
    }
    probe.destroy()
    await withTimeout(req.finish(), 5000, 'finish of the probe')

    // Then responses whose prefix fills that room up to a margin before
    // finish() sends the tail: the tail leaves whole, in part (the rest from
    // a worker) or not at all (the worker path), depending on the margin.
    const conn = await session.connect(target)
    const prefixes = [0, Math.max(0, room - 96 * 1024), Math.max(0, room - 32 * 1024), Math.max(0, room - 16384)]
    const tails = [1, 8192, 40000, 65535]
    let id = 0
    for (const prefix of prefixes) {
      for (const tailSize of tails) {
        id++
        conn.socket.pause()  // the web server stops reading
        send(conn, id, '/full')
        expect(await withTimeout(req.accept(), 5000, 'accept')).toBe(true)
        const head = pattern(prefix, id)
        const tail = pattern(tailSize, id + 1000)
        if (prefix > 0) {
          const written = new Promise<boolean>((resolve) => req.stdout.write(head, () => resolve(true)))
          // The room differs between connections (TCP grows its buffers): if the
          // prefix does not fit, let the peer read until it has gone out.
          if (!(await Promise.race([written, sleep(300).then(() => false)]))) {
            conn.socket.resume()
            await withTimeout(written, 5000, 'prefix write')
            conn.socket.pause()
          }
        }
        req.stdout.write(tail)
        const finished = req.finish()
        await sleep(20)
        conn.socket.resume()
        await withTimeout(finished, 5000, 'finish')
        const res = await conn.readUntilEnd(id)
        expect(res.stdout.length).toBe(prefix + tailSize)
        expect(res.stdout.equals(Buffer.concat([head, tail]))).toBe(true)
        expect(res.protocolStatus).toBe(0)
      }
    }
    expect(sock.stats().requests).toBe(id + 1)
    expect(conn.closed).toBe(false)
    await uncaught.expectNone(20)
  })

  it('a peer gone before the fast finish: finish() resolves, nothing throws, the socket goes on serving', async () => {
    const path = tmpSocketPath('inline-gone')
    const sock = session.listen(path)
    const req = session.request(sock)
    const first = await session.connect({ path })
    send(first, 1, '/gone')
    expect(await withTimeout(req.accept(), 5000, 'accept')).toBe(true)
    first.destroy()
    await waitFor(() => req.aborted, { timeoutMs: 5000, what: 'the request to be aborted' })
    req.stdout.write('too late')
    await withTimeout(req.finish(), 5000, 'finish after the peer left')
    await waitFor(() => sock.stats().connections === 0, { timeoutMs: 5000, what: 'the connection to be released' })

    const second = await session.connect({ path })
    send(second, 1, '/next')
    expect(await withTimeout(req.accept(), 5000, 'accept')).toBe(true)
    req.stdout.write('next')
    await withTimeout(req.finish(), 5000, 'finish')
    expect((await second.readUntilEnd(1)).stdout.toString()).toBe('next')
    await uncaught.expectNone(20)
  })

  it('many Request objects finishing at once on kept connections: every response exact', async () => {
    const path = tmpSocketPath('inline-many')
    const sock = session.listen(path)
    const loops = 8
    const reqs = Array.from({ length: loops }, () => session.request(sock))
    let stop = false
    const served = reqs.map(async (req) => {
      let n = 0
      while (!stop && (await req.accept())) {
        req.stdout.write(`R:${req.getParam('REQUEST_URI')}`)
        await req.finish()
        n++
      }
      return n
    })
    const conns = await Promise.all(Array.from({ length: 16 }, () => session.connect({ path })))
    await Promise.all(conns.map(async (conn, c) => {
      for (let i = 1; i <= 50; i++) {
        send(conn, i, `/c${c}/r${i}`)
        const res = await conn.readUntilEnd(i)
        expect(res.stdout.toString()).toBe(`R:/c${c}/r${i}`)
      }
    }))
    stop = true
    expect(sock.stats().requests).toBe(16 * 50)
    expect(sock.stats().inlineFinishes).toBeGreaterThan(0)
    await sock.close()
    expect((await Promise.all(served)).reduce((a, b) => a + b, 0)).toBe(16 * 50)
    await uncaught.expectNone(20)
  })

  it('a response bigger than one record takes the worker path and arrives whole', async () => {
    const path = tmpSocketPath('inline-big')
    const sock = session.listen(path)
    const req = new Request(sock)
    const conn = await session.connect({ path })
    send(conn, 1, '/big')
    expect(await withTimeout(req.accept(), 5000, 'accept')).toBe(true)
    const body = pattern(200 * 1024, 3)
    req.stdout.write(body)
    const before = sock.stats().inlineFinishes
    await withTimeout(req.finish(), 5000, 'finish')
    const res = await conn.readUntilEnd(1)
    expect(res.stdout.equals(body)).toBe(true)
    expect(sock.stats().inlineFinishes).toBe(before)
  })
})

describe('accept on the poller, and its fallbacks', () => {
  async function serveEcho(path: string): Promise<FcgiSocket> {
    const sock = session.listen(path)
    const req = session.request(sock)
    void (async () => {
      while (await req.accept()) {
        const env = req.env
        req.stdout.write(`${env.REQUEST_URI}|${env.HTTP_X_BIG?.length ?? 0}`)
        await req.finish()
      }
    })()
    return sock
  }

  it('a head that arrives in pieces (BEGIN, half the params, the rest) is accepted once complete', async () => {
    const path = tmpSocketPath('head')
    await serveEcho(path)
    const conn = await session.connect({ path })
    const params = encodeParams(1, defaultParams({ REQUEST_URI: '/pieces' }))
    await conn.write(encodeBeginRequest(1, 1, true))
    await sleep(30)
    await conn.write(params.subarray(0, 13))
    await sleep(30)
    await conn.write(params.subarray(13, params.length - 8))
    await sleep(30)
    await conn.write(Buffer.concat([params.subarray(params.length - 8), encodeRecord(FCGI_STDIN, 1)]))
    expect((await conn.readUntilEnd(1)).stdout.toString()).toBe('/pieces|0')
    // and the next request on the same connection, whole at once
    send(conn, 2, '/whole')
    expect((await conn.readUntilEnd(2)).stdout.toString()).toBe('/whole|0')
    await uncaught.expectNone(20)
  })

  it('a management record before BEGIN_REQUEST, padded records, params over 16 KiB', async () => {
    const path = tmpSocketPath('head')
    await serveEcho(path)
    const conn = await session.connect({ path })
    // GET_VALUES first on an idle kept connection: answered, then the request.
    await conn.write(Buffer.concat([encodeGetValues(['FCGI_MPXS_CONNS']), encodeRequest({ requestId: 1, keepConn: true, params: defaultParams({ REQUEST_URI: '/after-mgmt' }) })]))
    const reply = await conn.readRecord()
    expect(reply.type).toBe(FCGI_GET_VALUES_RESULT)
    expect((await conn.readUntilEnd(1)).stdout.toString()).toBe('/after-mgmt|0')
    // Padded BEGIN and PARAMS records.
    const pairs = encodeParams(2, defaultParams({ REQUEST_URI: '/padded' })).subarray(0, -8)
    await conn.write(Buffer.concat([
      encodeRecord(1 /* BEGIN */, 2, Buffer.from([0, 1, 1, 0, 0, 0, 0, 0]), { padding: 5 }),
      encodeRecord(FCGI_PARAMS, 2, pairs.subarray(8), { padding: 3 }),
      encodeRecord(FCGI_PARAMS, 2, undefined, { padding: 7 }),
      encodeRecord(FCGI_STDIN, 2, undefined, { padding: 2 }),
    ]))
    expect((await conn.readUntilEnd(2)).stdout.toString()).toBe('/padded|0')
    // Params far over the poller's 16 KiB look-ahead.
    const big = 'x'.repeat(40000)
    await conn.write(encodeRequest({ requestId: 3, keepConn: true, params: defaultParams({ REQUEST_URI: '/big', HTTP_X_BIG: big }) }))
    expect((await conn.readUntilEnd(3)).stdout.toString()).toBe('/big|40000')
    send(conn, 4, '/last')
    expect((await conn.readUntilEnd(4)).stdout.toString()).toBe('/last|0')
    await uncaught.expectNone(20)
  })
})
