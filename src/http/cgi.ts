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

// Repeated request headers, as node:http's IncomingMessage joins them: these
// keep their first value, cookies join with "; ", the others with ", ".
const FIRST_WINS = new Set([
  'content-type', 'content-length', 'user-agent', 'referer', 'host', 'authorization', 'proxy-authorization',
  'if-modified-since', 'if-unmodified-since', 'from', 'location', 'max-forwards', 'retry-after', 'etag',
  'last-modified', 'server', 'age', 'expires',
])

/**
 * CGI variables -> what node:http's IncomingMessage carries. `pairs` are the
 * params as sent (repeats included: nginx 1.22 sends a repeated header as
 * repeated HTTP_* params); without them, `env`'s entries are used.
 */
export function cgiToRequestInfo(env: Readonly<Record<string, string>>, pairs?: ReadonlyArray<readonly [string, string]>): CgiRequestInfo {
  const headers: Record<string, string> = {}
  const rawHeaders: string[] = []
  const add = (raw: string, value: string) => {
    rawHeaders.push(raw, value)
    const name = raw.toLowerCase()
    const seen = headers[name]
    if (seen === undefined) headers[name] = value
    else if (name === 'cookie') headers[name] = `${seen}; ${value}`
    else if (!FIRST_WINS.has(name)) headers[name] = `${seen}, ${value}`
  }
  if (env.CONTENT_TYPE !== undefined && env.CONTENT_TYPE !== '') add('Content-Type', env.CONTENT_TYPE)
  if (env.CONTENT_LENGTH !== undefined && env.CONTENT_LENGTH !== '') add('Content-Length', env.CONTENT_LENGTH)
  for (const [key, value] of pairs ?? Object.entries(env)) {
    if (!key.startsWith('HTTP_') || key.length === 5) continue
    // A web server never sends these as HTTP_ (they are CONTENT_*); a client
    // that did would smuggle a second value.
    if (key === 'HTTP_CONTENT_LENGTH' || key === 'HTTP_CONTENT_TYPE') continue
    // The web server has removed the chunking and counted the body
    // (CONTENT_LENGTH): node:http never shows both (RFC 9112 6.3).
    if (key === 'HTTP_TRANSFER_ENCODING' && env.CONTENT_LENGTH) continue
    add(headerName(key.slice(5)), value)
  }
  const protocol = /^HTTP\/(\d+)\.(\d+)$/i.exec(env.SERVER_PROTOCOL ?? '')
  const major = protocol ? Number(protocol[1]) : 1
  const minor = protocol ? Number(protocol[2]) : 1
  const https = (env.HTTPS ?? '').toLowerCase()
  return {
    method: (env.REQUEST_METHOD ?? 'GET').toUpperCase(),
    url: requestUrl(env),
    httpVersion: `${major}.${minor}`,
    httpVersionMajor: major,
    httpVersionMinor: minor,
    headers,
    rawHeaders,
    remoteAddress: env.REMOTE_ADDR || undefined,
    remotePort: port(env.REMOTE_PORT),
    localAddress: env.SERVER_ADDR || undefined,
    localPort: port(env.SERVER_PORT),
    encrypted: https === 'on' || https === '1',
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
  const lines = head.split('\r\n')
  const status = /^HTTP\/\d\.\d (\d{3})(?: (.*))?$/.exec(lines[0] ?? '')
  if (!status) throw new Error(`not an HTTP response head: ${JSON.stringify(head.slice(0, 40))}`)
  const out = [`Status: ${status[1]}${status[2] ? ` ${status[2]}` : ''}`]
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!
    if (line === '') continue
    const colon = line.indexOf(':')
    if (colon > 0 && HOP_BY_HOP.has(line.slice(0, colon).trim().toLowerCase())) continue
    out.push(line)
  }
  return `${out.join('\r\n')}\r\n\r\n`
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
