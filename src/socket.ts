// A FastCGI listening socket: libfcgi's `FCGX_OpenSocket` made safe. The
// listener is created by our own native code (IPv6, unix socket modes, errors
// as exceptions instead of exit()), then served by a native poller and a
// small pool of our own threads.
import { EventEmitter } from 'node:events'
import fs from 'node:fs'
import os from 'node:os'

import { type ListenAddress, type ListenTarget, parseAllowedClients, parseListenAddress } from './address.js'
import { FastCGIError, type FastCGIErrorCode, systemError } from './errors.js'
import { EventKind, type FdResult, native, type NativeServerOptions, type NativeStats, type ServerHandle, type SlotHandle, STATUS_CLOSED, STATUS_MAX_CONNS } from './native.js'

/** FastCGI's listen socket as inherited from a web server (FCGI_LISTENSOCK_FILENO). */
export const FCGI_LISTENSOCK_FILENO = 0

export interface SocketOptions {
  /** listen(2) backlog (default 511, like node:net). */
  backlog?: number
  /** Unix socket permissions, e.g. 0o660 or "660". */
  mode?: number | string
  /** Connections held open at most, idle (kept by the web server) or busy (default 1024). */
  maxConns?: number
  /** Requests in parallel announced in FCGI_GET_VALUES as FCGI_MAX_REQS (default: maxConns). */
  maxReqs?: number
  /**
   * Native worker threads at most (default 64). max(4, 2 x cores) start as
   * needed; more only when all of them are stuck writing to slow peers.
   * Idle kept connections and requests waiting for their body hold none.
   */
  maxThreads?: number
  /** Cap on one request's params (names + values) in bytes, refused before allocation (default 1 MiB). */
  paramsMaxBytes?: number
  /** Cap on the number of params of one request (default 1000). */
  paramsMaxCount?: number
  /**
   * TCP peers allowed to connect (IPv4/IPv6 literals). Default: the
   * FCGI_WEB_SERVER_ADDRS environment variable, as libfcgi; empty: anyone.
   */
  allowedClients?: string | readonly string[]
  /** A peer that stalls in the middle of a record is dropped after this many ms (default 60000). */
  readTimeout?: number
  /**
   * A kept connection with no request on it is closed after this many ms
   * (default 300000: longer than web servers keep idle upstream connections,
   * e.g. nginx's keepalive_timeout of 60 s, so normally they close first).
   * 0: never.
   */
  idleTimeout?: number
  /**
   * @internal `libfcgi serve`'s workers: the fd of the supervisor's share
   * block (taken over: closed by the server) and this worker's entry in it,
   * for an even share of the connections between the workers.
   */
  share?: { fd: number; index: number }
}

export interface SocketAddress {
  family: 'IPv4' | 'IPv6' | 'unix'
  address: string
  port?: number
}

/** Completions handled per event-loop turn at most. */
const DRAIN_BATCH = 64

type Listener = (slotId: number, kind: EventKind, status: number, payload: unknown, n1: number, n2: number) => void

function positiveInt(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    const err = new RangeError(`${name} must be a positive integer, got ${String(value)}`) as RangeError & { code: string }
    err.code = 'ERR_OUT_OF_RANGE'
    throw err
  }
  return value
}

/**
 * A FastCGI listening socket. Made by `initSocket()`; `new Request(socket)`
 * accepts requests on it. Keeps the process alive while open, like
 * `net.Server`, unless `unref()`ed.
 */
export class FcgiSocket extends EventEmitter {
  readonly fd: number
  readonly #target: ListenTarget
  #handle: ServerHandle | undefined
  #slots = new Map<number, WeakRef<{ _onNativeEvent: Listener }>>()
  #pinned = new Set<object>()
  #held = new Set<object>()  // createServer's accept loops (see _hold)
  #active = new Set<number>()
  #closed = false
  #userRef = true
  #refed = true
  #socketFile: SocketFile | undefined
  #closeWaiters: Array<() => void> = []
  #draining: ServerHandle | undefined  // set between close and destroy
  #accepting = 0  // accept()s handed to the native side, not completed yet
  #settleTimer: NodeJS.Timeout | undefined
  #settleDeadline = 0
  readonly #limits: { paramsMaxBytes: number; paramsMaxCount: number; readTimeoutMs: number; maxConns: number }

  /** @internal use initSocket() */
  constructor(fd: number, target: ListenTarget, options: NativeServerOptions, socketFile?: SocketFile) {
    super()
    this.fd = fd
    this.#target = target
    this.#socketFile = socketFile
    this.#limits = { paramsMaxBytes: options.paramsMaxBytes, paramsMaxCount: options.paramsMaxCount, readTimeoutMs: options.readTimeoutMs, maxConns: options.maxConns }
    const handle = native.serverCreate(fd, options, this.#drain)
    if ('errno' in handle) {
      native.closeFd(fd)
      removeSocketFile(socketFile)
      throw systemError(handle.errno, handle.syscall)
    }
    this.#handle = handle
  }

  /** True once close() was called. */
  get closed(): boolean {
    return this.#closed
  }

  /** The bound address, like `net.Server#address()`. */
  address(): SocketAddress | null {
    if (this.#closed) return null
    if (this.#target.kind === 'unix') return { family: 'unix', address: this.#target.path }
    const name = native.localName(this.fd)
    if (name.family === 1) return { family: 'unix', address: name.address }
    if (name.family === 0) return null
    return { family: name.family === 6 ? 'IPv6' : 'IPv4', address: name.address, port: name.port }
  }

  /** Connection, thread and request counters of the native core. */
  stats(): NativeStats {
    return native.serverStats(this.#requireHandle())
  }

  /**
   * Stops accepting: pending `accept()`s resolve `false`, idle connections
   * close, requests in flight finish. Resolves when the last one has.
   */
  close(): Promise<void> {
    const done = new Promise<void>((resolve) => this.#closeWaiters.push(resolve))
    if (!this.#closed) {
      this.#closed = true
      this.#settleDeadline = Date.now() + 3000
      if (this.#handle) native.serverClose(this.#handle)
      removeSocketFile(this.#socketFile)
      this.#maybeDestroy()
    } else {
      this.#maybeDestroy()
    }
    return done
  }

  /** Keep the event loop alive while open (the default). */
  ref(): this {
    this.#userRef = true
    this.#updateRef()
    return this
  }

  /** Let the process exit even though this socket is open. */
  unref(): this {
    this.#userRef = false
    this.#updateRef()
    return this
  }

  // ---- used by Request

  /** @internal */
  _newSlot(owner: { _onNativeEvent: Listener }): [SlotHandle, number] {
    const [slot, id] = native.slotCreate(this.#requireHandle())
    this.#slots.set(id, new WeakRef(owner))
    return [slot, id]
  }

  /** @internal a completion the native side gave synchronously (a fast finish) */
  _event(slotId: number, kind: EventKind, status: number): void {
    this.#onEvent(slotId, kind, status, undefined, 0, 0)
  }

  /**
   * @internal Can a Request still accept? After close() it can, until the
   * native side has served the requests that had already reached this
   * process (it then answers the pending accepts with "closed").
   */
  _canAccept(): boolean {
    return this.#handle !== undefined
  }

  /** @internal accept() on a native slot; counted until its completion. */
  _accept(slot: SlotHandle): void {
    this.#requireHandle()
    native.accept(slot)
    this.#accepting++
  }

  /** @internal an op is in flight: the owner must stay reachable. */
  _pin(owner: object): void {
    this.#pinned.add(owner)
  }

  /** @internal */
  _unpin(owner: object): void {
    this.#pinned.delete(owner)
  }

  /**
   * @internal A Request that a server loop serves for as long as it runs,
   * kept reachable even while no op of it is in flight: otherwise a handler
   * that keeps nothing (awaiting a promise that never settles) lets the
   * Request, its response and the loop itself be collected, and the loop is
   * lost for good (createServer stops serving once all are).
   */
  _hold(owner: object): void {
    this.#held.add(owner)
  }

  /** @internal */
  _release(owner: object): void {
    this.#held.delete(owner)
  }

  #requireHandle(): ServerHandle {
    if (!this.#handle) throw new FastCGIError('ERR_FASTCGI_SOCKET_CLOSED', 'the FastCGI socket is closed')
    return this.#handle
  }

  // Completions are handled in batches; between batches timers and I/O run,
  // so a loaded server keeps its event loop responsive.
  #drain = (): void => {
    const handle = this.#handle ?? this.#draining
    if (!handle) return
    const batch = native.drain(handle, DRAIN_BATCH)
    for (let i = 0; i < batch.length; i += 6) {
      this.#onEvent(batch[i] as number, batch[i + 1] as EventKind, batch[i + 2] as number, batch[i + 3], batch[i + 4] as number, batch[i + 5] as number)
    }
    if (batch.more) setImmediate(this.#drain)
  }

  #onEvent(slotId: number, kind: EventKind, status: number, payload: unknown, n1: number, n2: number): void {
    if (kind === EventKind.Dropped) {
      this.#dropped(status)
      return
    }
    if (kind === EventKind.Accept) this.#accepting--
    if (kind === EventKind.Accept && status === 0) {
      this.#active.add(slotId)
      this.#updateRef()
    }
    const owner = this.#slots.get(slotId)?.deref()
    if (kind === EventKind.Finish) {
      this.#active.delete(slotId)
      if (!owner) this.#slots.delete(slotId)
    }
    if (owner) {
      owner._onNativeEvent(slotId, kind, status, payload, n1, n2)
    } else if (kind === EventKind.Accept && status === STATUS_CLOSED) {
      this.#slots.delete(slotId)
    }
    if (kind === EventKind.Finish || (kind === EventKind.Accept && status !== 0)) {
      this.#updateRef()
      this.#maybeDestroy()
    }
  }

  /**
   * A request the native side dropped unread: 'clientError' with the reason,
   * or (nobody listening) a line on stderr for the operator, at most one
   * every 10 s with the count of those not shown.
   */
  #dropped(status: number): void {
    const l = this.#limits
    if (status === STATUS_MAX_CONNS) {
      const err = new FastCGIError('ERR_FASTCGI_MAX_CONNS', `${l.maxConns} connections are open, the limit (initSocket's maxConns, createServer's maxConnections): new connections wait in the listen backlog until one closes`)
      if (this.listenerCount('warning') > 0) this.emit('warning', err)
      else reportLimit('maxConns', err)
      return
    }
    let code: FastCGIErrorCode
    let why: string
    if (status === FCGX_PARAMS_ERROR) {
      code = 'ERR_FASTCGI_PARAMS_ERROR'
      why = `its params are malformed or over the limits (paramsMaxBytes ${l.paramsMaxBytes}, paramsMaxCount ${l.paramsMaxCount})`
    } else if (status === FCGX_UNSUPPORTED_VERSION) {
      code = 'ERR_FASTCGI_UNSUPPORTED_VERSION'
      why = 'it uses an unsupported FastCGI version'
    } else if (status === EAGAIN || status === ETIMEDOUT) {
      code = 'ERR_FASTCGI_READ_TIMEOUT'
      why = `its head did not arrive whole within readTimeout (${l.readTimeoutMs} ms)`
    } else if (status > 0) {
      code = 'ERR_FASTCGI_PROTOCOL_ERROR'
      why = `reading it failed (errno ${status})`
    } else {
      code = 'ERR_FASTCGI_PROTOCOL_ERROR'
      why = 'its records are malformed'
    }
    const err = Object.assign(new FastCGIError(code, `a request was dropped unanswered: ${why}`), { status })
    if (this.listenerCount('clientError') > 0) {
      this.emit('clientError', err)
      return
    }
    reportDropped(err)
  }

  #updateRef(): void {
    if (!this.#handle) return
    const want = (this.#userRef && !this.#closed) || this.#active.size > 0
    if (want !== this.#refed) {
      this.#refed = want
      native.serverRef(this.#handle, want)
    }
  }

  #maybeDestroy(): void {
    // Pending accepts may still be served after close() (see _canAccept).
    if (!this.#closed || this.#active.size > 0 || this.#accepting > 0) return
    if (this.#handle) {
      // Requests that reached this process before close() are still served
      // (native Server::Close): while some are left, give the Requests that
      // just finished a moment to come back and accept them (bounded: a loop
      // that stopped accepting leaves them to be closed).
      if (this.#settleTimer) return
      if (native.serverStats(this.#handle).pendingConnections > 0 && Date.now() < this.#settleDeadline) {
        this.#settleTimer = setTimeout(() => {
          this.#settleTimer = undefined
          this.#maybeDestroy()
        }, 20)
        return
      }
      const handle = this.#handle
      this.#handle = undefined
      // Let the completions already queued (pending accepts answered
      // `false`) reach their promises before the native side goes away.
      this.#draining = handle
      setImmediate(() => {
        // Everything still queued (accepts answered "closed") is delivered.
        while (native.drain(handle, 0).more) this.#drain()
        this.#draining = undefined
        native.serverDestroy(handle)
        this.#pinned.clear()
        this.#held.clear()
        const waiters = this.#closeWaiters.splice(0)
        for (const w of waiters) w()
        this.emit('close')
      })
      return
    }
    if (this.#closeWaiters.length > 0 && !this.#handle) {
      // close() after the socket was already destroyed
      queueMicrotask(() => { for (const w of this.#closeWaiters.splice(0)) w() })
    }
  }
}

/** Validates every option before anything listens. */
function resolveOptions(options: SocketOptions): NativeServerOptions {
  const maxConns = positiveInt('maxConns', options.maxConns, 1024)
  return {
    maxConns,
    maxReqs: positiveInt('maxReqs', options.maxReqs, maxConns),
    maxThreads: positiveInt('maxThreads', options.maxThreads, 64),
    paramsMaxBytes: positiveInt('paramsMaxBytes', options.paramsMaxBytes, 1 << 20),
    paramsMaxCount: positiveInt('paramsMaxCount', options.paramsMaxCount, 1000),
    lingerMs: 2000,
    readTimeoutMs: positiveInt('readTimeout', options.readTimeout, 60000),
    idleTimeoutMs: options.idleTimeout === 0 ? 0 : positiveInt('idleTimeout', options.idleTimeout, 300_000),
    allowed: parseAllowedClients(options.allowedClients ?? process.env.FCGI_WEB_SERVER_ADDRS),
    ...(options.share ? { shareFd: options.share.fd, shareIndex: options.share.index } : {}),
  }
}

// libfcgi's codes for FCGX_AcceptError (fcgiapp.h), and errnos of a read
// that timed out (SO_RCVTIMEO).
const FCGX_UNSUPPORTED_VERSION = -2
const FCGX_PARAMS_ERROR = -4
const { EAGAIN, ETIMEDOUT } = os.constants.errno

const lastReport = new Map<string, { at: number; skipped: number }>()

/**
 * @internal A line on stderr for the operator, at most one every 10 s per
 * kind (with the count of those not shown), so a flood of bad requests
 * cannot flood the log.
 */
export function reportLimit(kind: string, err: Error): void {
  const now = Date.now()
  const last = lastReport.get(kind) ?? { at: 0, skipped: 0 }
  if (now - last.at < 10_000) {
    last.skipped++
    lastReport.set(kind, last)
    return
  }
  const more = last.skipped > 0 ? ` (and ${last.skipped} more since the last report)` : ''
  lastReport.set(kind, { at: now, skipped: 0 })
  process.stderr.write(`libfcgi: ${err.message}${more}\n`)
}

/** @internal The default report of a dropped request (no 'clientError' listener). */
export function reportDropped(err: Error): void {
  reportLimit('dropped', err)
}

/** @internal A unix socket file this process made: removed at close only if it is still that file. */
export interface SocketFile {
  path: string
  /** st_dev:st_ino of the socket we bound. */
  id: string
}

function fileId(path: string): string | undefined {
  try {
    const st = fs.lstatSync(path, { bigint: true })
    return st.isSocket() ? `${st.dev}:${st.ino}` : undefined
  } catch {
    return undefined
  }
}

/**
 * @internal Unlinks our socket file at close, unless somebody replaced it
 * since (another server now listening at that path keeps its socket).
 */
export function removeSocketFile(file: SocketFile | undefined): void {
  if (file === undefined || fileId(file.path) !== file.id) return
  try { fs.unlinkSync(file.path) } catch { /* already gone */ }
}

/** A user/group name or id -> the id (ERR_FASTCGI_UNKNOWN_USER / _GROUP when there is none). */
function resolveId(kind: 'user' | 'group', value: string | number | undefined): number {
  if (value === undefined) return -1
  if (typeof value === 'number') return value
  const id = native.lookupId(kind, value)
  if (typeof id !== 'number') throw systemError(id.errno, id.syscall)
  if (id < 0) throw new FastCGIError(kind === 'user' ? 'ERR_FASTCGI_UNKNOWN_USER' : 'ERR_FASTCGI_UNKNOWN_GROUP', `no such ${kind}: ${JSON.stringify(value)}`)
  return id
}

/** @internal Opens (or checks) the listening socket of `target`: the fd, and for a unix path the file to remove at close. */
export function openListenSocket(target: ListenTarget, backlog: number): { fd: number; socketFile?: SocketFile } {
  let result: FdResult
  if (target.kind === 'fd') {
    if (!native.isListening(target.fd)) {
      throw new FastCGIError('ERR_FASTCGI_NOT_FASTCGI', `fd ${target.fd} is not a listening socket`)
    }
    return { fd: target.fd }
  }
  if (target.kind === 'tcp') {
    result = native.listenTcp(target.host, target.port, backlog)
    if ('errno' in result) throw systemError(result.errno, result.syscall, { address: target.host || '::', port: target.port })
    return { fd: result.fd }
  }
  const uid = resolveId('user', target.owner)
  const gid = resolveId('group', target.group)
  result = native.listenUnix(target.path, backlog, target.mode ?? -1, uid, gid)
  if ('errno' in result) throw systemError(result.errno, result.syscall, { path: target.path })
  const id = fileId(target.path)
  return { fd: result.fd, ...(id !== undefined ? { socketFile: { path: target.path, id } } : {}) }
}

/**
 * libfcgi's `FCGX_OpenSocket(path, backlog)` and the seed's
 * `init_socket(port, backlog)`: opens a FastCGI listening socket.
 *
 * address: `9000`, `":9000"`, `"127.0.0.1:9000"`, `"[::1]:9000"`, a unix path
 * (`"/run/app.sock"`, with `mode`), `{ fd: 0 }`, or nothing for the socket a
 * web server passed as fd 0.
 */
export function initSocket(address?: ListenAddress, backlogOrOptions?: number | SocketOptions, maybeOptions?: SocketOptions): FcgiSocket {
  const options: SocketOptions = typeof backlogOrOptions === 'object' && backlogOrOptions !== null ? backlogOrOptions : (maybeOptions ?? {})
  const backlog = positiveInt('backlog', typeof backlogOrOptions === 'number' ? backlogOrOptions : options.backlog, 511)
  const target = parseListenAddress(address ?? { fd: FCGI_LISTENSOCK_FILENO }, options.mode)
  const resolved = resolveOptions(options)
  const { fd, socketFile } = openListenSocket(target, backlog)
  return new FcgiSocket(fd, target, resolved, socketFile)
}

let inherited: FcgiSocket | undefined

/** The socket a web server (or spawn-fcgi) passed as fd 0, opened once. */
export function inheritedSocket(): FcgiSocket {
  if (inherited && !inherited.closed) return inherited
  if (!native.isListening(FCGI_LISTENSOCK_FILENO)) {
    throw new FastCGIError('ERR_FASTCGI_NOT_FASTCGI',
      'fd 0 is not a listening socket: this process was not started by a FastCGI web server; pass a socket from initSocket(address)')
  }
  inherited = initSocket({ fd: FCGI_LISTENSOCK_FILENO })
  return inherited
}

/**
 * libfcgi's `FCGX_IsCGI()`: true when the process was started as a plain CGI
 * program (fd 0 is not a FastCGI listening socket).
 */
export function isCGI(): boolean {
  return !native.isListening(FCGI_LISTENSOCK_FILENO)
}
