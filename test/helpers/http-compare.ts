// Send one HTTP request with node:http (full control: any method incl. HEAD,
// raw header list, no redirects followed) and capture exactly what a client
// sees; compare two such captures and describe every difference readably.
import { createHash } from 'node:crypto'
import http from 'node:http'
import net from 'node:net'

import { withTimeout } from './wait.js'

export interface HttpRequestSpec {
  method?: string
  /** Path and query, sent as they are (percent-encode them yourself). */
  path: string
  /**
   * An object (an array value is sent as that many lines, but node:http's
   * client joins a Cookie array into one line), or a flat [name, value, ...]
   * list sent line by line as it is (include Host yourself then).
   */
  headers?: Record<string, string | string[]> | string[]
  body?: Buffer | string
  /** Write the body in this many pieces (with `Transfer-Encoding: chunked` in headers: that many chunks). */
  bodyPieces?: number
}

export interface HttpTarget {
  host?: string
  port: number
  agent?: http.Agent
}

export interface CapturedResponse {
  status: number
  statusMessage: string
  httpVersion: string
  /** As received: name, value, name, value... */
  rawHeaders: string[]
  /** Lower-cased name -> every value, in the order received. */
  headers: Map<string, string[]>
  body: Buffer
}

/** Lower-cased name -> values in order (Set-Cookie and any repeated header stay arrays). */
export function headerMap(rawHeaders: readonly string[]): Map<string, string[]> {
  const map = new Map<string, string[]>()
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase()
    const list = map.get(name)
    if (list) list.push(rawHeaders[i + 1]!)
    else map.set(name, [rawHeaders[i + 1]!])
  }
  return map
}

/** Sends `spec` to `target` and collects the whole response (bounded by `timeoutMs`). */
export function sendHttp(target: HttpTarget, spec: HttpRequestSpec, timeoutMs = 15000): Promise<CapturedResponse> {
  const method = spec.method ?? 'GET'
  const body = spec.body === undefined ? undefined : Buffer.isBuffer(spec.body) ? spec.body : Buffer.from(spec.body)
  const headers: Record<string, string | string[]> | string[] = Array.isArray(spec.headers) ? [...spec.headers] : { ...spec.headers }
  const names = Array.isArray(headers) ? headers.filter((_, i) => i % 2 === 0) : Object.keys(headers)
  const framed = names.some((h) => h.toLowerCase() === 'content-length' || h.toLowerCase() === 'transfer-encoding')
  if (body !== undefined && !framed) {
    if (Array.isArray(headers)) headers.push('Content-Length', String(body.length))
    else headers['Content-Length'] = String(body.length)
  }
  let request: http.ClientRequest | undefined
  const done = new Promise<CapturedResponse>((resolve, reject) => {
    request = http.request(
      { host: target.host ?? '127.0.0.1', port: target.port, agent: target.agent, method, path: spec.path, headers },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.once('error', reject)
        res.once('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            statusMessage: res.statusMessage ?? '',
            httpVersion: res.httpVersion,
            rawHeaders: res.rawHeaders,
            headers: headerMap(res.rawHeaders),
            body: Buffer.concat(chunks),
          }),
        )
      },
    )
    request.once('error', reject)
    const pieces = Math.max(1, spec.bodyPieces ?? 1)
    if (body !== undefined && pieces > 1) {
      const size = Math.ceil(body.length / pieces)
      for (let at = 0; at < body.length; at += size) request.write(body.subarray(at, at + size))
      request.end()
    } else {
      request.end(body)
    }
  })
  return withTimeout(done, timeoutMs, `${method} ${spec.path} on port ${target.port}`).catch((err: unknown) => {
    request?.destroy()
    throw err
  })
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

function looksLikeText(b: Buffer): boolean {
  return !b.subarray(0, 4096).some((c) => c < 9 || (c > 13 && c < 32))
}

function showBody(b: Buffer): string {
  if (b.length <= 600 && looksLikeText(b)) return JSON.stringify(b.toString('latin1'))
  return `${b.length} bytes, sha256 ${sha256(b)}`
}

function showValues(v: string[] | undefined): string {
  return v === undefined ? '(absent)' : JSON.stringify(v)
}

export interface CompareOptions {
  /** Lower-cased header names not compared (default: ['date']). */
  ignoreHeaders?: readonly string[]
}

/**
 * Every difference between `expected` (the reference) and `actual`, one
 * readable line each; [] when they are the same. Compares the status code,
 * the reason phrase, every header (by lower-cased name, each name's values
 * as an ordered list) but the ignored ones, and the body bytes.
 */
export function compareResponses(expected: CapturedResponse, actual: CapturedResponse, opts: CompareOptions = {}): string[] {
  const ignore = new Set(opts.ignoreHeaders ?? ['date'])
  const diffs: string[] = []
  if (expected.status !== actual.status || expected.statusMessage !== actual.statusMessage) {
    diffs.push(`status line: expected ${expected.status} ${JSON.stringify(expected.statusMessage)}, got ${actual.status} ${JSON.stringify(actual.statusMessage)}`)
  }
  if (expected.httpVersion !== actual.httpVersion) {
    diffs.push(`http version: expected ${expected.httpVersion}, got ${actual.httpVersion}`)
  }
  const names = [...new Set([...expected.headers.keys(), ...actual.headers.keys()])].sort()
  for (const name of names) {
    if (ignore.has(name)) continue
    const e = expected.headers.get(name)
    const a = actual.headers.get(name)
    if (JSON.stringify(e) !== JSON.stringify(a)) diffs.push(`header ${name}: expected ${showValues(e)}, got ${showValues(a)}`)
  }
  if (!expected.body.equals(actual.body)) {
    let at = 0
    while (at < expected.body.length && at < actual.body.length && expected.body[at] === actual.body[at]) at++
    diffs.push(`body (first difference at byte ${at}): expected ${showBody(expected.body)}, got ${showBody(actual.body)}`)
  }
  return diffs
}

/** A response as text, for messages: status line, raw headers, body summary. */
export function formatResponse(r: CapturedResponse): string {
  const lines = [`HTTP/${r.httpVersion} ${r.status} ${r.statusMessage}`]
  for (let i = 0; i + 1 < r.rawHeaders.length; i += 2) lines.push(`${r.rawHeaders[i]}: ${r.rawHeaders[i + 1]}`)
  lines.push('', showBody(r.body))
  return lines.join('\n')
}

/**
 * Writes `request` (a complete raw HTTP/1.x request; use `Connection: close`)
 * on a fresh TCP connection and resolves with every byte received until the
 * server closes it.
 */
export function sendRawHttp(target: { host?: string; port: number }, request: string | Buffer, timeoutMs = 15000): Promise<Buffer> {
  let socket: net.Socket | undefined
  const done = new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = []
    socket = net.connect(target.port, target.host ?? '127.0.0.1', () => socket!.write(request))
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.once('error', reject)
    socket.once('close', () => resolve(Buffer.concat(chunks)))
  })
  return withTimeout(done, timeoutMs, `raw HTTP request on port ${target.port}`).finally(() => socket?.destroy())
}

/**
 * The FIRST response in raw bytes: status line, headers, and its body
 * (Content-Length, chunked, or up to the end of the bytes). `rest` is
 * whatever follows it (a second response, for instance).
 */
export function parseRawResponse(raw: Buffer): CapturedResponse & { statusLine: string; rest: Buffer } {
  const end = raw.indexOf('\r\n\r\n')
  if (end < 0) throw new Error(`no complete HTTP head in ${JSON.stringify(raw.toString('latin1').slice(0, 200))}`)
  const lines = raw.subarray(0, end).toString('latin1').split('\r\n')
  const statusLine = lines[0]!
  const m = /^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/.exec(statusLine)
  if (!m) throw new Error(`not an HTTP status line: ${JSON.stringify(statusLine)}`)
  const rawHeaders: string[] = []
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':')
    rawHeaders.push(line.slice(0, colon), line.slice(colon + 1).trim())
  }
  const headers = headerMap(rawHeaders)
  let at = end + 4
  let body: Buffer
  const status = Number(m[2])
  if (status < 200 || status === 204 || status === 304) {
    body = Buffer.alloc(0)
  } else if (headers.get('transfer-encoding')?.some((v) => /chunked/i.test(v))) {
    const parts: Buffer[] = []
    for (;;) {
      const lineEnd = raw.indexOf('\r\n', at)
      if (lineEnd < 0) throw new Error('truncated chunked body')
      const size = parseInt(raw.subarray(at, lineEnd).toString('latin1'), 16)
      at = lineEnd + 2
      if (size === 0) {
        const trailerEnd = raw.indexOf('\r\n', at)
        at = trailerEnd < 0 ? raw.length : trailerEnd + 2
        break
      }
      parts.push(raw.subarray(at, at + size))
      at += size + 2
    }
    body = Buffer.concat(parts)
  } else if (headers.has('content-length')) {
    const n = Number(headers.get('content-length')![0])
    body = raw.subarray(at, at + n)
    at += n
  } else {
    body = raw.subarray(at)
    at = raw.length
  }
  return { statusLine, status, statusMessage: m[3] ?? '', httpVersion: m[1]!, rawHeaders, headers, body, rest: raw.subarray(at) }
}
