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
import http from 'node:http'
import { Duplex } from 'node:stream'

import type { Request as FcgiRequest } from '../request.js'
import { type CgiRequestInfo, ChunkedDecoder, envFromPairs, httpHeadToCgi } from './cgi.js'

type Callback = (err?: Error | null) => void

/** The socket of one FastCGI request, as node:http's messages see it. */
export class FcgiConnection extends Duplex {
  readonly remoteAddress: string | undefined
  readonly remotePort: number | undefined
  readonly remoteFamily: string | undefined
  readonly localAddress: string | undefined
  readonly localPort: number | undefined
  /** True when the web server got the request over TLS (HTTPS=on), as tls.TLSSocket. */
  readonly encrypted: boolean | undefined
  /** The FastCGI request underneath. */
  readonly fcgi: FcgiRequest
  #headDone = false
  #headBuffer = ''
  #dechunk: ChunkedDecoder | undefined
  #timer: NodeJS.Timeout | undefined

  constructor(fcgi: FcgiRequest, info: CgiRequestInfo) {
    super({ allowHalfOpen: true, decodeStrings: true, highWaterMark: 64 * 1024 })
    this.fcgi = fcgi
    this.remoteAddress = info.remoteAddress
    this.remotePort = info.remotePort
    this.remoteFamily = info.remoteAddress === undefined ? undefined : info.remoteAddress.includes(':') ? 'IPv6' : 'IPv4'
    this.localAddress = info.localAddress
    this.localPort = info.localPort
    if (info.encrypted) this.encrypted = true
  }

  override _read(): void {
    // The request body reaches the IncomingMessage directly (see attachBody).
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: Callback): void {
    this.#send(chunk, cb)
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: Callback): void {
    this.#send(chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk)), cb)
  }

  #send(chunk: Buffer, cb: Callback): void {
    this._active()
    if (!this.#headDone) {
      // ServerResponse writes its complete head first (alone, or in front of
      // the first body chunk of a string write). Interim 1xx heads
      // (writeContinue, writeEarlyHints) come before it: CGI has no way to
      // send them (web servers drop them from upstreams too), so they are
      // skipped.
      this.#headBuffer += chunk.toString('latin1')
      let end: number
      for (;;) {
        end = this.#headBuffer.indexOf('\r\n\r\n')
        if (end < 0 || !/^HTTP\/\d\.\d 1\d\d/.test(this.#headBuffer)) break
        this.#headBuffer = this.#headBuffer.slice(end + 4)
      }
      if (end < 0) {
        cb()
        return
      }
      this.#headDone = true
      const head = httpHeadToCgi(this.#headBuffer.slice(0, end + 4))
      let rest = Buffer.from(this.#headBuffer.slice(end + 4), 'latin1')
      this.#headBuffer = ''
      // The app set Transfer-Encoding: chunked itself: node:http frames the
      // body, the web server will frame it again for its client.
      if ((this as { _httpMessage?: { chunkedEncoding?: boolean } })._httpMessage?.chunkedEncoding) this.#dechunk = new ChunkedDecoder()
      if (this.#dechunk) rest = Buffer.concat(this.#dechunk.push(rest))
      chunk = rest.length === 0 ? Buffer.from(head, 'latin1') : Buffer.concat([Buffer.from(head, 'latin1'), rest])
    } else if (this.#dechunk) {
      chunk = Buffer.concat(this.#dechunk.push(chunk))
      if (chunk.length === 0) {
        cb()
        return
      }
    }
    const stdout = this.fcgi.stdout
    if (stdout.destroyed || this.fcgi.aborted) {
      cb()  // the web server is gone: dropped, as node:http does for a closed socket
      return
    }
    // Acknowledge at once while FCGI_STDOUT has room, so that a response
    // ended right after its last write leaves with FCGI_END_REQUEST in one
    // write; otherwise wait for the native write (backpressure).
    if (stdout.write(chunk)) {
      process.nextTick(cb)
      return
    }
    const done = () => {
      stdout.off('drain', done)
      stdout.off('close', done)
      cb()
    }
    stdout.on('drain', done)
    stdout.on('close', done)
  }

  override _final(cb: Callback): void {
    this.fcgi.finish().then(() => cb(), cb)
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    if (this.#timer) clearTimeout(this.#timer)
    // Destroyed before the response ended (a listener failed after sending
    // headers, a timeout, res.destroy()): the web server must see the
    // response cut short, as a client of node:http sees a reset socket.
    // Otherwise (or once the web server is gone) the request is finished.
    const res = (this as { _httpMessage?: { writableFinished?: boolean } })._httpMessage
    const cut = !this.fcgi.aborted && res !== undefined && res.writableFinished !== true
    const end = cut ? this.fcgi.abort() : this.fcgi.finish()
    end.then(() => cb(this.listenerCount('error') > 0 ? err : null), () => cb(null))
  }

  // ---- what net.Socket offers and frameworks call

  /** An inactivity timeout, as net.Socket's: every read or write restarts it. */
  setTimeout(ms: number, callback?: () => void): this {
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = undefined
    if (callback) this.once('timeout', callback)
    if (ms > 0) {
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

  destroySoon(): void {
    this.end()
  }
}

/** An IncomingMessage for a FastCGI request, its body fed from FCGI_STDIN. */
export function createIncomingMessage(conn: FcgiConnection, info: CgiRequestInfo, pairs: ReadonlyArray<readonly [string, string]>): http.IncomingMessage & { env: Record<string, string>; role: string } {
  const req = new http.IncomingMessage(conn as unknown as import('node:net').Socket) as http.IncomingMessage & { env: Record<string, string>; role: string }
  req.method = info.method
  req.url = info.url
  req.httpVersion = info.httpVersion
  req.httpVersionMajor = info.httpVersionMajor
  req.httpVersionMinor = info.httpVersionMinor
  req.headers = info.headers
  req.rawHeaders = info.rawHeaders
  // Made on first read, from this request's own params.
  req.env = envFromPairs(pairs)
  req.role = conn.fcgi.role
  // As node:http's parser: a request without a body is complete at once.
  const length = info.headers['content-length']
  if ((length === undefined || length === '0') && info.headers['transfer-encoding'] === undefined) req.complete = true
  attachBody(req, conn.fcgi)
  return req
}

function attachBody(req: http.IncomingMessage, fcgi: FcgiRequest): void {
  const stdin = fcgi.stdin
  let flowing = false
  // Own properties: they survive a framework replacing the prototype.
  const state = req as unknown as { _read: (n: number) => void; _consuming: boolean }
  state._read = () => {
    state._consuming = true  // node:http's flag: the app reads the body
    if (!flowing) {
      flowing = true
      stdin.on('data', (chunk: Buffer) => {
        ;(req.socket as unknown as FcgiConnection)._active()
        if (!req.push(chunk)) stdin.pause()
      })
      stdin.once('end', () => {
        req.complete = true
        req.push(null)
      })
      // The web server gone mid-body: node:http's error for that is ECONNRESET.
      stdin.once('error', (err: Error & { code?: string }) => req.destroy(err.code === 'ERR_FASTCGI_REQUEST_ABORTED' ? abortedError() : err))
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
  const store = (res as unknown as { _storeHeader: (line: string, headers: unknown) => void })._storeHeader
  ;(res as unknown as { _storeHeader: (line: string, headers: unknown) => void })._storeHeader = function (this: http.ServerResponse, line: string, headers: unknown) {
    if (announcesTrailers(this, headers)) (this as unknown as { _removedTE: boolean })._removedTE = false
    return store.call(this, line, headers)
  }
  res.assignSocket(conn as unknown as import('node:net').Socket)
  // FCGI_STDERR: lines written here land in the web server's error log.
  ;(res as unknown as { stderr: unknown }).stderr = conn.fcgi.stderr
  conn.on('drain', () => {
    if (!res.writableFinished) res.emit('drain')
  })
  return res
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
