// CGI <-> HTTP conversions: pure functions, unit-tested without the addon.
//
// Request: a FastCGI web server sends the HTTP request as CGI variables
// (RFC 3875): REQUEST_METHOD, REQUEST_URI or SCRIPT_NAME + PATH_INFO +
// QUERY_STRING, HTTP_* for the headers, CONTENT_TYPE and CONTENT_LENGTH.
// Response: the application answers with a CGI head: header lines, an
// optional `Status: 404 Not Found` line instead of an HTTP status line, then
// a blank line and the body.

export interface CgiRequestInfo {
  method: string
  url: string
  httpVersion: string
  httpVersionMajor: number
  httpVersionMinor: number
  /** Lower-cased names, as node:http's `req.headers`. */
  headers: Record<string, string>
  /** Name, value, name, value... with names as a browser would spell them. */
  rawHeaders: string[]
  remoteAddress: string | undefined
  remotePort: number | undefined
  localAddress: string | undefined
  localPort: number | undefined
  /** HTTPS=on: the web server received the request over TLS. */
  encrypted: boolean
}

/** HTTP_ACCEPT_LANGUAGE -> Accept-Language */
function headerName(cgiName: string): string {
  return cgiName
    .toLowerCase()
    .split('_')
    .map((w) => (w === '' ? w : w[0]!.toUpperCase() + w.slice(1)))
    .join('-')
}

function port(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d+$/.test(value)) return undefined
  const n = Number(value)
  return n <= 65535 ? n : undefined
}

// Bytes that may stand as they are in a URL path (RFC 3986 pchar and "/").
const PATH_SAFE = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/]$/

/** A decoded path (CGI's SCRIPT_NAME/PATH_INFO, bytes as latin1) percent-encoded again. */
function encodePath(path: string): string {
  let out = ''
  for (const byte of Buffer.from(path, 'latin1')) {
    const ch = String.fromCharCode(byte)
    out += PATH_SAFE.test(ch) ? ch : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return out
}

/**
 * The request's URL path and query, as node:http's `req.url`: REQUEST_URI
 * (the request target as the client sent it), or else SCRIPT_NAME +
 * PATH_INFO (which CGI passes decoded, so they are encoded again) +
 * "?" QUERY_STRING.
 */
export function requestUrl(env: Readonly<Record<string, string>>): string {
  const uri = env.REQUEST_URI
  if (uri !== undefined && uri !== '') return uri
  const path = encodePath((env.SCRIPT_NAME ?? '') + (env.PATH_INFO ?? ''))
  const query = env.QUERY_STRING
  return (path === '' ? '/' : path) + (query ? `?${query}` : '')
}

/**
 * A param seen again: the value it has then, or undefined to keep the first.
 * HTTP_* values are joined as node:http joins repeated headers (", ", "; "
 * for cookies); any other name keeps its first value.
 */
export function joinRepeatedParam(name: string, seen: string, value: string): string | undefined {
  if (!name.startsWith('HTTP_')) return undefined
  return `${seen}${name === 'HTTP_COOKIE' ? '; ' : ', '}${value}`
}

/**
 * Params as [name, value] pairs (repeats included) -> the CGI environment as
 * a plain object: a repeated name keeps its first value, but HTTP_* values
 * are joined as node:http joins repeated headers (", ", "; " for cookies).
 */
export function envFromPairs(pairs: ReadonlyArray<readonly [string, string]>): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [name, value] of pairs) {
    const seen = env[name]
    if (seen === undefined) env[name] = value
    else env[name] = joinRepeatedParam(name, seen, value) ?? seen
  }
  return env
}

// The variables cgiToRequestInfo reads besides HTTP_*.
const REQUEST_VARS = new Set([
  'REQUEST_METHOD', 'REQUEST_URI', 'SCRIPT_NAME', 'PATH_INFO', 'QUERY_STRING', 'SERVER_PROTOCOL', 'CONTENT_TYPE',
  'CONTENT_LENGTH', 'REMOTE_ADDR', 'REMOTE_PORT', 'SERVER_ADDR', 'SERVER_PORT', 'HTTPS',
])

/** cgiToRequestInfo from the pairs alone (no full environment object is built). */
export function requestInfoFromPairs(pairs: ReadonlyArray<readonly [string, string]>): CgiRequestInfo {
  const vars: Record<string, string> = {}
  for (const [name, value] of pairs) {
    if (REQUEST_VARS.has(name) && vars[name] === undefined) vars[name] = value
  }
  return cgiToRequestInfo(vars, pairs)
}

/** Calls `each(name, value)` for every param of FCGI_PARAMS as received ("NAME=value" strings joined with NUL), as Request.paramPairs() splits them. */
function forEachParam(params: string, each: (name: string, value: string) => void): void {
  if (params === '') return
  for (let start = 0; ;) {
    let end = params.indexOf('\0', start)
    if (end < 0) end = params.length
    const eq = params.indexOf('=', start)
    if (eq < 0 || eq > end) each(params.slice(start, end), '')
    else each(params.slice(start, eq), params.slice(eq + 1, end))
    if (end === params.length) break
    start = end + 1
  }
}

/** envFromPairs of the params as received, without the pairs. */
export function envFromParams(params: string): Record<string, string> {
  const env: Record<string, string> = {}
  forEachParam(params, (name, value) => {
    const seen = env[name]
    if (seen === undefined) env[name] = value
    else env[name] = joinRepeatedParam(name, seen, value) ?? seen
  })
  return env
}

type RequestVars = { -readonly [K in 'REQUEST_METHOD' | 'REQUEST_URI' | 'SCRIPT_NAME' | 'PATH_INFO' | 'QUERY_STRING' | 'SERVER_PROTOCOL' | 'CONTENT_TYPE' | 'CONTENT_LENGTH' | 'REMOTE_ADDR' | 'REMOTE_PORT' | 'SERVER_ADDR' | 'SERVER_PORT' | 'HTTPS']: string | undefined }

/**
 * requestInfoFromPairs of the params as received, in one pass, without the
 * pairs and without an object keyed by every name (each fresh name string
 * used as a key costs a hash and a string-table lookup: createServer's
 * `req.env` is built only when read).
 */
export function requestInfoFromParams(params: string): CgiRequestInfo {
  // The first value of each variable cgiToRequestInfo reads besides HTTP_*.
  const vars: RequestVars = {
    REQUEST_METHOD: undefined, REQUEST_URI: undefined, SCRIPT_NAME: undefined, PATH_INFO: undefined, QUERY_STRING: undefined,
    SERVER_PROTOCOL: undefined, CONTENT_TYPE: undefined, CONTENT_LENGTH: undefined, REMOTE_ADDR: undefined, REMOTE_PORT: undefined,
    SERVER_ADDR: undefined, SERVER_PORT: undefined, HTTPS: undefined,
  }
  const httpVars: string[] = []  // HTTP_* name, value, name, value... in order, repeats included
  // forEachParam's loop, inlined (this runs for every request).
  for (let start = 0; params !== ''; start++) {
    let end = params.indexOf('\0', start)
    if (end < 0) end = params.length
    const eq = params.indexOf('=', start)
    const name = eq < 0 || eq > end ? params.slice(start, end) : params.slice(start, eq)
    const value = eq < 0 || eq > end ? '' : params.slice(eq + 1, end)
    start = end
    if (name.startsWith('HTTP_')) httpVars.push(name, value)
    else switch (name) {
      case 'REQUEST_METHOD': vars.REQUEST_METHOD ??= value; break
      case 'REQUEST_URI': vars.REQUEST_URI ??= value; break
      case 'SCRIPT_NAME': vars.SCRIPT_NAME ??= value; break
      case 'PATH_INFO': vars.PATH_INFO ??= value; break
      case 'QUERY_STRING': vars.QUERY_STRING ??= value; break
      case 'SERVER_PROTOCOL': vars.SERVER_PROTOCOL ??= value; break
      case 'CONTENT_TYPE': vars.CONTENT_TYPE ??= value; break
      case 'CONTENT_LENGTH': vars.CONTENT_LENGTH ??= value; break
      case 'REMOTE_ADDR': vars.REMOTE_ADDR ??= value; break
      case 'REMOTE_PORT': vars.REMOTE_PORT ??= value; break
      case 'SERVER_ADDR': vars.SERVER_ADDR ??= value; break
      case 'SERVER_PORT': vars.SERVER_PORT ??= value; break
      case 'HTTPS': vars.HTTPS ??= value; break
    }
    if (end === params.length) break
  }
  return requestInfo(vars as Readonly<Record<string, string>>, httpVars)
}

// Repeated request headers, as node:http's IncomingMessage joins them: these
// keep their first value, cookies join with "; ", the others with ", ".
const FIRST_WINS = new Set([
  'content-type', 'content-length', 'user-agent', 'referer', 'host', 'authorization', 'proxy-authorization',
  'if-modified-since', 'if-unmodified-since', 'from', 'location', 'max-forwards', 'retry-after', 'etag',
  'last-modified', 'server', 'age', 'expires',
])

// HTTP_ACCEPT_LANGUAGE -> ['Accept-Language', 'accept-language'], for the
// names seen so far (a bounded number: clients choose them).
const HEADER_NAMES = new Map<string, readonly [string, string]>()
const HEADER_NAMES_MAX = 1000

function headerNames(cgiName: string): readonly [string, string] {
  let names = HEADER_NAMES.get(cgiName)
  if (names === undefined) {
    const raw = headerName(cgiName.slice(5))
    names = [raw, raw.toLowerCase()]
    if (HEADER_NAMES.size < HEADER_NAMES_MAX) HEADER_NAMES.set(cgiName, names)
  }
  return names
}

/**
 * CGI variables -> what node:http's IncomingMessage carries. `pairs` are the
 * params as sent (repeats included: nginx 1.22 sends a repeated header as
 * repeated HTTP_* params); without them, `env`'s entries are used.
 */
export function cgiToRequestInfo(env: Readonly<Record<string, string>>, pairs?: ReadonlyArray<readonly [string, string]>): CgiRequestInfo {
  const httpVars: string[] = []
  for (const [key, value] of pairs ?? Object.entries(env)) {
    if (key.startsWith('HTTP_')) httpVars.push(key, value)
  }
  return requestInfo(env, httpVars)
}

/** cgiToRequestInfo, the HTTP_* params given as name, value, name, value... */
function requestInfo(env: Readonly<Record<string, string>>, httpVars: readonly string[]): CgiRequestInfo {
  const headers: Record<string, string> = {}
  const rawHeaders: string[] = []
  const add = (raw: string, name: string, value: string) => {
    rawHeaders.push(raw, value)
    const seen = headers[name]
    if (seen === undefined) headers[name] = value
    else if (name === 'cookie') headers[name] = `${seen}; ${value}`
    else if (!FIRST_WINS.has(name)) headers[name] = `${seen}, ${value}`
  }
  const contentLength = env.CONTENT_LENGTH
  if (env.CONTENT_TYPE !== undefined && env.CONTENT_TYPE !== '') add('Content-Type', 'content-type', env.CONTENT_TYPE)
  if (contentLength !== undefined && contentLength !== '') add('Content-Length', 'content-length', contentLength)
  for (let i = 0; i < httpVars.length; i += 2) {
    const key = httpVars[i]!
    if (key.length === 5) continue
    // A web server never sends these as HTTP_ (they are CONTENT_*); a client
    // that did would smuggle a second value.
    if (key === 'HTTP_CONTENT_LENGTH' || key === 'HTTP_CONTENT_TYPE') continue
    // The web server has removed the chunking and counted the body
    // (CONTENT_LENGTH): node:http never shows both (RFC 9112 6.3).
    if (key === 'HTTP_TRANSFER_ENCODING' && contentLength) continue
    const names = headerNames(key)
    add(names[0], names[1], httpVars[i + 1]!)
  }
  const serverProtocol = env.SERVER_PROTOCOL
  let major = 1
  let minor = 1
  if (serverProtocol !== 'HTTP/1.1') {
    const protocol = /^HTTP\/(\d+)\.(\d+)$/i.exec(serverProtocol ?? '')
    if (protocol) {
      major = Number(protocol[1])
      minor = Number(protocol[2])
    }
  }
  const https = env.HTTPS
  return {
    method: (env.REQUEST_METHOD ?? 'GET').toUpperCase(),
    url: requestUrl(env),
    httpVersion: major === 1 && minor === 1 ? '1.1' : `${major}.${minor}`,
    httpVersionMajor: major,
    httpVersionMinor: minor,
    headers,
    rawHeaders,
    remoteAddress: env.REMOTE_ADDR || undefined,
    remotePort: port(env.REMOTE_PORT),
    localAddress: env.SERVER_ADDR || undefined,
    localPort: port(env.SERVER_PORT),
    encrypted: https !== undefined && https !== '' && (https === 'on' || https === '1' || https.toLowerCase() === 'on'),
  }
}

// Hop-by-hop headers (RFC 9110 7.6.1) belong to node:http's own connection
// to the client, which does not exist here: the web server owns that one.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade'])

/**
 * The head node:http's ServerResponse writes ("HTTP/1.1 404 Not Found\r\n"
 * + header lines + "\r\n") -> a CGI head ("Status: 404 Not Found\r\n" + the
 * same header lines but the hop-by-hop ones + "\r\n").
 */
export function httpHeadToCgi(head: string): string {
  let eol = head.indexOf('\r\n')
  if (eol < 0) eol = head.length
  const status = STATUS_LINE.exec(eol === head.length ? head : head.slice(0, eol))
  if (!status) throw new Error(`not an HTTP response head: ${JSON.stringify(head.slice(0, 40))}`)
  let out = status[2] ? `Status: ${status[1]} ${status[2]}` : `Status: ${status[1]}`
  // Header lines are copied in runs: a run ends at a line to drop.
  let run = eol  // start of the run of kept lines (each with its leading CRLF)
  let at = eol
  while (at < head.length) {
    const start = at + 2
    let next = head.indexOf('\r\n', start)
    if (next < 0) next = head.length
    if (next === start || (next > start && isHopByHop(head, start, next))) {
      // An empty line or a hop-by-hop header: what came before it is kept.
      out += head.slice(run, at)
      run = next
    }
    at = next
  }
  out += head.slice(run, at)
  return `${out}\r\n\r\n`
}

const STATUS_LINE = /^HTTP\/\d\.\d (\d{3})(?: (.*))?$/

/** The header line head[start, end) is one of HOP_BY_HOP (the name compared as httpHeadToCgi always did: trimmed, any case). */
function isHopByHop(head: string, start: number, end: number): boolean {
  // A line starting with a letter other than c, k, t, p or u is none of them.
  const c = head.charCodeAt(start) | 0x20
  if (c >= 0x61 && c <= 0x7a && c !== 0x63 && c !== 0x6b && c !== 0x74 && c !== 0x70 && c !== 0x75) return false
  const colon = head.indexOf(':', start)
  if (colon <= start || colon >= end) return false
  // The names are 7, 10, 16 or 17 characters long: a name that starts with
  // a letter and ends with a printable ASCII character (nothing to trim, as
  // every name node:http lets through) and has another length is none.
  const n = colon - start
  const last = head.charCodeAt(colon - 1)
  if (n !== 7 && n !== 10 && n !== 16 && n !== 17 && c >= 0x61 && c <= 0x7a && last > 0x20 && last < 0x7f) return false
  return HOP_BY_HOP.has(head.slice(start, colon).trim().toLowerCase())
}

/**
 * Removes HTTP/1.1 chunked framing, incrementally. node:http frames the body
 * so when an app sets `Transfer-Encoding: chunked` itself; over CGI the web
 * server frames the body for its client, so the framing must go. Trailers
 * are dropped (CGI has none).
 */
export class ChunkedDecoder {
  #state: 'size' | 'data' | 'data-end' | 'trailers' | 'done' = 'size'
  #line = ''
  #left = 0

  get done(): boolean {
    return this.#state === 'done'
  }

  /** Feeds framed bytes; returns the body bytes they carry. */
  push(input: Buffer): Buffer[] {
    const out: Buffer[] = []
    let i = 0
    while (i < input.length && this.#state !== 'done') {
      if (this.#state === 'data') {
        const n = Math.min(this.#left, input.length - i)
        out.push(input.subarray(i, i + n))
        i += n
        this.#left -= n
        if (this.#left === 0) this.#state = 'data-end'
        continue
      }
      // size line, the CRLF after data, or trailer lines: read up to LF
      const lf = input.indexOf(0x0a, i)
      const end = lf < 0 ? input.length : lf + 1
      this.#line += input.toString('latin1', i, end)
      i = end
      if (lf < 0) break
      const line = this.#line.replace(/\r?\n$/, '')
      this.#line = ''
      if (this.#state === 'size') {
        const size = parseInt(line.split(';')[0]!.trim(), 16)
        if (!Number.isFinite(size) || size < 0) throw new Error(`bad chunk size line ${JSON.stringify(line)}`)
        if (size === 0) this.#state = 'trailers'
        else {
          this.#left = size
          this.#state = 'data'
        }
      } else if (this.#state === 'data-end') {
        this.#state = 'size'
      } else if (line === '') {
        this.#state = 'done'
      }
    }
    return out
  }
}
