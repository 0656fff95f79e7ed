// createServer(): node:http's Server, served over FastCGI.
import { EventEmitter } from 'node:events'
import type http from 'node:http'

import type { ListenAddress } from '../address.js'
import { Request as FcgiRequest } from '../request.js'
import { type FcgiSocket, FCGI_LISTENSOCK_FILENO, initSocket, reportDropped, reportLimit, type SocketAddress, type SocketOptions } from '../socket.js'
import { requestInfoFromParams } from './cgi.js'
import { CgiRequest, isCgiInvocation } from './cgi-mode.js'
import { systemdListenFd } from '../listen-fds.js'
import { createIncomingMessage, createServerResponse, FcgiConnection } from './connection.js'

/** node:http's IncomingMessage, plus the FastCGI params and role. */
export type IncomingMessage = http.IncomingMessage & {
  /** All FastCGI params (the CGI environment) of the request. */
  env: Record<string, string>
  role: 'RESPONDER' | 'AUTHORIZER' | 'FILTER'
}
export type ServerResponse = http.ServerResponse & {
  req: IncomingMessage
  /** FCGI_STDERR of the request: what is written here goes to the web server's error log. */
  readonly stderr: import('node:stream').Writable
}
export type RequestListener = (req: IncomingMessage, res: ServerResponse) => unknown

export interface ServerOptions extends Omit<SocketOptions, 'maxConns'> {
  /** Requests served in parallel (default 256). */
  maxConns?: number
  /** Connections held open at most, idle ones included (default max(1024, maxConns)). */
  maxConnections?: number
  /**
   * Milliseconds the web server may take to deliver the request body, as
   * node:http's requestTimeout: a request whose body is still incomplete
   * then is answered 408 (if nothing was sent yet; else cut short). Once the
   * body is in, the response may take as long as it needs (see
   * setTimeout() for an inactivity limit). 0 disables it. Default 300000.
   */
  requestTimeout?: number
  /**
   * Largest request body accepted, in bytes. A request declaring more
   * (CONTENT_LENGTH) is answered 413 without reaching the listener; a body
   * without a declared length that grows past it is cut off: the request
   * stream fails with ERR_LIBFCGI_BODY_TOO_LARGE and the response is 413 if
   * nothing was sent yet. Either way a line goes to the web server's error
   * log (FCGI_STDERR) and 'clientError' is emitted. Default: no limit (the
   * body is streamed, never buffered by this layer; web servers limit it
   * too: nginx's client_max_body_size is 1 MiB by default).
   */
  maxBodySize?: number
}

export interface ListenOptions {
  port?: number
  host?: string
  path?: string
  /** Unix socket permissions (0o660 or "660"). */
  mode?: number | string
  /** Unix socket owner and group: names or ids (chown needs root, usually). */
  owner?: string | number
  group?: string | number
  fd?: number
  backlog?: number
}

function toAddress(arg: unknown, host?: unknown): ListenAddress | undefined {
  if (arg === undefined || arg === null) return undefined
  if (typeof arg === 'number') return typeof host === 'string' ? { port: arg, host } : arg
  if (typeof arg === 'string') return /^\d+$/.test(arg) && typeof host === 'string' ? { port: Number(arg), host } : arg
  if (typeof arg === 'object') {
    const o = arg as ListenOptions
    if (o.fd !== undefined) return { fd: o.fd }
    if (o.path !== undefined) return { path: o.path, mode: typeof o.mode === 'string' ? parseInt(o.mode, 8) : o.mode, owner: o.owner, group: o.group }
    if (o.port !== undefined) return { port: Number(o.port), host: o.host }
    return undefined
  }
  const err = new TypeError(`listen() takes a port, a path or an options object, got ${typeof arg}`) as TypeError & { code: string }
  err.code = 'ERR_INVALID_ARG_TYPE'
  throw err
}

/**
 * A FastCGI server shaped like node:http's `Server`: `listen()`, `close()`,
 * `address()`, `ref()`, `unref()`, `listening`; events `'request'`,
 * `'listening'`, `'close'`, `'error'`.
 */
export class Server extends EventEmitter {
  readonly #options: ServerOptions
  #socket: FcgiSocket | undefined
  #loops: Array<Promise<void>> = []
  #unref = false
  /** CGI mode (see listen()): the one request being answered. */
  #cgi: CgiRequest | undefined
  /** Largest request body accepted, in bytes (see ServerOptions). */
  maxBodySize: number
  /** Milliseconds after which an unfinished response is ended (see ServerOptions). */
  requestTimeout: number
  /** Like node:http: inactivity timeout set on each request's socket (0: none). */
  timeout = 0

  constructor(options: ServerOptions = {}, listener?: RequestListener) {
    super()
    this.#options = options
    this.requestTimeout = options.requestTimeout ?? 300_000
    const max = options.maxBodySize
    if (max !== undefined && !(typeof max === 'number' && max >= 0 && (Number.isSafeInteger(max) || max === Infinity))) {
      throw Object.assign(new RangeError(`maxBodySize must be a non-negative integer (bytes) or Infinity, got ${String(max)}`), { code: 'ERR_OUT_OF_RANGE' })
    }
    this.maxBodySize = max ?? Infinity
    if (listener) this.on('request', listener)
  }

  /** The FastCGI socket once listening. */
  get fcgiSocket(): FcgiSocket | undefined {
    return this.#socket
  }

  get listening(): boolean {
    return this.#cgi !== undefined || (this.#socket !== undefined && !this.#socket.closed)
  }

  /**
   * `listen(port[, host][, backlog][, cb])`, `listen(path[, cb])`,
   * `listen({ port, host, path, mode, fd, backlog }[, cb])`, or `listen([cb])`:
   * the listening socket a web server (or spawn-fcgi) passed as fd 0, or
   * the one systemd passed as fd 3 (socket activation: LISTEN_FDS, with
   * LISTEN_PID this process).
   *
   * CGI mode: `listen()` without an address in a process that a web server
   * started as a plain CGI program (fd 0 is not a listening socket and
   * GATEWAY_INTERFACE is set) answers that one request from the
   * environment, stdin and stdout, then emits 'close' (the process should
   * then exit: let nothing else keep it alive). A response cut short sets
   * `process.exitCode` to 1 so that the web server logs a failure.
   */
  listen(...args: unknown[]): this {
    const cb = typeof args.at(-1) === 'function' ? (args.pop() as () => void) : undefined
    if (cb) this.once('listening', cb)
    const [first, second, third] = args
    let backlog: number | undefined
    let host: string | undefined
    if (typeof second === 'string') host = second
    if (typeof second === 'number') backlog = second
    if (typeof third === 'number') backlog = third
    if (first && typeof first === 'object' && (first as ListenOptions).backlog !== undefined) backlog = (first as ListenOptions).backlog
    try {
      if (this.listening) {
        const err = new Error('Listen method has been called more than once without closing.') as Error & { code: string }
        err.code = 'ERR_SERVER_ALREADY_LISTEN'
        throw err
      }
      let given = toAddress(first, host)
      // No address: systemd's socket (LISTEN_FDS, fd 3), else fd 0 (a web
      // server's, or CGI mode when fd 0 is no listening socket).
      const systemdFd = given === undefined ? systemdListenFd() : undefined
      if (systemdFd !== undefined) given = { fd: systemdFd }
      if (given === undefined && isCgiInvocation()) {
        const cgi = new CgiRequest()
        this.#cgi = cgi
        process.nextTick(() => {
          this.emit('listening')
          void this.#serveCgi(cgi)
        })
        return this
      }
      const address = given ?? { fd: FCGI_LISTENSOCK_FILENO }
      const parallel = this.#options.maxConns ?? 256
      const socket = initSocket(address, {
        ...this.#options,
        backlog: backlog ?? this.#options.backlog,
        maxConns: this.#options.maxConnections ?? Math.max(1024, parallel),
        maxReqs: this.#options.maxReqs ?? parallel,
      })
      this.#socket = socket
      // A request dropped unread (malformed, params over the limits): for
      // our 'clientError' listeners, else one line on stderr.
      socket.on('clientError', (err: Error) => {
        if (this.listenerCount('clientError') > 0) this.emit('clientError', err, null)
        else reportDropped(err)
      })
      // The connection limit reached: 'warning' listeners, else a stderr line.
      socket.on('warning', (err: Error) => {
        if (this.listenerCount('warning') > 0) this.emit('warning', err)
        else reportLimit('maxConns', err)
      })
      if (this.#unref) socket.unref()
      this.#loops = Array.from({ length: parallel }, () => this.#serve(socket))
      process.nextTick(() => this.emit('listening'))
    } catch (err) {
      // node:net reports a failed bind as a 'listen' error.
      const e = err as Error & { syscall?: string }
      if (e.syscall === 'bind') {
        e.syscall = 'listen'
        e.message = e.message.replace(/^bind /, 'listen ')
      }
      process.nextTick(() => this.emit('error', e))
    }
    return this
  }

  address(): SocketAddress | string | null {
    const a = this.#socket?.address() ?? null
    if (a && a.family === 'unix') return a.address
    return a
  }

  /** Stops accepting; requests in flight finish; then 'close'. */
  close(cb?: (err?: Error) => void): this {
    if (this.#cgi) {
      // CGI mode: 'close' comes once the one request is answered.
      if (cb) this.once('close', () => cb())
      return this
    }
    const socket = this.#socket
    if (!socket || socket.closed) {
      // As node:http: 'close' is emitted, and cb gets ERR_SERVER_NOT_RUNNING.
      if (cb) {
        this.once('close', () => {
          const err = new Error('Server is not running.') as Error & { code: string }
          err.code = 'ERR_SERVER_NOT_RUNNING'
          cb(err)
        })
      }
      process.nextTick(() => this.emit('close'))
      return this
    }
    if (cb) this.once('close', () => cb())
    void socket.close().then(() => Promise.all(this.#loops)).then(() => this.emit('close'))
    return this
  }

  /** Like node:http: the server keeps the process alive while listening (default). */
  ref(): this {
    this.#unref = false
    this.#socket?.ref()
    return this
  }

  unref(): this {
    this.#unref = true
    this.#socket?.unref()
    return this
  }

  setTimeout(ms: number, cb?: (socket: FcgiConnection) => void): this {
    this.timeout = ms
    if (cb) this.on('timeout', cb)
    return this
  }

  // One accept loop per parallel request, as libfcgi's threaded example.
  async #serve(socket: FcgiSocket): Promise<void> {
    const fcgi = new FcgiRequest(socket)
    const slot: Slot = { conn: undefined }
    // One 'aborted' listener for the life of the slot (the Request object
    // serves request after request), not one per request.
    fcgi.on('aborted', () => slot.conn?._aborted())
    // The socket holds the Request (and through its listeners this loop)
    // while the loop runs, whatever the handler keeps (see FcgiSocket._hold).
    socket._hold(fcgi)
    try {
      while (await fcgi.accept()) {
        try {
          await this.#handle(fcgi, slot)
        } catch (err) {
          this.#report(err as Error)
        }
        slot.conn = undefined
      }
    } finally {
      socket._release(fcgi)
    }
  }

  /** CGI mode: the one request, then 'close'. */
  async #serveCgi(cgi: CgiRequest): Promise<void> {
    const slot: Slot = { conn: undefined }
    cgi.on('aborted', () => slot.conn?._aborted())
    try {
      // CgiRequest has the part of a FastCGI Request the http layer uses (see cgi-mode.ts).
      await this.#handle(cgi as unknown as FcgiRequest, slot)
    } catch (err) {
      this.#report(err as Error)
    }
    if (cgi.cut && process.exitCode === undefined) process.exitCode = 1
    this.#cgi = undefined
    this.emit('close')
  }

  #handle(fcgi: FcgiRequest, slot: Slot): Promise<void> {
    const params = fcgi._rawParams()
    const info = requestInfoFromParams(params)
    const conn = new FcgiConnection(fcgi, info)
    slot.conn = conn
    const req = createIncomingMessage(conn, info, params) as IncomingMessage
    const res = createServerResponse(req, conn) as ServerResponse
    res.on('finish', endSocket)
    if (fcgi.aborted) process.nextTick(abortNT, conn)  // the abort came with the request
    if (this.timeout > 0) {
      conn.setTimeout(this.timeout, () => {
        const handled = res.emit('timeout', conn) || req.emit('timeout', conn) || this.emit('timeout', conn)
        if (!handled) conn.destroy()
      })
    }
    let done: Promise<void>
    if (this.requestTimeout > 0 && !req.complete) {
      const timer = setTimeout(() => {
        if (!req.complete) this.#timedOut(req, res, conn)
      }, this.requestTimeout)
      timer.unref()
      req.once('end', () => clearTimeout(timer))
      done = new Promise<void>((resolve) => {
        conn._onClose = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    } else {
      done = new Promise<void>((resolve) => {
        conn._onClose = resolve
      })
    }

    if (this.maxBodySize !== Infinity) {
      const declared = info.headers['content-length']
      if (declared !== undefined && Number(declared) > this.maxBodySize) {
        this.#bodyTooLarge(req, res, `request body of ${declared} bytes (CONTENT_LENGTH) over maxBodySize ${this.maxBodySize}`)
        return done
      }
      conn._bodyLimit = this.maxBodySize
      conn._onBodyTooLarge = (): void => this.#bodyTooLarge(req, res, `request body over maxBodySize ${this.maxBodySize} bytes (no CONTENT_LENGTH)`)
    }
    const listeners = this.listeners('request') as RequestListener[]
    if (listeners.length === 0) {
      res.statusCode = 404
      res.end()
    }
    for (const listener of listeners) {
      try {
        const result = listener.call(this, req, res)
        if (result && typeof (result as Promise<unknown>).then === 'function') {
          ;(result as Promise<unknown>).then(undefined, (err: unknown) => this.#listenerFailed(err as Error, req, res))
        }
      } catch (err) {
        this.#listenerFailed(err as Error, req, res)
      }
    }
    return done
  }

  /** A listener that throws (or whose promise rejects): 500 if nothing was sent, and a report. */
  #listenerFailed(err: Error, req: IncomingMessage, res: ServerResponse): void {
    this.#report(err, req, res)
    if (res.writableEnded) return
    if (res.headersSent || !endWith(res, 500, 'Internal Server Error\n')) res.destroy(err)
  }

  /**
   * maxBodySize exceeded: 413 if nothing was sent (else the response is cut
   * short), a line in the web server's error log, and 'clientError'.
   */
  #bodyTooLarge(req: IncomingMessage, res: ServerResponse, why: string): void {
    const err = Object.assign(new Error(why), { code: 'ERR_LIBFCGI_BODY_TOO_LARGE', statusCode: 413 })
    res.stderr.write(`libfcgi: ${req.method} ${req.url}: ${why}: answered 413\n`)
    this.emit('clientError', err, req.socket)
    // req fails with err once the response is over (destroying it now would
    // cut the response short, as destroying a node:http request resets its socket).
    ;(req.socket as unknown as FcgiConnection)._reqError = err
    if (res.writableEnded) return
    if (res.headersSent || !endWith(res, 413, 'Payload Too Large\n')) res.destroy(err)
  }

  /** requestTimeout: 408 if nothing was sent; else the response is cut short. */
  #timedOut(req: IncomingMessage, res: ServerResponse, conn: FcgiConnection): void {
    if (res.writableEnded) return
    // As node:http: 'clientError' with ERR_HTTP_REQUEST_TIMEOUT (here for
    // information: the answer follows), and a line for the web server's log.
    const sent = res.headersSent
    const err = Object.assign(new Error(`request body not complete after requestTimeout ${this.requestTimeout} ms`), { code: 'ERR_HTTP_REQUEST_TIMEOUT' })
    res.stderr.write(`libfcgi: ${req.method} ${req.url}: ${err.message}: ${sent ? 'response cut short' : 'answered 408'}\n`)
    this.emit('clientError', err, conn)
    if (sent || !endWith(res, 408, undefined)) conn.destroy()
  }

  /** 'error' is for the listening socket (as node:http); listener failures go to 'requestError', else stderr. */
  #report(err: Error, req?: IncomingMessage, res?: ServerResponse): void {
    if (this.listenerCount('requestError') > 0) this.emit('requestError', err, req, res)
    else console.error('libfcgi: request listener failed:', err)
  }
}

/** What a slot's accept loop serves now. */
interface Slot {
  conn: FcgiConnection | undefined
}

/** The response is complete: the FastCGI request is finished (as node:http ends a connection it will not reuse). */
function endSocket(this: http.ServerResponse): void {
  ;(this.socket as unknown as FcgiConnection | null)?.end()
}

function abortNT(conn: FcgiConnection): void {
  conn._aborted()
}

/**
 * Answers with a plain status (and body); false when node:http refused (the
 * app left headers it cannot send): the caller then destroys the response.
 */
function endWith(res: ServerResponse, status: number, body: string | undefined): boolean {
  try {
    res.statusCode = status
    if (body !== undefined) res.setHeader('Content-Type', 'text/plain; charset=utf-8')
    res.end(body)
    return true
  } catch {
    return false
  }
}

/**
 * node:http's `createServer([options], listener)`, served over FastCGI:
 *
 * ```ts
 * createServer(app).listen('/run/app.sock')   // or 9000, or nothing: fd 0
 * ```
 *
 * A listener that throws or returns a rejected promise gets a 500 for that
 * request (when nothing was sent yet) and the error goes to the server's
 * `'requestError'` event (or stderr when nobody listens).
 */
export function createServer(listener?: RequestListener): Server
export function createServer(options: ServerOptions, listener?: RequestListener): Server
export function createServer(a?: ServerOptions | RequestListener, b?: RequestListener): Server {
  const options = typeof a === 'function' || a === undefined ? {} : a
  const listener = typeof a === 'function' ? a : b
  if (listener !== undefined && typeof listener !== 'function') {
    const err = new TypeError('the request listener must be a function') as TypeError & { code: string }
    err.code = 'ERR_INVALID_ARG_TYPE'
    throw err
  }
  return new Server(options, listener)
}
