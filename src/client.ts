// A FastCGI client in TypeScript over node:net (no addon): it plays the web
// server's part for one request, as `cgi-fcgi` does, for health checks,
// scripts and tests. It builds the CGI params a web server would send,
// streams the body as FCGI_STDIN, and reads back FCGI_STDOUT (a CGI
// response: head, blank line, body), FCGI_STDERR and FCGI_END_REQUEST.
//
// Wire format: FastCGI Specification 1.0 (Open Market, 1996). One request
// per connection (FCGI_KEEP_CONN off), request id 1.
import { STATUS_CODES } from 'node:http'
import net from 'node:net'
import type { Readable } from 'node:stream'

import { parseListenAddress } from './address.js'

// ---------------------------------------------------------------- protocol

const VERSION = 1
const HEADER_LEN = 8
/** Largest content of one record (the length field is 16 bits). */
const MAX_CONTENT = 0xffff
const REQUEST_ID = 1

const BEGIN_REQUEST = 1
const END_REQUEST = 3
const PARAMS = 4
const STDIN = 5
const STDOUT = 6
const STDERR = 7
const GET_VALUES = 9
const GET_VALUES_RESULT = 10
const UNKNOWN_TYPE = 11

const ROLES = { responder: 1, authorizer: 2, filter: 3 } as const
export type ClientRole = keyof typeof ROLES

/** FCGI_END_REQUEST protocolStatus values other than FCGI_REQUEST_COMPLETE (0). */
const REJECTIONS: Record<number, [string, string]> = {
  1: ['CANT_MPX_CONN', 'the server cannot multiplex requests on one connection (FCGI_CANT_MPX_CONN)'],
  2: ['OVERLOADED', 'the server is overloaded (FCGI_OVERLOADED)'],
  3: ['UNKNOWN_ROLE', 'the server does not play the requested role (FCGI_UNKNOWN_ROLE)'],
}

function recordHeader(type: number, requestId: number, contentLength: number): Buffer {
  const h = Buffer.allocUnsafe(HEADER_LEN)
  h[0] = VERSION
  h[1] = type
  h.writeUInt16BE(requestId, 2)
  h.writeUInt16BE(contentLength, 4)
  h[6] = 0 // no padding: the spec only recommends 8-byte alignment
  h[7] = 0
  return h
}

/** `data` as records of `type` (at most 65535 bytes of content each); no terminator. */
function streamRecords(type: number, data: Buffer, out: Buffer[] = []): Buffer[] {
  for (let off = 0; off < data.length; off += MAX_CONTENT) {
    const piece = data.subarray(off, Math.min(off + MAX_CONTENT, data.length))
    out.push(recordHeader(type, REQUEST_ID, piece.length), piece)
  }
  return out
}

function nvLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n])
  const b = Buffer.allocUnsafe(4)
  b.writeUInt32BE((n | 0x80000000) >>> 0, 0)
  return b
}

/** FastCGI name-value pairs (1- or 4-byte lengths), concatenated. */
export function encodePairs(pairs: ReadonlyArray<readonly [string, string]>): Buffer {
  const parts: Buffer[] = []
  for (const [name, value] of pairs) {
    const n = Buffer.from(name, 'latin1')
    const v = Buffer.from(value, 'latin1')
    parts.push(nvLength(n.length), nvLength(v.length), n, v)
  }
  return Buffer.concat(parts)
}

/** The inverse of encodePairs; throws on truncated input. */
export function decodePairs(buf: Buffer): Array<[string, string]> {
  const out: Array<[string, string]> = []
  let off = 0
  const length = (): number => {
    if (off >= buf.length) throw new Error('truncated name-value pair')
    if (buf[off]! < 0x80) return buf[off++]!
    if (off + 4 > buf.length) throw new Error('truncated name-value pair')
    const n = buf.readUInt32BE(off) & 0x7fffffff
    off += 4
    return n
  }
  while (off < buf.length) {
    const nl = length()
    const vl = length()
    if (off + nl + vl > buf.length) throw new Error('truncated name-value pair')
    out.push([buf.toString('latin1', off, off + nl), buf.toString('latin1', off + nl, off + nl + vl)])
    off += nl + vl
  }
  return out
}

// ---------------------------------------------------------------- errors

export type FastCGIClientErrorCode =
  /** The connect + request time (`timeout`) ran out. */
  | 'ETIMEDOUT'
  /** Bytes that are not FastCGI records (a wrong version, a record type a server never sends...). */
  | 'ERR_FASTCGI_PROTOCOL'
  /** The server closed the connection before FCGI_END_REQUEST. */
  | 'ERR_FASTCGI_CLOSED'
  /** FCGI_END_REQUEST with a protocolStatus other than REQUEST_COMPLETE (see `protocolStatus`). */
  | 'ERR_FASTCGI_REJECTED'
  /** FCGI_STDOUT is not a CGI response (no head, no blank line, a bad Status or header line). */
  | 'ERR_FASTCGI_BAD_RESPONSE'

/**
 * What fcgiRequest() and getValues() reject with, besides the socket's own
 * errors (ECONNREFUSED, ENOENT, EACCES, ECONNRESET, ... as node:net reports them).
 */
export class FastCGIClientError extends Error {
  readonly code: FastCGIClientErrorCode
  /** For ERR_FASTCGI_REJECTED: FCGI_END_REQUEST's protocolStatus (1, 2 or 3). */
  protocolStatus?: number
  /** For ERR_FASTCGI_REJECTED: 'CANT_MPX_CONN', 'OVERLOADED' or 'UNKNOWN_ROLE'. */
  protocolStatusName?: string
  constructor(code: FastCGIClientErrorCode, message: string) {
    super(message)
    this.name = 'FastCGIClientError'
    this.code = code
  }
}

// ---------------------------------------------------------------- addresses

export type ConnectTarget = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string }

/** Where fcgiRequest() connects: what `--listen`/initSocket accept, plus host names. */
export type ConnectAddress = string | number | { path: string } | { port: number; host?: string }

function loopback(host: string): string {
  // A listen address for "every interface" means this machine to a client.
  if (host === '' || host === '*' || host === '0.0.0.0') return '127.0.0.1'
  if (host === '::' || host === '[::]') return '::1'
  return host
}

/**
 * `/run/app.sock`, `unix:/run/app.sock`, `9000` or `:9000` (127.0.0.1),
 * `127.0.0.1:9000`, `[::1]:9000`, `php-fpm:9000` (a host name, resolved when
 * connecting), `{ path }`, `{ port, host }`. A relative path with a colon
 * needs the `unix:` prefix (or `./`).
 */
export function parseConnectAddress(address: ConnectAddress): ConnectTarget {
  if (typeof address === 'string') {
    // Host names are fine for a client (parseListenAddress takes IP literals only).
    const named = /^([A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*):(\d+)$/.exec(address)
    if (named && net.isIP(named[1]!) === 0 && named[1] !== 'localhost') {
      const port = Number(named[2])
      if (port < 1 || port > 65535) throw new RangeError(`port must be 1 to 65535, got ${JSON.stringify(address)}`)
      return { kind: 'tcp', host: named[1]!, port }
    }
  }
  if (typeof address === 'object' && address !== null && 'port' in address && address.host !== undefined && net.isIP(address.host) === 0 && address.host !== 'localhost') {
    return parseConnectAddress(`${address.host}:${address.port}`)
  }
  const target = parseListenAddress(address)
  if (target.kind === 'fd') throw new TypeError('a client cannot connect to a file descriptor')
  if (target.kind === 'unix') return { kind: 'unix', path: target.path }
  if (target.port === 0) throw new RangeError('cannot connect to port 0')
  return { kind: 'tcp', host: loopback(target.host), port: target.port }
}

function describe(target: ConnectTarget): string {
  if (target.kind === 'unix') return target.path
  return net.isIPv6(target.host) ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`
}

// ---------------------------------------------------------------- request

export type HeaderInput = Record<string, string | readonly string[] | number | undefined> | ReadonlyArray<readonly [string, string]>
export type ParamInput = Record<string, string | undefined> | ReadonlyArray<readonly [string, string]>

export interface FcgiRequestOptions {
  /** The server's address (see parseConnectAddress). */
  connect: ConnectAddress
  /** Default GET, or POST when there is a body. */
  method?: string
  /** Request target: path and query, e.g. `/status?full`. Default `/`. */
  path?: string
  /**
   * Request headers: `Content-Type` and `Content-Length` become CONTENT_TYPE and
   * CONTENT_LENGTH, the others HTTP_* params (repeats joined with ", ", cookies
   * with "; "). Default Host: the TCP address, or `localhost` for a unix socket;
   * an empty Host sends no HTTP_HOST.
   */
  headers?: HeaderInput
  /**
   * The request body, sent as FCGI_STDIN records. A Readable is streamed; its
   * length is `contentLength` if given, else unknown: then no CONTENT_LENGTH
   * is sent but `Transfer-Encoding: chunked` (HTTP_TRANSFER_ENCODING), as a web
   * server that does not buffer request bodies does. Servers that need
   * CONTENT_LENGTH (PHP, most CGI-style apps) want a Buffer or a length.
   */
  body?: Buffer | Uint8Array | string | Readable
  /** Length of a Readable body, sent as CONTENT_LENGTH. */
  contentLength?: number
  /** Extra or replacement params (`SCRIPT_FILENAME`, `HTTPS`...); they win over the built ones. */
  params?: ParamInput
  /** Milliseconds for connecting and the whole request; 0 or undefined: no limit. Rejects with code ETIMEDOUT. */
  timeout?: number
  /** Default 'responder'. */
  role?: ClientRole
  /** Aborts the request (rejects with the signal's reason). */
  signal?: AbortSignal
}

export interface FcgiResponse {
  /** From the `Status:` header; 302 for a `Location:` without one; else 200. */
  status: number
  statusText: string
  /** Lower-cased names; a repeated header (and set-cookie always) is an array. No `Status`. */
  headers: Record<string, string | string[]>
  /** [name, value, name, value, ...] as sent, without `Status`. */
  rawHeaders: string[]
  body: Buffer
  /** FCGI_STDERR, all of it. */
  stderr: Buffer
  /** FCGI_END_REQUEST's appStatus (the application's exit status). */
  appStatus: number
  /** FCGI_END_REQUEST's protocolStatus: 0 (REQUEST_COMPLETE) here, else the promise rejects. */
  protocolStatus: number
  /** The params sent (for -v style diagnostics and tests). */
  params: Array<[string, string]>
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

function headerList(headers: HeaderInput | undefined): Array<[string, string]> {
  if (headers === undefined) return []
  if (Array.isArray(headers)) return headers.map(([n, v]) => [n, v])
  const out: Array<[string, string]> = []
  for (const [name, value] of Object.entries(headers as Record<string, string | readonly string[] | number | undefined>)) {
    if (value === undefined) continue
    if (Array.isArray(value)) for (const v of value) out.push([name, String(v)])
    else out.push([name, String(value)])
  }
  return out
}

function paramList(params: ParamInput | undefined): Array<[string, string]> {
  if (params === undefined) return []
  if (Array.isArray(params)) return params.map(([n, v]) => [n, v])
  return Object.entries(params as Record<string, string | undefined>).filter((e): e is [string, string] => e[1] !== undefined)
}

function safeDecode(path: string): string {
  try {
    return decodeURIComponent(path)
  } catch {
    return path
  }
}

/**
 * The CGI params a web server (nginx's fastcgi_params, plus SCRIPT_FILENAME
 * as its fastcgi.conf) would send for this request.
 */
export function buildParams(
  target: ConnectTarget,
  method: string,
  uri: string,
  headers: HeaderInput | undefined,
  bodyLength: number | undefined | 'chunked',
  extra?: ParamInput,
): Array<[string, string]> {
  if (!TOKEN.test(method)) throw new TypeError(`not a valid HTTP method: ${JSON.stringify(method)}`)
  if (!uri.startsWith('/') && uri !== '*') throw new TypeError(`the request path must start with "/", got ${JSON.stringify(uri)}`)
  if (/[\0\r\n]/.test(uri)) throw new TypeError('the request path must not contain NUL, CR or LF')
  const q = uri.indexOf('?')
  const path = q < 0 ? uri : uri.slice(0, q)
  const query = q < 0 ? '' : uri.slice(q + 1)
  const script = safeDecode(path)

  // Headers, grouped by CGI name in first-seen order.
  const grouped = new Map<string, { raw: string; values: string[] }>()
  for (const [name, value] of headerList(headers)) {
    if (!TOKEN.test(name)) throw new TypeError(`not a valid header name: ${JSON.stringify(name)}`)
    if (/[\0\r\n]/.test(value)) throw new TypeError(`header ${name}: the value must not contain NUL, CR or LF`)
    const lower = name.toLowerCase()
    const cgi = lower === 'content-type' ? 'CONTENT_TYPE' : lower === 'content-length' ? 'CONTENT_LENGTH' : `HTTP_${lower.toUpperCase().replace(/-/g, '_')}`
    const entry = grouped.get(cgi)
    if (entry) entry.values.push(value)
    else grouped.set(cgi, { raw: lower, values: [value] })
  }
  const joined = (cgi: string): string | undefined => {
    const e = grouped.get(cgi)
    if (!e) return undefined
    return cgi === 'CONTENT_TYPE' || cgi === 'CONTENT_LENGTH' ? e.values[e.values.length - 1] : e.values.join(cgi === 'HTTP_COOKIE' ? '; ' : ', ')
  }

  const defaultHost = target.kind === 'tcp' ? describe(target) : 'localhost'
  const host = joined('HTTP_HOST') ?? defaultHost
  const hostPort = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(host)
  const serverName = hostPort?.[1] || 'localhost'
  const serverPort = target.kind === 'tcp' ? String(target.port) : hostPort?.[2] ?? '80'

  const params: Array<[string, string]> = [
    ['GATEWAY_INTERFACE', 'CGI/1.1'],
    ['SERVER_SOFTWARE', 'libfcgi-request'],
    ['SERVER_PROTOCOL', 'HTTP/1.1'],
    ['REQUEST_METHOD', method],
    ['REQUEST_URI', uri],
    ['DOCUMENT_URI', script],
    ['SCRIPT_NAME', script],
    // PHP-FPM needs it (its ping/status pages included); apps that serve
    // themselves ignore it. Override with a param for a real script path.
    ['SCRIPT_FILENAME', script],
    ['QUERY_STRING', query],
    ['SERVER_NAME', serverName],
    ['SERVER_PORT', serverPort],
    ['SERVER_ADDR', target.kind === 'tcp' && net.isIP(target.host) ? target.host : '127.0.0.1'],
    ['REMOTE_ADDR', '127.0.0.1'],
  ]
  const contentType = joined('CONTENT_TYPE')
  if (contentType !== undefined) params.push(['CONTENT_TYPE', contentType])
  const contentLength = joined('CONTENT_LENGTH') ?? (typeof bodyLength === 'number' ? String(bodyLength) : undefined)
  if (contentLength !== undefined) params.push(['CONTENT_LENGTH', contentLength])
  if (bodyLength === 'chunked' && contentLength === undefined && !grouped.has('HTTP_TRANSFER_ENCODING')) {
    params.push(['HTTP_TRANSFER_ENCODING', 'chunked'])
  }
  if (host !== '') params.push(['HTTP_HOST', host])
  for (const cgi of grouped.keys()) {
    if (cgi === 'CONTENT_TYPE' || cgi === 'CONTENT_LENGTH' || cgi === 'HTTP_HOST') continue
    params.push([cgi, joined(cgi)!])
  }
  // Extra params replace a built one of the same name in place, or are added.
  for (const [name, value] of paramList(extra)) {
    if (name === '' || /[\0=]/.test(name)) throw new TypeError(`not a valid param name: ${JSON.stringify(name)}`)
    const at = params.findIndex(([n]) => n === name)
    if (at >= 0) params[at] = [name, value]
    else params.push([name, value])
  }
  return params
}

/**
 * FCGI_STDOUT's CGI response -> status, headers and body. Throws a
 * FastCGIClientError ERR_FASTCGI_BAD_RESPONSE for what a web server would
 * answer with 502.
 */
export function parseCgiResponse(stdout: Buffer): Pick<FcgiResponse, 'status' | 'statusText' | 'headers' | 'rawHeaders' | 'body'> {
  const bad = (why: string) => new FastCGIClientError('ERR_FASTCGI_BAD_RESPONSE', `the application's response is not a CGI response: ${why}`)
  if (stdout.length === 0) throw bad('it sent nothing on FCGI_STDOUT')
  const rawHeaders: string[] = []
  const headers: Record<string, string | string[]> = {}
  let status: number | undefined
  let statusText = ''
  let off = 0
  for (;;) {
    const nl = stdout.indexOf(0x0a, off)
    if (nl < 0) throw bad('no blank line after the header lines')
    const end = nl > off && stdout[nl - 1] === 0x0d ? nl - 1 : nl
    const line = stdout.toString('latin1', off, end)
    off = nl + 1
    if (line === '') break
    const colon = line.indexOf(':')
    const name = colon > 0 ? line.slice(0, colon).trim() : ''
    if (!TOKEN.test(name)) throw bad(`header line ${JSON.stringify(line.slice(0, 80))}`)
    const value = line.slice(colon + 1).trim()
    const lower = name.toLowerCase()
    if (lower === 'status') {
      const m = /^(\d{3})(?:\s+(.*))?$/.exec(value)
      if (!m) throw bad(`Status: ${JSON.stringify(value.slice(0, 80))}`)
      status = Number(m[1])
      statusText = m[2] ?? ''
      continue
    }
    rawHeaders.push(name, value)
    const seen = headers[lower]
    if (seen === undefined) headers[lower] = lower === 'set-cookie' ? [value] : value
    else if (Array.isArray(seen)) seen.push(value)
    else headers[lower] = [seen, value]
  }
  // RFC 3875 6.2.3/6.2.4: a Location without a Status is a redirect (a web
  // server would follow a local one itself; a client sees 302).
  if (status === undefined) status = headers['location'] !== undefined ? 302 : 200
  if (statusText === '') statusText = STATUS_CODES[status] ?? ''
  return { status, statusText, headers, rawHeaders, body: stdout.subarray(off) }
}

function isReadable(body: unknown): body is Readable {
  return typeof body === 'object' && body !== null && typeof (body as Readable).pipe === 'function' && Symbol.asyncIterator in body
}

/**
 * Incremental record reader: records may arrive split anywhere (header,
 * content or padding across TCP segments), several per chunk. Stream content
 * is handed out as slices of the received chunks (no copy).
 */
class RecordReader {
  #header = Buffer.alloc(HEADER_LEN)
  #have = 0
  #type = 0
  #requestId = 0
  #contentLeft = 0
  #paddingLeft = 0
  #parts: Buffer[] = []
  #state: 'header' | 'content' | 'padding' = 'header'

  constructor(
    private readonly onContent: (type: number, requestId: number, piece: Buffer) => void,
    private readonly onRecord: (type: number, requestId: number, parts: Buffer[]) => void,
    private readonly onBadHeader: (header: Buffer) => string | undefined,
  ) {}

  /** Returns an error message for bytes that are not FastCGI, else undefined. */
  push(chunk: Buffer): string | undefined {
    let off = 0
    while (off < chunk.length) {
      if (this.#state === 'header') {
        const take = Math.min(HEADER_LEN - this.#have, chunk.length - off)
        chunk.copy(this.#header, this.#have, off, off + take)
        this.#have += take
        off += take
        if (this.#have < HEADER_LEN) break
        this.#have = 0
        const problem = this.onBadHeader(this.#header)
        if (problem) return problem
        this.#type = this.#header[1]!
        this.#requestId = this.#header.readUInt16BE(2)
        this.#contentLeft = this.#header.readUInt16BE(4)
        this.#paddingLeft = this.#header[6]!
        this.#parts = []
        this.#state = 'content'
        if (this.#contentLeft === 0) this.#endContent()
        continue
      }
      if (this.#state === 'content') {
        const take = Math.min(this.#contentLeft, chunk.length - off)
        const piece = chunk.subarray(off, off + take)
        off += take
        this.#contentLeft -= take
        if (this.#type === STDOUT || this.#type === STDERR) this.onContent(this.#type, this.#requestId, piece)
        else this.#parts.push(piece)
        if (this.#contentLeft === 0) this.#endContent()
        continue
      }
      const take = Math.min(this.#paddingLeft, chunk.length - off)
      off += take
      this.#paddingLeft -= take
      if (this.#paddingLeft === 0) this.#state = 'header'
    }
    return undefined
  }

  /** True between records (a close here loses no partial record). */
  get atBoundary(): boolean {
    return this.#state === 'header' && this.#have === 0
  }

  #endContent(): void {
    this.#state = this.#paddingLeft > 0 ? 'padding' : 'header'
    this.onRecord(this.#type, this.#requestId, this.#parts)
  }
}

/** Why an 8-byte header is not one a FastCGI server would send, if it is not. */
function checkServerHeader(h: Buffer): string | undefined {
  const looksHttp = h.toString('latin1', 0, 5) === 'HTTP/'
  if (h[0] !== VERSION) {
    return looksHttp
      ? 'the server answered in HTTP, not FastCGI (is this the web server\'s port instead of the application\'s?)'
      : `not a FastCGI record (version byte ${h[0]}, expected 1)`
  }
  const type = h[1]!
  if (type !== STDOUT && type !== STDERR && type !== END_REQUEST && type !== GET_VALUES_RESULT && type !== UNKNOWN_TYPE) {
    return `unexpected FastCGI record type ${type} from the server`
  }
  return undefined
}

interface Connection {
  socket: net.Socket
  fail: (err: Error) => void
  settled: () => boolean
}

/**
 * Connects to `target` and runs `start(connection)`; the returned promise
 * settles once: with start's `resolve`, or with a socket error, the timeout
 * (ETIMEDOUT), an abort, or the peer closing first (ERR_FASTCGI_CLOSED). The
 * socket is destroyed when it settles.
 */
function withConnection<T>(
  target: ConnectTarget,
  timeout: number | undefined,
  signal: AbortSignal | undefined,
  start: (conn: Connection, resolve: (value: T) => void) => { onData: (chunk: Buffer) => void; closedEarly: () => string },
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason)
      return
    }
    let done = false
    let connected = false
    const socket = target.kind === 'unix' ? net.connect({ path: target.path }) : net.connect({ host: target.host, port: target.port })
    const settle = (): void => {
      done = true
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      socket.destroy()
    }
    const fail = (err: Error): void => {
      if (done) return
      settle()
      reject(err)
    }
    const onAbort = (): void => fail(signal!.reason as Error)
    signal?.addEventListener('abort', onAbort, { once: true })
    const timer = timeout
      ? setTimeout(() => {
          fail(new FastCGIClientError('ETIMEDOUT', `timed out after ${timeout} ms ${connected ? 'waiting for the response from' : 'connecting to'} ${describe(target)}`))
        }, timeout)
      : undefined
    const handlers = start({ socket, fail, settled: () => done }, (value) => {
      if (done) return
      settle()
      resolve(value)
    })
    socket.on('connect', () => { connected = true })
    socket.on('data', (chunk: Buffer) => { if (!done) handlers.onData(chunk) })
    socket.on('error', (err) => fail(err))
    // 'end' (the peer's FIN) and 'close' both mean no END_REQUEST will come.
    const closed = (): void => fail(new FastCGIClientError('ERR_FASTCGI_CLOSED', handlers.closedEarly()))
    socket.on('end', closed)
    socket.on('close', closed)
  })
}

/**
 * Sends one FastCGI request and collects the response:
 *
 * ```ts
 * const res = await fcgiRequest({ connect: '/run/app.sock', path: '/health' })
 * if (res.status >= 500) process.exit(1)
 * ```
 *
 * Rejects with the socket's error (ECONNREFUSED, ENOENT...) or a
 * FastCGIClientError (ETIMEDOUT, ERR_FASTCGI_PROTOCOL, ERR_FASTCGI_CLOSED,
 * ERR_FASTCGI_REJECTED, ERR_FASTCGI_BAD_RESPONSE).
 */
export async function fcgiRequest(options: FcgiRequestOptions): Promise<FcgiResponse> {
  const target = parseConnectAddress(options.connect)
  const role = ROLES[options.role ?? 'responder']
  if (role === undefined) throw new TypeError(`role must be responder, authorizer or filter, got ${JSON.stringify(options.role)}`)
  let body: Buffer | Readable | undefined
  if (typeof options.body === 'string') body = Buffer.from(options.body)
  else if (isReadable(options.body)) body = options.body
  else if (options.body !== undefined) body = Buffer.from(options.body.buffer, options.body.byteOffset, options.body.byteLength)
  const method = (options.method ?? (body !== undefined ? 'POST' : 'GET')).toUpperCase()
  const bodyLength = body === undefined ? undefined : Buffer.isBuffer(body) ? body.length : options.contentLength ?? 'chunked'
  const params = buildParams(target, method, options.path ?? '/', options.headers, bodyLength, options.params)

  const begin = Buffer.alloc(8)
  begin.writeUInt16BE(role, 0) // flags 0: the server closes the connection after the request
  const head: Buffer[] = [recordHeader(BEGIN_REQUEST, REQUEST_ID, 8), begin]
  streamRecords(PARAMS, encodePairs(params), head)
  head.push(recordHeader(PARAMS, REQUEST_ID, 0))

  const response = withConnection<FcgiResponse>(target, options.timeout, options.signal, (conn, resolve) => {
    const stdout: Buffer[] = []
    const stderr: Buffer[] = []
    let received = 0
    const reader = new RecordReader(
      (type, requestId, piece) => {
        if (requestId !== REQUEST_ID) return
        received += piece.length
        ;(type === STDOUT ? stdout : stderr).push(piece)
      },
      (type, requestId, parts) => {
        if (type !== END_REQUEST || requestId !== REQUEST_ID) return // management records (UNKNOWN_TYPE...) are not ours to answer
        const content = Buffer.concat(parts)
        if (content.length < 8) {
          conn.fail(new FastCGIClientError('ERR_FASTCGI_PROTOCOL', `FCGI_END_REQUEST with ${content.length} bytes of content (expected 8)`))
          return
        }
        const appStatus = content.readUInt32BE(0)
        const protocolStatus = content[4]!
        if (protocolStatus !== 0) {
          const [name, text] = REJECTIONS[protocolStatus] ?? [`protocolStatus ${protocolStatus}`, `the server refused the request (protocolStatus ${protocolStatus})`]
          const err = new FastCGIClientError('ERR_FASTCGI_REJECTED', text)
          err.protocolStatus = protocolStatus
          err.protocolStatusName = name
          conn.fail(err)
          return
        }
        try {
          const parsed = parseCgiResponse(Buffer.concat(stdout))
          resolve({ ...parsed, stderr: Buffer.concat(stderr), appStatus, protocolStatus, params })
        } catch (err) {
          conn.fail(err as Error)
        }
      },
      checkServerHeader,
    )

    conn.socket.write(Buffer.concat(head))
    sendBody(conn, body).catch((err: Error) => conn.fail(err))

    return {
      onData: (chunk) => {
        const problem = reader.push(chunk)
        if (problem) conn.fail(new FastCGIClientError('ERR_FASTCGI_PROTOCOL', problem))
      },
      closedEarly: () =>
        received === 0 && reader.atBoundary
          ? `${describe(target)} closed the connection without an answer`
          : `${describe(target)} closed the connection before the end of the response (FCGI_END_REQUEST) after ${received} bytes of output`,
    }
  })
  // A body stream the request is over with (an early answer, an error, the
  // timeout) is not read any further: release it, as fetch() does.
  if (body !== undefined && !Buffer.isBuffer(body)) {
    const stream = body
    void response.catch(() => {}).finally(() => { if (!stream.readableEnded) stream.destroy() })
  }
  return response
}

/** FCGI_STDIN: the body's records, then the empty record that ends the stream. */
async function sendBody(conn: Connection, body: Buffer | Readable | undefined): Promise<void> {
  const { socket } = conn
  if (body === undefined || Buffer.isBuffer(body)) {
    const records = body ? streamRecords(STDIN, body) : []
    records.push(recordHeader(STDIN, REQUEST_ID, 0))
    socket.write(Buffer.concat(records))
    return
  }
  // Streamed with the socket's backpressure; stops as soon as the request is
  // over (an answer before the whole body was read, an error, the timeout).
  const drained = (): Promise<void> =>
    new Promise<void>((resolve) => {
      const done = (): void => {
        socket.off('drain', done)
        socket.off('close', done)
        resolve()
      }
      socket.on('drain', done)
      socket.on('close', done)
    })
  for await (const chunk of body as AsyncIterable<Buffer | string>) {
    if (conn.settled()) return
    const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
    let ok = true
    for (const part of streamRecords(STDIN, data)) ok = socket.write(part)
    if (!ok) await drained()
  }
  if (conn.settled()) return
  socket.write(recordHeader(STDIN, REQUEST_ID, 0))
}

export interface GetValuesOptions {
  /** Milliseconds for the whole exchange (ETIMEDOUT). */
  timeout?: number
  signal?: AbortSignal
}

/**
 * FCGI_GET_VALUES, the probe web servers send: asks the server for
 * variables such as FCGI_MAX_CONNS, FCGI_MAX_REQS and FCGI_MPXS_CONNS and
 * returns those it answered in FCGI_GET_VALUES_RESULT.
 */
export function getValues(
  connect: ConnectAddress,
  names: readonly string[] = ['FCGI_MAX_CONNS', 'FCGI_MAX_REQS', 'FCGI_MPXS_CONNS'],
  options: GetValuesOptions = {},
): Promise<Record<string, string>> {
  const target = parseConnectAddress(connect)
  const content = encodePairs(names.map((n) => [n, '']))
  if (content.length > MAX_CONTENT) throw new RangeError('too many names for one FCGI_GET_VALUES record')
  return withConnection<Record<string, string>>(target, options.timeout, options.signal, (conn, resolve) => {
    const reader = new RecordReader(
      () => {},
      (type, requestId, parts) => {
        if (requestId !== 0) return
        if (type === UNKNOWN_TYPE) {
          conn.fail(new FastCGIClientError('ERR_FASTCGI_PROTOCOL', 'the server does not know FCGI_GET_VALUES (FCGI_UNKNOWN_TYPE)'))
          return
        }
        if (type !== GET_VALUES_RESULT) return
        try {
          resolve(Object.fromEntries(decodePairs(Buffer.concat(parts))))
        } catch (err) {
          conn.fail(new FastCGIClientError('ERR_FASTCGI_PROTOCOL', `FCGI_GET_VALUES_RESULT: ${(err as Error).message}`))
        }
      },
      checkServerHeader,
    )
    const h = recordHeader(GET_VALUES, 0, content.length)
    conn.socket.write(Buffer.concat([h, content]))
    return {
      onData: (chunk) => {
        const problem = reader.push(chunk)
        if (problem) conn.fail(new FastCGIClientError('ERR_FASTCGI_PROTOCOL', problem))
      },
      closedEarly: () => `${describe(target)} closed the connection without answering FCGI_GET_VALUES`,
    }
  })
}
