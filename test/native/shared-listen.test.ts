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

import { initSocket, type FcgiSocket, type SocketOptions } from '../../src/index.js'
import { serveOkLoops } from '../helpers/session.js'
import { native } from '../../src/native.js'
import { defaultParams, FcgiConnection, fcgiRequest, parseCgiResponse, type FcgiTarget } from '../helpers/fcgi-client.js'
import { tmpSocketPath, waitFor, withTimeout } from '../helpers/wait.js'

const O_NONBLOCK = 0o4000

const sockets: FcgiSocket[] = []
const conns: FcgiConnection[] = []
const fds: number[] = []
let loopErrors: unknown[] = []

afterEach(async () => {
  for (const c of conns.splice(0)) c.destroy()
  for (const fd of fds.splice(0)) fs.closeSync(fd)
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

function serve(path: string, options: SocketOptions = {}): FcgiSocket {
  const s = initSocket({ path }, options)
  sockets.push(s)
  serveOkLoops(s, 2, loopErrors)
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

// The share block of `libfcgi serve` (native/server.h, ShareEntry): 64-byte
// entries, each an int32 count of connections held and an int32 "accepting".
const ENTRY = 64

function shareBlock(): number {
  const r = native.shareCreate()
  if (!('fd' in r)) throw new Error(`shareCreate: ${r.syscall} errno ${r.errno}`)
  fds.push(r.fd)
  return r.fd
}

function readEntry(fd: number, index: number): { conns: number; accepting: number } {
  const b = Buffer.alloc(8)
  fs.readSync(fd, b, 0, 8, index * ENTRY)
  return { conns: b.readInt32LE(0), accepting: b.readInt32LE(4) }
}

function writeEntry(fd: number, index: number, conns: number, accepting: number): void {
  const b = Buffer.alloc(8)
  b.writeInt32LE(conns, 0)
  b.writeInt32LE(accepting, 4)
  fs.writeSync(fd, b, 0, 8, index * ENTRY)
}

/** A second fd of the block's memfd for a server, which takes it over (as a worker's fd 3). */
function blockFdForServer(fd: number): number {
  return fs.openSync(`/proc/self/fd/${fd}`, 'r+')
}

describe('the share block between processes on one listen socket', () => {
  it('shareClear zeroes one entry, and only that one', () => {
    const fd = shareBlock()
    expect(native.shareEntries).toBeGreaterThanOrEqual(16)
    writeEntry(fd, 2, 7, 1)
    writeEntry(fd, 3, 9, 1)
    expect(native.shareClear(fd, 2)).toBe(true)
    expect(readEntry(fd, 2)).toEqual({ conns: 0, accepting: 0 })
    expect(readEntry(fd, 3)).toEqual({ conns: 9, accepting: 1 })
    expect(native.shareClear(fd, native.shareEntries)).toBe(false)
  })

  it('a server publishes the connections it holds, and stops counting as accepting at close', async () => {
    const fd = shareBlock()
    const path = tmpSocketPath('shared-listen')
    const s = serve(path, { share: { fd: blockFdForServer(fd), index: 1 } })
    const target = { path }
    expect(readEntry(fd, 1)).toEqual({ conns: 0, accepting: 1 })
    const kept: FcgiConnection[] = []
    for (let i = 0; i < 5; i++) {
      const c = await FcgiConnection.connect(target)
      conns.push(c)
      kept.push(c)
      await expectServed(target, `/kept-${i}`, c)
    }
    expect(readEntry(fd, 1)).toEqual({ conns: 5, accepting: 1 })
    for (const c of kept) c.destroy()
    await waitFor(() => readEntry(fd, 1).conns === 0, { timeoutMs: 5000, what: 'the count back to 0' })
    await s.close()
    expect(readEntry(fd, 1).accepting).toBe(0)
  })

  it('a sibling that holds fewer connections but never accepts (stuck, or killed before its entry was cleared) only delays a connection', async () => {
    const fd = shareBlock()
    // Entry 0: a sibling with no connection that never takes one.
    writeEntry(fd, 0, 0, 1)
    const path = tmpSocketPath('shared-listen')
    serve(path, { share: { fd: blockFdForServer(fd), index: 1 } })
    const target = { path }
    // Every connection after the first finds us ahead of the sibling: each
    // waits a bounded moment, then is ours.
    const t0 = Date.now()
    for (let i = 0; i < 10; i++) {
      const c = await FcgiConnection.connect(target)
      conns.push(c)
      await expectServed(target, `/kept-${i}`, c)
    }
    await Promise.all(Array.from({ length: 10 }, (_, i) => expectServed(target, `/fresh-${i}`)))
    console.log(`20 connections with a stuck sibling at 0 connections: ${Date.now() - t0} ms`)
    // The kept ones (fresh ones may still be draining for a moment).
    await waitFor(() => readEntry(fd, 1).conns === 10, { timeoutMs: 5000, what: '10 connections counted' })
  })
})
