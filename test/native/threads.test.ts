// The worker pool: max(4, 2 x cores) threads start on demand; past that, a
// thread is added only when every thread is stuck (writes to peers that do not
// read). A server whose threads are all blocked on slow peers keeps serving.
import os from 'node:os'
import { afterEach, describe, expect, it } from 'vitest'
import { type FcgiSocket, initSocket, Request } from '../../src/index.js'
import { defaultParams, encodeRequest, FcgiConnection, fcgiRequest, parseCgiResponse } from '../helpers/fcgi-client.js'
import { tmpSocketPath, waitFor } from '../helpers/wait.js'

let sock: FcgiSocket | undefined
const conns: FcgiConnection[] = []
afterEach(async () => {
  for (const c of conns.splice(0)) c.destroy()
  await sock?.close()
  sock = undefined
})

describe('worker threads', () => {
  it('adds threads when all are blocked writing to peers that do not read, and keeps serving', async () => {
    const path = tmpSocketPath('threads')
    sock = initSocket(path)
    const s = sock
    const core = Math.max(4, 2 * os.availableParallelism())
    const stuck = core + 2
    const big = Buffer.alloc(8 << 20, 0x61)
    for (let i = 0; i < stuck + 2; i++) {
      void (async () => {
        const req = new Request(s)
        while (await req.accept()) {
          if (req.env.REQUEST_URI === '/big') {
            // One write: its native op blocks until the peer reads (never).
            req.stdout.write(Buffer.concat([Buffer.from('Content-Type: text/plain\r\n\r\n'), big]), () => {})
          } else {
            req.stdout.write('Content-Type: text/plain\r\n\r\nsmall')
          }
          await req.finish()
        }
      })()
    }
    // Peers that send a request and never read the answer.
    for (let i = 0; i < stuck; i++) {
      const c = await FcgiConnection.connect({ path })
      conns.push(c)
      c.socket.pause()
      void c.write(encodeRequest({ requestId: 1, params: defaultParams({ REQUEST_URI: '/big' }) }))
    }
    await waitFor(() => s.stats().busyConnections === stuck, { timeoutMs: 10000, what: 'all slow requests accepted' })
    // Every core thread is blocked in write(); a new request still gets an answer.
    const r = await fcgiRequest({ path }, { params: defaultParams({ REQUEST_URI: '/small' }), timeoutMs: 10000 })
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('small')
    expect(s.stats().threads).toBeGreaterThan(core)
    expect(s.stats().threads).toBeLessThanOrEqual(64)
  })

  it('does not start more threads than needed for requests that only wait in JS', async () => {
    const path = tmpSocketPath('threads2')
    sock = initSocket(path)
    const s = sock
    for (let i = 0; i < 32; i++) {
      void (async () => {
        const req = new Request(s)
        while (await req.accept()) {
          await new Promise((r) => setTimeout(r, 50))
          req.stdout.write('Content-Type: text/plain\r\n\r\nok')
          await req.finish()
        }
      })()
    }
    const results = await Promise.all(Array.from({ length: 32 }, (_, i) =>
      fcgiRequest({ path }, { params: defaultParams({ REQUEST_URI: `/${i}` }), timeoutMs: 10000 })))
    for (const r of results) expect(parseCgiResponse(r.stdout).body.toString()).toBe('ok')
    expect(s.stats().threads).toBeLessThanOrEqual(Math.max(4, 2 * os.availableParallelism()))
  })
})
