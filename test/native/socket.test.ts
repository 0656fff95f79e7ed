// initSocket's listen forms, unix socket handling (modes, live vs stale
// sockets, files that must never be removed), errors, close(), and the TCP
// peer allow-list (allowedClients / FCGI_WEB_SERVER_ADDRS).
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { FastCGIError, initSocket, Request, type FcgiSocket, type SocketOptions, type SystemError } from '../../src/index.js'
import { serveOkLoops } from '../helpers/session.js'
import { defaultParams, fcgiRequest, FcgiConnection, encodeRequest, parseCgiResponse, type FcgiTarget } from '../helpers/fcgi-client.js'
import { freePort, sleep, tmpSocketPath, waitFor, withTimeout } from '../helpers/wait.js'

// ---------------------------------------------------------------------------
// Bookkeeping: everything opened here is closed in afterEach.
// ---------------------------------------------------------------------------

const sockets: FcgiSocket[] = []
const netServers: net.Server[] = []
const conns: FcgiConnection[] = []
const children: ChildProcess[] = []
let loopErrors: unknown[] = []
const savedEnv = process.env.FCGI_WEB_SERVER_ADDRS

afterEach(async () => {
  if (savedEnv === undefined) delete process.env.FCGI_WEB_SERVER_ADDRS
  else process.env.FCGI_WEB_SERVER_ADDRS = savedEnv
  for (const c of conns.splice(0)) c.destroy()
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  await Promise.all(sockets.splice(0).map((s) => withTimeout(s.close(), 10000, 'FcgiSocket close')))
  await Promise.all(netServers.splice(0).map((srv) => withTimeout(new Promise<void>((resolve) => srv.close(() => resolve())), 5000, 'net.Server close')))
  const errors = loopErrors
  loopErrors = []
  expect(errors).toEqual([])
})

function track(s: FcgiSocket): FcgiSocket {
  sockets.push(s)
  return s
}

/** initSocket + two accept loops answering "ok <uri>". */
function serve(address: Parameters<typeof initSocket>[0], options: SocketOptions = {}): FcgiSocket {
  const s = track(initSocket(address, options))
  serveOkLoops(s, 2, loopErrors)
  return s
}

async function expectServed(target: FcgiTarget, uri = '/hello'): Promise<void> {
  const r = await fcgiRequest(target, { params: defaultParams({ REQUEST_URI: uri }), timeoutMs: 10000 })
  expect(r.protocolStatus).toBe(0)
  expect(parseCgiResponse(r.stdout).body.toString()).toBe(`ok ${uri}`)
}

/**
 * Expects the server to close a connection from `target` without reading:
 * with nothing sent it is closed, and a request sent on a second connection
 * gets no byte back.
 */
async function expectRefused(target: FcgiTarget): Promise<void> {
  const silent = await FcgiConnection.connect(target, 5000)
  conns.push(silent)
  expect(await silent.waitClosed(5000)).toBe(true) // closed before we sent a byte
  expect(silent.bytesReceived).toBe(0)
  const talker = await FcgiConnection.connect(target, 5000)
  conns.push(talker)
  void talker.write(encodeRequest({ params: defaultParams() }))
  expect(await talker.waitClosed(5000)).toBe(true)
  expect(talker.bytesReceived).toBe(0)
}

function thrown(fn: () => unknown): Error & Partial<SystemError> {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(Error)
    return err as Error & Partial<SystemError>
  }
  throw new Error('expected the call to throw, it returned normally')
}

/** Resolves with the error code of a TCP connect, or 'connected'. */
function tryConnect(options: net.NetConnectOpts): Promise<string> {
  return withTimeout(new Promise<string>((resolve) => {
    const c = net.connect(options)
    c.once('connect', () => { c.destroy(); resolve('connected') })
    c.once('error', (err: NodeJS.ErrnoException) => { c.destroy(); resolve(err.code ?? 'error') })
  }), 5000, `connect ${JSON.stringify(options)}`)
}

function listenNet(options: net.ListenOptions): Promise<net.Server> {
  const srv = net.createServer((c) => c.destroy())
  netServers.push(srv)
  return withTimeout(new Promise<net.Server>((resolve, reject) => {
    srv.once('error', reject)
    srv.listen(options, () => resolve(srv))
  }), 5000, 'net.Server listen')
}

function tcpTarget(s: FcgiSocket, host: string): FcgiTarget & { port: number } {
  const addr = s.address()
  if (!addr || addr.port === undefined) throw new Error('socket has no TCP address')
  return { port: addr.port, host }
}

// ---------------------------------------------------------------------------

describe('listen forms', () => {
  it('port 0 on 127.0.0.1: address() gives the real port, family IPv4', async () => {
    const s = serve({ port: 0, host: '127.0.0.1' })
    const addr = s.address()
    expect(addr?.family).toBe('IPv4')
    expect(addr?.address).toBe('127.0.0.1')
    expect(addr?.port).toBeGreaterThan(0)
    expect(s.fd).toBeGreaterThan(2)
    await expectServed(tcpTarget(s, '127.0.0.1'))
  })

  it('"127.0.0.1:0" string form', async () => {
    const s = serve('127.0.0.1:0')
    expect(s.address()).toMatchObject({ family: 'IPv4', address: '127.0.0.1' })
    await expectServed(tcpTarget(s, '127.0.0.1'))
  })

  it('"[::1]:0": IPv6 only', async () => {
    const s = serve('[::1]:0')
    const addr = s.address()
    expect(addr?.family).toBe('IPv6')
    expect(addr?.address).toBe('::1')
    expect(addr?.port).toBeGreaterThan(0)
    await expectServed(tcpTarget(s, '::1'))
    expect(await tryConnect({ port: addr!.port!, host: '127.0.0.1' })).toBe('ECONNREFUSED')
  })

  it('":0": dual stack, reachable on 127.0.0.1 and ::1', async () => {
    const s = serve(':0')
    const addr = s.address()
    expect(addr?.family).toBe('IPv6')
    expect(addr?.address).toBe('::')
    await expectServed(tcpTarget(s, '127.0.0.1'), '/v4')
    await expectServed(tcpTarget(s, '::1'), '/v6')
  })

  it('a unix socket with mode 0o660', async () => {
    const p = tmpSocketPath('mode660')
    const s = serve(p, { mode: 0o660 })
    expect(fs.statSync(p).isSocket()).toBe(true)
    expect(fs.statSync(p).mode & 0o777).toBe(0o660)
    expect(s.address()).toEqual({ family: 'unix', address: p })
    await expectServed({ path: p })
  })

  it('a unix socket with mode "600" (and the {path, mode} form with "0640")', async () => {
    const p = tmpSocketPath('mode600')
    serve(p, { mode: '600' })
    expect(fs.statSync(p).mode & 0o777).toBe(0o600)
    await expectServed({ path: p })
    const q = tmpSocketPath('mode640')
    serve({ path: q, mode: 0o640 })
    expect(fs.statSync(q).mode & 0o777).toBe(0o640)
    await expectServed({ path: q })
  })

  it('owner and group of a unix socket, by name and by id (chown before listen); an unknown name fails, leaving nothing behind', async () => {
    const p = tmpSocketPath('owner')
    const asRoot = process.getuid?.() === 0
    if (asRoot) {
      serve({ path: p, mode: 0o660, owner: 'nobody', group: 'nogroup' })
      const st = fs.statSync(p)
      expect([st.uid, st.gid, st.mode & 0o777]).toEqual([65534, 65534, 0o660])
      await expectServed({ path: p })
      const q = tmpSocketPath('ownerid')
      serve({ path: q, owner: 1, group: '2' })
      expect([fs.statSync(q).uid, fs.statSync(q).gid]).toEqual([1, 2])
    } else {
      // Not root: chown to another user is refused, and reported as such.
      expect(() => initSocket({ path: p, owner: 'nobody' })).toThrow(expect.objectContaining({ code: 'EPERM', syscall: 'chown' }))
      expect(fs.existsSync(p)).toBe(false)
    }
    const r = tmpSocketPath('nouser')
    expect(() => initSocket({ path: r, owner: 'no-such-user-here' })).toThrow(expect.objectContaining({ code: 'ERR_FASTCGI_UNKNOWN_USER' }))
    expect(() => initSocket({ path: r, group: 'no-such-group-here' })).toThrow(expect.objectContaining({ code: 'ERR_FASTCGI_UNKNOWN_GROUP' }))
    expect(() => initSocket({ path: r, owner: 'a:b' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }))
    expect(fs.existsSync(r)).toBe(false)
  })

  it('"unix:" prefixed path', async () => {
    const p = tmpSocketPath('prefixed')
    serve(`unix:${p}`)
    expect(fs.statSync(p).isSocket()).toBe(true)
    await expectServed({ path: p })
  })

  it('{fd} of something that is not a listening socket is refused with ERR_FASTCGI_NOT_FASTCGI', () => {
    const file = path.join(path.dirname(tmpSocketPath('notsock')), 'plain.txt')
    fs.writeFileSync(file, 'x')
    const fd = fs.openSync(file, 'r')
    try {
      const err = thrown(() => initSocket({ fd }))
      expect(err).toBeInstanceOf(FastCGIError)
      expect(err.code).toBe('ERR_FASTCGI_NOT_FASTCGI')
    } finally {
      fs.closeSync(fd)
    }
  })
})

describe('unix socket files', () => {
  it('refuses to replace a socket another FcgiSocket listens on (EADDRINUSE), which keeps working', async () => {
    const p = tmpSocketPath('live-fcgi')
    serve(p)
    const err = thrown(() => track(initSocket(p)))
    expect(err.code).toBe('EADDRINUSE')
    expect(err.syscall).toBe('bind')
    expect(err.path).toBe(p)
    expect(fs.statSync(p).isSocket()).toBe(true)
    await expectServed({ path: p }, '/still-mine')
  })

  it('refuses to replace a socket a node net.Server listens on, which keeps working', async () => {
    const p = tmpSocketPath('live-net')
    const srv = net.createServer((c) => {
      c.on('error', () => {}) // initSocket's probe connects and leaves at once
      c.end('hello from net\n')
    })
    netServers.push(srv)
    await withTimeout(new Promise<void>((resolve) => srv.listen(p, () => resolve())), 5000, 'net listen')
    const err = thrown(() => track(initSocket(p)))
    expect(err.code).toBe('EADDRINUSE')
    const reply = await withTimeout(new Promise<string>((resolve, reject) => {
      const c = net.connect(p)
      let text = ''
      c.on('data', (d) => { text += d.toString() })
      c.on('end', () => resolve(text))
      c.on('error', reject)
    }), 5000, 'net.Server reply')
    expect(reply).toBe('hello from net\n')
  })

  it('replaces a stale socket file (a hard link left behind by a closed net.Server)', async () => {
    const p = tmpSocketPath('stale-link')
    const original = `${p}.orig`
    const srv = net.createServer()
    await withTimeout(new Promise<void>((resolve) => srv.listen(original, () => resolve())), 5000, 'net listen')
    fs.linkSync(original, p) // a second name for the socket inode
    await withTimeout(new Promise<void>((resolve) => srv.close(() => resolve())), 5000, 'net close')
    expect(fs.lstatSync(p).isSocket()).toBe(true) // still there, nobody listens
    expect(await tryConnect({ path: p })).toBe('ECONNREFUSED')
    serve(p)
    await expectServed({ path: p }, '/replaced')
  })

  it('replaces a stale socket file left by a process killed with SIGKILL', async () => {
    const p = tmpSocketPath('stale-kill')
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(p)}, () => console.log('ready'))`], { stdio: ['ignore', 'pipe', 'inherit'] })
    children.push(child)
    await withTimeout(new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('ready')) resolve() })
      child.once('exit', () => reject(new Error('child exited early')))
    }), 10000, 'child listening')
    // while the child lives, the path is taken
    expect(thrown(() => track(initSocket(p))).code).toBe('EADDRINUSE')
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    child.kill('SIGKILL')
    await withTimeout(exited, 5000, 'child exit')
    expect(fs.lstatSync(p).isSocket()).toBe(true)
    serve(p)
    await expectServed({ path: p }, '/after-kill')
  })

  it('never removes a regular file at the path (EADDRINUSE, file intact)', () => {
    const p = tmpSocketPath('regular')
    fs.writeFileSync(p, 'precious data\n', { mode: 0o640 })
    const err = thrown(() => track(initSocket(p)))
    expect(err.code).toBe('EADDRINUSE')
    expect(err.syscall).toBe('bind')
    expect(fs.lstatSync(p).isFile()).toBe(true)
    expect(fs.readFileSync(p, 'utf8')).toBe('precious data\n')
  })

  it('never removes a directory at the path', () => {
    const p = tmpSocketPath('dir')
    fs.mkdirSync(p)
    fs.writeFileSync(path.join(p, 'inside'), 'x')
    const err = thrown(() => track(initSocket(p)))
    expect(err.code).toBe('EADDRINUSE')
    expect(fs.readFileSync(path.join(p, 'inside'), 'utf8')).toBe('x')
  })

  it('a path in a missing directory fails with ENOENT', () => {
    const p = path.join(path.dirname(tmpSocketPath('missing')), 'no', 'such', 'dir.sock')
    const err = thrown(() => track(initSocket(p)))
    expect(err.code).toBe('ENOENT')
    expect(err.syscall).toBe('bind')
    expect(err.path).toBe(p)
    expect(typeof err.errno).toBe('number')
  })

  it('close() unlinks the socket file; close() twice resolves', async () => {
    const p = tmpSocketPath('unlink')
    const s = track(initSocket(p))
    expect(fs.existsSync(p)).toBe(true)
    await withTimeout(Promise.all([s.close(), s.close()]), 5000, 'two concurrent closes')
    expect(fs.existsSync(p)).toBe(false)
    expect(s.closed).toBe(true)
    expect(s.address()).toBeNull()
    await withTimeout(s.close(), 5000, 'close after close')
    expect(await tryConnect({ path: p })).toBe('ENOENT')
  })
})

describe('errors and close', () => {
  it('close() leaves alone a socket file that replaced ours (another server listening at the path now)', async () => {
    const p = tmpSocketPath('replaced')
    const first = track(initSocket(p))
    fs.unlinkSync(p)  // e.g. removed by hand, or by a deploy script
    const second = track(initSocket(p))
    const r = new Request(second)
    const served = (async () => { while (await r.accept()) { r.stdout.write('Content-Type: text/plain\r\n\r\nsecond'); await r.finish() } })()
    await withTimeout(first.close(), 5000, 'close of the first socket')
    expect(fs.statSync(p).isSocket()).toBe(true)
    const res = await fcgiRequest({ path: p }, { params: defaultParams() })
    expect(parseCgiResponse(res.stdout).body.toString()).toBe('second')
    await withTimeout(second.close(), 5000, 'close of the second socket')
    await served
    expect(fs.existsSync(p)).toBe(false)
  })

  it('TCP EADDRINUSE on a port in use', async () => {
    const srv = await listenNet({ port: 0, host: '127.0.0.1' })
    const port = (srv.address() as net.AddressInfo).port
    const err = thrown(() => track(initSocket({ port, host: '127.0.0.1' })))
    expect(err.code).toBe('EADDRINUSE')
    expect(err.syscall).toBe('bind')
    expect(err.port).toBe(port)
    expect(err.address).toBe('127.0.0.1')
    expect(err.errno).toBeLessThan(0)
    expect(err.message).toContain('EADDRINUSE')
  })

  it('a pending accept resolves false on close(); accept() after close() resolves false', async () => {
    const s = track(initSocket({ port: 0, host: '127.0.0.1' }))
    const req = new Request(s)
    const pending = req.accept()
    await withTimeout(s.close(), 5000, 'close')
    expect(await withTimeout(pending, 5000, 'pending accept')).toBe(false)
    expect(await withTimeout(req.accept(), 5000, 'accept after close')).toBe(false)
  })

  it('new Request(closedSocket).accept() resolves false', async () => {
    const s = track(initSocket({ port: 0, host: '127.0.0.1' }))
    await withTimeout(s.close(), 5000, 'close')
    const accepted = await withTimeout((async () => new Request(s).accept())(), 5000, 'accept on a closed socket')
    expect(accepted).toBe(false)
  })

  it('close() waits for the request in flight, which still completes', async () => {
    const s = track(initSocket({ port: 0, host: '127.0.0.1' }))
    const target = tcpTarget(s, '127.0.0.1')
    const req = new Request(s)
    const gotOne = req.accept()
    const response = fcgiRequest(target, { params: defaultParams({ REQUEST_URI: '/inflight' }) })
    expect(await withTimeout(gotOne, 5000, 'accept')).toBe(true)
    let closed = false
    const closing = s.close().then(() => { closed = true })
    await sleep(50)
    expect(closed).toBe(false)
    req.stdout.write('Content-Type: text/plain\r\n\r\nlate')
    await req.finish()
    await withTimeout(closing, 5000, 'close after the request')
    const r = await response
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('late')
    expect(await tryConnect({ port: target.port, host: '127.0.0.1' })).toBe('ECONNREFUSED')
  })

  describe('bad arguments throw and leave nothing listening', () => {
    async function expectNothingOn(port: number, p: string): Promise<void> {
      expect(await tryConnect({ port, host: '127.0.0.1' })).toBe('ECONNREFUSED')
      expect(fs.existsSync(p)).toBe(false)
    }

    const cases: Array<[string, (port: number, p: string) => unknown, string, ErrorConstructor]> = [
      ['backlog -1 (argument)', (port) => initSocket({ port, host: '127.0.0.1' }, -1), 'ERR_OUT_OF_RANGE', RangeError],
      ['backlog -1 (option)', (_port, p) => initSocket(p, { backlog: -1 }), 'ERR_OUT_OF_RANGE', RangeError],
      ['backlog 1.5', (port) => initSocket({ port, host: '127.0.0.1' }, { backlog: 1.5 }), 'ERR_OUT_OF_RANGE', RangeError],
      ['port 70000', () => initSocket({ port: 70000, host: '127.0.0.1' }), 'ERR_SOCKET_BAD_PORT', RangeError],
      ['"127.0.0.1:70000"', () => initSocket('127.0.0.1:70000'), 'ERR_SOCKET_BAD_PORT', RangeError],
      ['host "example.com"', (port) => initSocket({ port, host: 'example.com' }), 'ERR_INVALID_ARG_VALUE', TypeError],
      ['mode "abc"', (_port, p) => initSocket(p, { mode: 'abc' }), 'ERR_INVALID_ARG_VALUE', TypeError],
      ['maxConns 0 (TCP)', (port) => initSocket({ port, host: '127.0.0.1' }, { maxConns: 0 }), 'ERR_OUT_OF_RANGE', RangeError],
      ['maxConns 0 (unix)', (_port, p) => initSocket(p, { maxConns: 0 }), 'ERR_OUT_OF_RANGE', RangeError],
      ['maxReqs -1', (port) => initSocket({ port, host: '127.0.0.1' }, { maxReqs: -1 }), 'ERR_OUT_OF_RANGE', RangeError],
      ['maxThreads 0', (_port, p) => initSocket(p, { maxThreads: 0 }), 'ERR_OUT_OF_RANGE', RangeError],
      ['paramsMaxBytes 0', (port) => initSocket({ port, host: '127.0.0.1' }, { paramsMaxBytes: 0 }), 'ERR_OUT_OF_RANGE', RangeError],
      ['readTimeout -5', (_port, p) => initSocket(p, { readTimeout: -5 }), 'ERR_OUT_OF_RANGE', RangeError],
      ['allowedClients ["nope"]', (port) => initSocket({ port, host: '127.0.0.1' }, { allowedClients: ['nope'] }), 'ERR_INVALID_ARG_VALUE', TypeError],
    ]
    for (const [what, call, code, ctor] of cases) {
      it(what, async () => {
        const port = await freePort('127.0.0.1')
        const p = tmpSocketPath('badarg')
        const err = thrown(() => track(call(port, p) as FcgiSocket))
        expect(err).toBeInstanceOf(ctor)
        expect(err.code).toBe(code)
        await expectNothingOn(port, p)
      })
    }
  })
})

describe('allowedClients / FCGI_WEB_SERVER_ADDRS', () => {
  it("['10.1.2.3']: a client from 127.0.0.1 is refused before any byte is read, and counted", async () => {
    const s = serve({ port: 0, host: '127.0.0.1' }, { allowedClients: ['10.1.2.3'] })
    const target = tcpTarget(s, '127.0.0.1')
    expect(s.stats().refusedConnections).toBe(0)
    await expectRefused(target)
    await waitFor(() => s.stats().refusedConnections === 2, { what: 'refusedConnections 2', timeoutMs: 5000 })
    expect(s.stats().acceptedConnections).toBe(0)
    expect(s.stats().requests).toBe(0)
    // still accepting (and refusing)
    await expectRefused(target)
    await waitFor(() => s.stats().refusedConnections === 4, { what: 'refusedConnections 4', timeoutMs: 5000 })
    // the process goes on serving on another socket
    const other = serve({ port: 0, host: '127.0.0.1' })
    await expectServed(tcpTarget(other, '127.0.0.1'))
  })

  it("['127.0.0.1']: a client from 127.0.0.1 is served", async () => {
    const s = serve({ port: 0, host: '127.0.0.1' }, { allowedClients: ['127.0.0.1'] })
    await expectServed(tcpTarget(s, '127.0.0.1'))
    expect(s.stats().refusedConnections).toBe(0)
    expect(s.stats().acceptedConnections).toBe(1)
  })

  it("a string list '10.0.0.1, 127.0.0.1' works like an array", async () => {
    const s = serve({ port: 0, host: '127.0.0.1' }, { allowedClients: '10.0.0.1, 127.0.0.1' })
    await expectServed(tcpTarget(s, '127.0.0.1'))
  })

  it("IPv6: '[::1]:0' with ['::1'] is served, with ['::2'] refused", async () => {
    const ok = serve('[::1]:0', { allowedClients: ['::1'] })
    await expectServed(tcpTarget(ok, '::1'))
    const no = serve('[::1]:0', { allowedClients: ['::2'] })
    await expectRefused(tcpTarget(no, '::1'))
    await waitFor(() => no.stats().refusedConnections >= 2, { what: 'refused on ::1', timeoutMs: 5000 })
  })

  it("a dual-stack ':0' listener with ['127.0.0.1'] serves 127.0.0.1 (IPv4-mapped) and refuses ::1", async () => {
    const s = serve(':0', { allowedClients: ['127.0.0.1'] })
    await expectServed(tcpTarget(s, '127.0.0.1'))
    await expectRefused(tcpTarget(s, '::1'))
    expect(s.stats().acceptedConnections).toBe(1)
  })

  it("a dual-stack listener with ['::ffff:127.0.0.1'] serves 127.0.0.1", async () => {
    const s = serve(':0', { allowedClients: ['::ffff:127.0.0.1'] })
    await expectServed(tcpTarget(s, '127.0.0.1'))
  })

  it('uses FCGI_WEB_SERVER_ADDRS when no option is given', async () => {
    process.env.FCGI_WEB_SERVER_ADDRS = '127.0.0.1, ::1'
    const both = serve(':0')
    await expectServed(tcpTarget(both, '127.0.0.1'), '/env-v4')
    await expectServed(tcpTarget(both, '::1'), '/env-v6')
    process.env.FCGI_WEB_SERVER_ADDRS = '10.9.9.9'
    const none = serve({ port: 0, host: '127.0.0.1' })
    await expectRefused(tcpTarget(none, '127.0.0.1'))
  })

  it('the allowedClients option wins over FCGI_WEB_SERVER_ADDRS ([] allows anyone)', async () => {
    process.env.FCGI_WEB_SERVER_ADDRS = '10.9.9.9'
    const listed = serve({ port: 0, host: '127.0.0.1' }, { allowedClients: ['127.0.0.1'] })
    await expectServed(tcpTarget(listed, '127.0.0.1'))
    const anyone = serve({ port: 0, host: '127.0.0.1' }, { allowedClients: [] })
    await expectServed(tcpTarget(anyone, '127.0.0.1'))
  })

  it('does not filter unix socket clients', async () => {
    const p = tmpSocketPath('unfiltered')
    const s = serve(p, { allowedClients: ['10.1.2.3'] })
    await expectServed({ path: p })
    expect(s.stats().refusedConnections).toBe(0)
  })
})
