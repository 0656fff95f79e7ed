// A listen socket shared with other processes: its O_NONBLOCK flag belongs
// to the open file description, so any process holding the socket can clear
// it for us. libuv does so for a spawned child's fds 0-2 (spawning a worker
// with the socket as its fd 0, as spawn-fcgi does), and Node restores the
// flags it found at exit. The poller, which accepts until EAGAIN, then sat in
// a blocking accept4() holding the connections it had accepted: a request on
// them hung until some other connection came. The server must set the flag
// again and bound such an accept (SO_RCVTIMEO).
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'

import { initSocket, Request, type FcgiSocket } from '../../src/index.js'
import { defaultParams, FcgiConnection, fcgiRequest, parseCgiResponse, type FcgiTarget } from '../helpers/fcgi-client.js'
import { tmpSocketPath, withTimeout } from '../helpers/wait.js'

const O_NONBLOCK = 0o4000

const sockets: FcgiSocket[] = []
const conns: FcgiConnection[] = []
let loopErrors: unknown[] = []

afterEach(async () => {
  for (const c of conns.splice(0)) c.destroy()
  await Promise.all(sockets.splice(0).map((s) => withTimeout(s.close(), 10000, 'FcgiSocket close')))
  const errors = loopErrors
  loopErrors = []
  expect(errors).toEqual([])
})

/** The fd's open file description flags, from /proc (Node has no fcntl). */
function fdFlags(fd: number): number {
  const m = /^flags:\s+([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))
  if (!m) throw new Error(`no flags in /proc/self/fdinfo/${fd}`)
  return parseInt(m[1]!, 8)
}

/** Another process gets the socket as its fd 0: libuv makes it blocking there. */
async function spawnWithSocketAsStdin(fd: number): Promise<void> {
  const child = spawn('true', [], { stdio: [fd, 'ignore', 'ignore'] })
  await withTimeout(new Promise<void>((resolve, reject) => {
    child.once('error', reject)
    child.once('exit', () => resolve())
  }), 10000, 'the child holding the socket to exit')
}

function serve(path: string): FcgiSocket {
  const s = initSocket({ path })
  sockets.push(s)
  for (let i = 0; i < 2; i++) {
    void (async () => {
      const req = new Request(s)
      while (await req.accept()) {
        for await (const _ of req.stdin) { /* drain */ }
        req.stdout.write(`Content-Type: text/plain\r\n\r\nok ${req.env.REQUEST_URI}`)
        await req.finish()
      }
    })().catch((err: unknown) => loopErrors.push(err))
  }
  return s
}

async function expectServed(target: FcgiTarget, uri: string, connection?: FcgiConnection): Promise<void> {
  // Bounded well below the test's timeout: the old poller never answered.
  const r = await fcgiRequest(target, { params: defaultParams({ REQUEST_URI: uri }), timeoutMs: 5000, ...(connection ? { connection, keepConn: true } : {}) })
  expect(parseCgiResponse(r.stdout).body.toString()).toBe(`ok ${uri}`)
}

describe('a shared listen socket made blocking by another process', () => {
  it('never blocks the poller: new and kept connections are served, O_NONBLOCK comes back', async () => {
    const path = tmpSocketPath('shared-listen')
    const s = serve(path)
    const target = { path }
    await expectServed(target, '/before')
    expect(fdFlags(s.fd) & O_NONBLOCK).toBe(O_NONBLOCK)

    await spawnWithSocketAsStdin(s.fd)
    // The reproduction is real: the child cleared the flag for us too.
    expect(fdFlags(s.fd) & O_NONBLOCK).toBe(0)

    // A new connection: the poller accepts it, then looks for more.
    await expectServed(target, '/after')
    expect(fdFlags(s.fd) & O_NONBLOCK).toBe(O_NONBLOCK)

    // Again, with a kept connection accepted before the flag went: its
    // requests go through the poller too.
    const kept = await FcgiConnection.connect(target)
    conns.push(kept)
    await expectServed(target, '/kept-1', kept)
    await spawnWithSocketAsStdin(s.fd)
    await expectServed(target, '/fresh')
    await expectServed(target, '/kept-2', kept)
    for (let i = 0; i < 5; i++) {
      await spawnWithSocketAsStdin(s.fd)
      await Promise.all([expectServed(target, `/many-${i}-a`), expectServed(target, `/many-${i}-b`), expectServed(target, `/kept-${i + 3}`, kept)])
    }
  }, 60000)
})
