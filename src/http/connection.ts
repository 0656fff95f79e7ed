// The one place that touches node:http internals (see test/http/internals.test.ts).
//
// node:http's IncomingMessage and ServerResponse are used as they are, so
// that every framework sees the real classes (Express even replaces their
// prototypes with its own, which chain to node's). What they normally get
// from a TCP connection comes here from a FastCGI request:
//   - `FcgiConnection` stands in for the socket: ServerResponse writes its
//     HTTP/1.1 head and body into it; the head becomes a CGI head and
//     everything goes to FCGI_STDOUT. It carries remoteAddress & co.
//   - the request body is pushed into the IncomingMessage from FCGI_STDIN.
import { EventEmitter } from 'node:events'
import http from 'node:http'
import type { Readable } from 'node:stream'

import type { Request as FcgiRequest } from '../request.js'
import { type CgiRequestInfo, ChunkedDecoder, envFromParams, httpHeadToCgi } from './cgi.js'

type Callback = (err?: Error | null) => void

/** net.Socket's buffer size: write() says "wait for 'drain'" beyond it. */
const HIGH_WATER_MARK = 64 * 1024

// Request/response pieces node:http keeps on a message; typed here once.
type Response = http.ServerResponse & { _header: string | null; chunkedEncoding: boolean }

/**
 * The socket of one FastCGI request, as node:http's messages see it.
 *
 * Not a stream.Duplex: a plain EventEmitter with the part of net.Socket's
 * surface that node:http's ServerResponse and IncomingMessage use
 * (`write()` with callbacks and backpressure, `cork()`/`uncork()`, `end()`,
 * `destroy()`, `writable`, `destroyed`, `writableLength`, `'drain'`,
 * `'close'`, `setTimeout()`) and what frameworks read (remoteAddress & co).
 * Building a Duplex per request, and passing every byte through it and then
 * through FCGI_STDOUT's Writable, cost more than the rest of the request.
 * Bytes go straight into the FastCGI request's output queue.
 */
export class FcgiConnection extends EventEmitter {
  readonly remoteAddress: string | undefined
  readonly remotePort: number | undefined
  readonly remoteFamily: string | undefined
  readonly localAddress: string | undefined
  readonly localPort: number | undefined
  /** True when the web server got the request over TLS (HTTPS=on), as tls.TLSSocket. */
  readonly encrypted: boolean | undefined
  /** The FastCGI request underneath. */
  readonly fcgi: FcgiRequest
  /** node:http's link from a socket to the response it carries (set by res.assignSocket()). */
  _httpMessage: http.ServerResponse | null = null
  /** As net.Socket: false once ended or destroyed. */
  writable = true
  /** As net.Socket's: the request body reaches the IncomingMessage directly (see attachBody). */
  readable = true
  destroyed = false
  /** True once 'close' was emitted. */
  closed = false
  /** Bytes written whose write callback has not run yet (as Writable's writableLength). */
  writableLength = 0
  readonly writableHighWaterMark = HIGH_WATER_MARK
  readonly readableHighWaterMark = HIGH_WATER_MARK
  /**
   * The one piece of Writable state node:http touches directly
   * (ServerResponse.end() sets `corked = 1`, then calls uncork()). Corking
   * changes nothing here: writes wait in the request's output queue until
   * the check phase of the loop turn anyway (see Request._write).
   */
  readonly _writableState = { corked: 0 }
  /** The IncomingMessage of this request (destroyed with the connection). */
  _req: http.IncomingMessage | undefined
  /** @internal maxBodySize of the server: bytes of body accepted (Infinity: any). */
  _bodyLimit = Infinity
  /** @internal the error req fails with at the end (maxBodySize), instead of none. */
  _reqError: Error | undefined
  /** @internal called once when the body grows past _bodyLimit. */
  _onBodyTooLarge: (() => void) | undefined
  /** Called once after 'close' (the server's per-request cleanup). */
  _onClose: (() => void) | undefined
  #headDone = false
  #headBuffer = ''
  #dechunk: ChunkedDecoder | undefined
  #timer: NodeJS.Timeout | undefined
  /** Bytes handed to the request's output queue whose native write has not completed. */
  #inFlight = 0
  #needDrain = false

  constructor(fcgi: FcgiRequest, info: CgiRequestInfo) {
    super()
    this.fcgi = fcgi
    this.remoteAddress = info.remoteAddress
    this.remotePort = info.remotePort
    this.remoteFamily = info.remoteAddress === undefined ? undefined : info.remoteAddress.includes(':') ? 'IPv6' : 'IPv4'
    this.localAddress = info.localAddress
    this.localPort = info.localPort
    this.encrypted = info.encrypted ? true : undefined
  }

  get writableCorked(): number {
    return this._writableState.corked
  }

  get writableEnded(): boolean {
    return !this.writable
  }

  cork(): void {
    this._writableState.corked++
  }

  uncork(): void {
    if (this._writableState.corked > 0) this._writableState.corked--
  }

  /**
   * As net.Socket's write(): the callback runs once the bytes are queued for
   * FCGI_STDOUT while less than the high-water mark waits there, else once
   * the native write took them; false means "wait for 'drain'".
   */
  write(data: string | Uint8Array, encoding?: BufferEncoding | Callback | null, cb?: Callback): boolean {
    if (typeof encoding === 'function') {
      cb = encoding
      encoding = undefined
    }
    if (this.destroyed || !this.writable) {
      const err = new Error(this.destroyed ? 'Cannot call write after a stream was destroyed' : 'write after end') as Error & { code: string }
      err.code = this.destroyed ? 'ERR_STREAM_DESTROYED' : 'ERR_STREAM_WRITE_AFTER_END'
      if (cb) process.nextTick(cb, err)
      return false
    }
    let chunk = this.#headDone && !this.#dechunk ? toBuffer(data, encoding) : this.#convert(data, encoding)
    this._active()
    if (chunk !== undefined && chunk.length > 0 && !this.fcgi.aborted) {
      const len = chunk.length
      this.#inFlight += len
      this.writableLength += len
      if (this.#inFlight < HIGH_WATER_MARK) {
        // Room left: acknowledged at once (as a socket's buffer would), so
        // that a response ended right after its last write leaves together
        // with FCGI_END_REQUEST. The bytes leave later (at the end of the
        // loop turn, or read in place by a worker): the app's own memory is
        // copied, as a socket would have taken it by now, so that the app
        // may reuse a Buffer once the callback ran.
        if (chunk === data || (typeof data !== 'string' && chunk.buffer === (data as Uint8Array).buffer)) chunk = Buffer.from(chunk)
        this.fcgi._write(1, chunk, (): void => this.#written(len, false, undefined))
        process.nextTick(acked, this, len, cb)
      } else {
        // Backpressure: acknowledged once the native write took the bytes.
        this.fcgi._write(1, chunk, (): void => this.#written(len, true, cb))
      }
    } else {
      // Nothing to send (an empty write, a 1xx head, framing only), or the
      // web server is gone: dropped, as node:http does for a closed socket.
      if (cb) process.nextTick(cb)
    }
    if (this.writableLength < HIGH_WATER_MARK) return true
    this.#needDrain = true
    return false
  }

  /** A native write (or the finish that carried it) completed. */
  #written(len: number, deferred: boolean, cb: Callback | undefined): void {
    this.#inFlight -= len
    if (deferred) acked(this, len, cb)
  }

  /** @internal the write callback ran: `len` bytes left writableLength. */
  _acked(len: number): void {
    this.writableLength -= len
    if (this.#needDrain && this.writableLength === 0 && !this.destroyed) {
      this.#needDrain = false
      this.emit('drain')
      // node:http's server passes a socket's 'drain' on to the response.
      const res = this._httpMessage
      if (res && !res.writableFinished) res.emit('drain')
    }
  }

  /**
   * The bytes to send for what node:http wrote while the head is not out
   * yet (or with chunked framing to remove): the HTTP head becomes a CGI
   * head. undefined: nothing to send yet.
   */
  #convert(data: string | Uint8Array, encoding: BufferEncoding | null | undefined): Buffer | undefined {
    if (!this.#headDone) {
      const res = this._httpMessage as Response | null
      const header = res?._header
      // The usual case: node:http writes its head as a string, alone or in
      // front of the first body string, and it is the response's own
      // `_header`: converted as a string, encoded once, with the encoding
      // node:http would have used for the whole.
      if (typeof data === 'string' && this.#headBuffer === '' && typeof header === 'string' && header.length > 0 && data.startsWith(header) && !res!.chunkedEncoding) {
        this.#headDone = true
        const head = httpHeadToCgi(header)
        return Buffer.from(data.length === header.length ? head : head + data.slice(header.length), encoding ?? 'utf8')
      }
      // Anything else: collected as bytes until the head is complete.
      // Interim 1xx heads (writeContinue, writeEarlyHints) come before it:
      // CGI has no way to send them (web servers drop them from upstreams
      // too), so they are skipped.
      this.#headBuffer += toBuffer(data, encoding).toString('latin1')
      let end: number
      for (;;) {
        end = this.#headBuffer.indexOf('\r\n\r\n')
        if (end < 0 || !/^HTTP\/\d\.\d 1\d\d/.test(this.#headBuffer)) break
        this.#headBuffer = this.#headBuffer.slice(end + 4)
      }
      if (end < 0) return undefined
      this.#headDone = true
      const head = httpHeadToCgi(this.#headBuffer.slice(0, end + 4))
      let rest = Buffer.from(this.#headBuffer.slice(end + 4), 'latin1')
      this.#headBuffer = ''
      // The app set Transfer-Encoding: chunked itself: node:http frames the
      // body, the web server will frame it again for its client.
      if (res?.chunkedEncoding) this.#dechunk = new ChunkedDecoder()
      if (this.#dechunk) rest = Buffer.concat(this.#dechunk.push(rest))
      return rest.length === 0 ? Buffer.from(head, 'latin1') : Buffer.concat([Buffer.from(head, 'latin1'), rest])
    }
    return Buffer.concat(this.#dechunk!.push(toBuffer(data, encoding)))
  }

  /** As net.Socket's end(): no more writes; the FastCGI request is finished, then 'close'. */
  end(data?: string | Uint8Array | Callback, encoding?: BufferEncoding | Callback, cb?: Callback): this {
    if (typeof data === 'function') {
      cb = data
      data = undefined
    } else if (typeof encoding === 'function') {
      cb = encoding
      encoding = undefined
    }
    if (data !== undefined && data !== null) this.write(data, encoding as BufferEncoding | undefined)
    if (cb) this.once('finish', cb)
    if (!this.writable || this.destroyed) return this
    this.writable = false
    this.fcgi.finish().then(() => process.nextTick(closeNT, this, null, true), () => process.nextTick(closeNT, this, null, true))
    return this
  }

  /**
   * As net.Socket's destroy(). Destroyed before the response ended (a
   * listener failed after sending headers, a timeout, res.destroy()): the
   * web server must see the response cut short, as a client of node:http
   * sees a reset socket. Otherwise (or once the web server is gone) the
   * request is finished.
   */
  destroy(err?: Error | null): this {
    if (this.destroyed) return this
    this.destroyed = true
    this.writable = false
    this.readable = false
    if (this.#timer) clearTimeout(this.#timer)
    const res = this._httpMessage
    const cut = !this.fcgi.aborted && res !== null && res.writableFinished !== true
    const end = cut ? this.fcgi.abort() : this.fcgi.finish()
    end.then(() => process.nextTick(closeNT, this, err ?? null, false), () => process.nextTick(closeNT, this, null, false))
    return this
  }

  destroySoon(): void {
    this.end()
  }

  /** @internal the FastCGI request is over: 'finish' (after end()), 'error', 'close'. */
  _closed(err: Error | null, ended: boolean): void {
    if (this.closed) return
    this.closed = true
    this.destroyed = true
    this.writable = false
    this.readable = false
    if (this.#timer) clearTimeout(this.#timer)
    if (ended) this.emit('finish')
    if (err && this.listenerCount('error') > 0) this.emit('error', err)
    this.emit('close', err !== null)
    const req = this._req
    if (req && !req.readableEnded && !req.destroyed) req.destroy(this._reqError)
    const onClose = this._onClose
    this._onClose = undefined
    onClose?.()
  }

  /** @internal the web server aborted the request (FCGI_ABORT_REQUEST or a dropped connection). */
  _aborted(): void {
    if (this.closed) return
    // As node:http when the client goes away: 'aborted'/'close' on req,
    // 'close' on res; whatever is written after that is dropped.
    const req = this._req
    if (req && !req.destroyed) req.destroy(abortedError())
    this.destroy()
  }

  pause(): this {
    return this
  }

  resume(): this {
    return this
  }

  // ---- what net.Socket offers and frameworks call

  /** An inactivity timeout, as net.Socket's: every read or write restarts it. */
  setTimeout(ms: number, callback?: () => void): this {
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = undefined
    if (callback) this.once('timeout', callback)
    if (ms > 0 && !this.destroyed) {
      this.#timer = setTimeout(() => this.emit('timeout'), ms)
      this.#timer.unref()
    }
    return this
  }

  /** @internal bytes moved: restart the inactivity timeout */
  _active(): void {
    this.#timer?.refresh()
  }

  setNoDelay(): this {
    return this
  }

  setKeepAlive(): this {
    return this
  }

  ref(): this {
    return this
  }

  unref(): this {
    return this
  }

  address(): { address: string; port: number; family: string } | Record<string, never> {
    if (this.localAddress === undefined) return {}
    return { address: this.localAddress, port: this.localPort ?? 0, family: this.localAddress.includes(':') ? 'IPv6' : 'IPv4' }
  }
}

function acked(conn: FcgiConnection, len: number, cb: Callback | undefined): void {
  conn._acked(len)
  cb?.()
}

function closeNT(conn: FcgiConnection, err: Error | null, ended: boolean): void {
  conn._closed(err, ended)
}

function toBuffer(data: string | Uint8Array, encoding: BufferEncoding | null | undefined): Buffer {
  if (typeof data === 'string') return Buffer.from(data, encoding ?? 'utf8')
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
}

// req.env, the request's CGI environment, is built on first read: making an
// object keyed by every param costs about a microsecond per request, which a
// handler that never reads it should not pay. The lazy property cannot be an
// accessor of each req (one defined per instance made node:http's own work
// on req twice as slow), nor of a prototype of ours (Express replaces req's
// prototype with its own, which chains to IncomingMessage.prototype): it is
// an accessor on http.IncomingMessage.prototype, defined once, that answers
// only for our requests (undefined for any other IncomingMessage, as before).
// The first read replaces it on that req by a plain data property.
// Symbol.for: the ESM and CommonJS builds, if both are loaded, share the accessor.
const kParams = Symbol.for('libfcgi.params')
if (!Object.prototype.hasOwnProperty.call(http.IncomingMessage.prototype, 'env')) {
  Object.defineProperty(http.IncomingMessage.prototype, 'env', {
    configurable: true,
    enumerable: false,
    get(this: { [kParams]?: string }): Record<string, string> | undefined {
      const params = this[kParams]
      if (params === undefined) return undefined
      const env = envFromParams(params)
      Object.defineProperty(this, 'env', { value: env, writable: true, enumerable: true, configurable: true })
      return env
    },
    set(this: object, value: unknown): void {
      Object.defineProperty(this, 'env', { value, writable: true, enumerable: true, configurable: true })
    },
  })
}

/** An IncomingMessage for a FastCGI request, its body fed from FCGI_STDIN. */
export function createIncomingMessage(conn: FcgiConnection, info: CgiRequestInfo, params: string): http.IncomingMessage & { env: Record<string, string>; role: string } {
  const req = new http.IncomingMessage(conn as unknown as import('node:net').Socket) as http.IncomingMessage & { env: Record<string, string>; role: string }
  req.method = info.method
  req.url = info.url
  req.httpVersion = info.httpVersion
  req.httpVersionMajor = info.httpVersionMajor
  req.httpVersionMinor = info.httpVersionMinor
  req.headers = info.headers
  req.rawHeaders = info.rawHeaders
  // req.env: made from these on first read (see the accessor below).
  ;(req as unknown as { [kParams]: string })[kParams] = params
  req.role = conn.fcgi.role
  // As node:http's parser: a request without a body is complete at once.
  const length = info.headers['content-length']
  if ((length === undefined || length === '0') && info.headers['transfer-encoding'] === undefined) req.complete = true
  attachBody(req, conn.fcgi)
  conn._req = req
  return req
}

function attachBody(req: http.IncomingMessage, fcgi: FcgiRequest): void {
  // FCGI_STDIN's stream is made only when the app reads the body.
  let stdin: Readable | undefined
  // Own properties: they survive a framework replacing the prototype.
  const state = req as unknown as { _read: (n: number) => void; _consuming: boolean }
  state._read = () => {
    state._consuming = true  // node:http's flag: the app reads the body
    if (stdin === undefined) {
      const input = (stdin = fcgi.stdin)
      const conn = req.socket as unknown as FcgiConnection
      let received = 0
      input.on('data', (chunk: Buffer) => {
        conn._active()
        received += chunk.length
        if (received > conn._bodyLimit) {
          // maxBodySize: no more of it reaches the app (see Server#bodyTooLarge).
          input.pause()
          const report = conn._onBodyTooLarge
          conn._onBodyTooLarge = undefined
          report?.()
          return
        }
        if (!req.push(chunk)) input.pause()
      })
      input.once('end', () => {
        req.complete = true
        req.push(null)
      })
      // The web server gone mid-body: node:http's error for that is ECONNRESET.
      input.once('error', (err: Error & { code?: string }) => req.destroy(err.code === 'ERR_FASTCGI_REQUEST_ABORTED' ? abortedError() : err))
    } else {
      stdin.resume()
    }
  }
}

/** A ServerResponse writing CGI to FCGI_STDOUT through `conn`. */
export function createServerResponse(req: http.IncomingMessage, conn: FcgiConnection): http.ServerResponse {
  const res = new http.ServerResponse(req)
  // Never chunked framing (the web server frames the body for its client),
  // but Content-Length computed by node:http itself where it knows the whole
  // body (res.end(body)): _removedTE is what a user's
  // res.removeHeader('Transfer-Encoding') sets. No keep-alive either: the web
  // server owns the client connection.
  ;(res as unknown as { _removedTE: boolean })._removedTE = true
  res.shouldKeepAlive = false
  // A response announcing trailers (a Trailer header) needs chunked framing,
  // or node:http throws ERR_HTTP_TRAILER_INVALID: let node frame it; the
  // socket shim removes the framing and the trailers (CGI has none).
  ;(res as unknown as { _storeHeader: typeof storeHeader })._storeHeader = storeHeader
  res.assignSocket(conn as unknown as import('node:net').Socket)
  // FCGI_STDERR: lines written here land in the web server's error log.
  ;(res as unknown as { stderr: unknown }).stderr = conn.fcgi.stderr
  return res
}

// node:http's own head builder (OutgoingMessage.prototype._storeHeader).
const nodeStoreHeader = (http.OutgoingMessage.prototype as unknown as { _storeHeader: (line: string, headers: unknown) => void })._storeHeader

/** _storeHeader of our responses: chunked framing when trailers are announced (see createServerResponse). */
function storeHeader(this: http.ServerResponse, line: string, headers: unknown): void {
  if (announcesTrailers(this, headers)) (this as unknown as { _removedTE: boolean })._removedTE = false
  nodeStoreHeader.call(this, line, headers)
}

function announcesTrailers(res: http.ServerResponse, headers: unknown): boolean {
  if (res.hasHeader('trailer')) return true
  if (Array.isArray(headers)) {
    // [[name, value], ...] or [name, value, name, value, ...]
    return headers.some((h, i) => (Array.isArray(h) ? String(h[0]).toLowerCase() === 'trailer' : i % 2 === 0 && String(h).toLowerCase() === 'trailer'))
  }
  if (headers && typeof headers === 'object') {
    return Object.values(headers as Record<string, unknown>).some((v) => Array.isArray(v) && String(v[0]).toLowerCase() === 'trailer')
      || Object.keys(headers).some((k) => k.toLowerCase() === 'trailer')
  }
  return false
}

/** What node:http gives req's 'error' listeners when the client goes away. */
export function abortedError(): Error {
  const err = new Error('aborted') as Error & { code: string }
  err.code = 'ECONNRESET'
  return err
}
