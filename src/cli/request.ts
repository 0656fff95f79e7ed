// `libfcgi request`: one FastCGI request from the command line, as
// `cgi-fcgi -bind -connect` does, with curl's flags: health checks in
// Dockerfiles and systemd units, scripts, and the README's demo where no
// web server is installed. The protocol work is src/client.ts.
import { open, readFile } from 'node:fs/promises'
import type { Readable } from 'node:stream'

import {
  type ConnectTarget,
  type FcgiResponse,
  fcgiRequest,
  getValues,
  parseConnectAddress,
} from '../client.js'
import { type FlagSpec, flagsHelp, parseArgs, parseCount, parseDuration, UsageError } from './args.js'

/** Exit statuses: stable, for HEALTHCHECK and scripts. */
export const EXIT = {
  OK: 0,
  /** The response's status is >= --fail-status (default 500). */
  STATUS: 1,
  USAGE: 2,
  /** Could not connect: refused, no such socket, permission denied, unknown host. */
  CONNECT: 3,
  TIMEOUT: 4,
  /** Connected, but no valid FastCGI answer: garbage, an early close, a rejection (OVERLOADED...), a bad CGI head. */
  PROTOCOL: 5,
} as const

const SPECS: FlagSpec[] = [
  { name: 'connect', short: 'c', env: 'LIBFCGI_CONNECT', value: 'ADDR', help: 'server: /path.sock, unix:PATH, PORT, HOST:PORT, [V6]:PORT (else LIBFCGI_LISTEN)' },
  { name: 'request', short: 'X', value: 'METHOD', help: 'request method (default GET, or POST with -d)' },
  { name: 'header', short: 'H', repeat: true, value: "'NAME: VALUE'", help: "request header (repeatable); 'NAME:' drops a default one (Host)" },
  { name: 'data', short: 'd', repeat: true, value: 'DATA', help: 'request body: text, @FILE, or @- for stdin, sent byte for byte (repeats joined with &)' },
  { name: 'param', short: 'p', repeat: true, value: 'NAME=VALUE', help: 'extra or replacement FastCGI param (repeatable), e.g. -p SCRIPT_FILENAME=/srv/index.php' },
  { name: 'include', short: 'i', boolean: true, help: 'print the status line and the headers before the body' },
  { name: 'silent', short: 's', boolean: true, help: 'print neither the response nor the application\'s stderr: the exit status only' },
  { name: 'max-time', short: 'm', env: 'LIBFCGI_MAX_TIME', value: 'TIME', help: 'limit for connecting and the whole request, e.g. 10s, 500ms; 0: none (default 10s)' },
  { name: 'fail-status', value: 'N', help: 'exit 1 when the status is >= N (default 500); 0: never' },
  { name: 'get-values', boolean: true, help: 'send FCGI_GET_VALUES instead of a request; prints NAME=VALUE lines' },
  { name: 'help', short: 'h', boolean: true, help: 'this help' },
]

const HELP = `usage: libfcgi request [options] [PATH]

Sends one FastCGI request (responder role) to a FastCGI server, as a web
server would, and prints the response body to stdout. PATH is the request
target, e.g. /health?full (default /); http://HOST[:PORT]/PATH also works and
sets the Host header.

options:
${flagsHelp(SPECS)}

exit status:
  0  the response's status is below --fail-status
  1  the response's status is >= --fail-status (default: a 5xx)
  2  usage error (bad option, unreadable -d @FILE)
  3  could not connect (refused, no such socket, permission denied, unknown host)
  4  timeout (--max-time)
  5  FastCGI error: not a FastCGI server, connection closed before the end,
     request rejected (overloaded...), or a response that is not CGI

examples:
  libfcgi request --connect /run/app.sock /health
  libfcgi request -c 127.0.0.1:9000 -i -X POST -H 'Content-Type: application/json' -d @body.json /api/items
  libfcgi request -c /run/php/php-fpm.sock -s /ping   # PHP-FPM's ping page`

/** The errors that mean "could not reach the server at all". */
const CONNECT_CODES = new Set(['ECONNREFUSED', 'ENOENT', 'EACCES', 'EPERM', 'ENOTSOCK', 'ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'EPROTOTYPE', 'ENOTDIR', 'ECONNABORTED',
  // connect() on a unix socket whose listen backlog is full
  'EAGAIN'])

export function exitCodeFor(err: unknown): number {
  const code = (err as { code?: string } | undefined)?.code
  if (code === 'ETIMEDOUT') return EXIT.TIMEOUT
  if (code !== undefined && CONNECT_CODES.has(code)) return EXIT.CONNECT
  return EXIT.PROTOCOL
}

function fail(message: string, code: number): number {
  process.stderr.write(`libfcgi request: ${message}\n`)
  return code
}

function parseHeader(text: string): [string, string] {
  const colon = text.indexOf(':')
  if (colon <= 0) throw new UsageError(`-H ${JSON.stringify(text)}: expected 'Name: value'`)
  const name = text.slice(0, colon).trim()
  if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) throw new UsageError(`-H ${JSON.stringify(text)}: not a valid header name`)
  return [name, text.slice(colon + 1).trim()]
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk)
  return Buffer.concat(chunks)
}

interface Body {
  body: Buffer | Readable
  contentLength?: number
}

/**
 * -d values -> the body. One `@FILE` is streamed (its size is known
 * beforehand, so CONTENT_LENGTH is exact); stdin is read whole first, since
 * most servers need CONTENT_LENGTH; several -d are joined with `&` as curl does.
 * Local files are opened before connecting: an unreadable one is a usage error.
 */
async function loadBody(data: string[]): Promise<Body> {
  const readOne = async (item: string): Promise<Buffer> => {
    if (item === '@-') return readAll(process.stdin)
    if (item.startsWith('@')) {
      try {
        return await readFile(item.slice(1))
      } catch (err) {
        throw new UsageError(`-d ${item}: ${(err as Error).message}`)
      }
    }
    return Buffer.from(item)
  }
  if (data.length === 1 && data[0]!.startsWith('@') && data[0] !== '@-') {
    const file = data[0]!.slice(1)
    try {
      const handle = await open(file, 'r')
      const info = await handle.stat()
      if (!info.isFile()) {
        await handle.close()
        return { body: await readOne(data[0]!) }
      }
      return { body: handle.createReadStream(), contentLength: info.size }
    } catch (err) {
      if (err instanceof UsageError) throw err
      throw new UsageError(`-d @${file}: ${(err as Error).message}`)
    }
  }
  const parts: Buffer[] = []
  for (const [i, item] of data.entries()) {
    if (i > 0) parts.push(Buffer.from('&'))
    parts.push(await readOne(item))
  }
  return { body: Buffer.concat(parts) }
}

function write(stream: NodeJS.WriteStream, data: Buffer | string): Promise<void> {
  return new Promise((resolve) => {
    // EPIPE (`| head`) is not the request's failure: the exit status stays.
    stream.once('error', () => resolve())
    stream.write(data, () => resolve())
  })
}

function formatHead(res: FcgiResponse): string {
  let head = `HTTP/1.1 ${res.status}${res.statusText ? ` ${res.statusText}` : ''}\r\n`
  for (let i = 0; i < res.rawHeaders.length; i += 2) head += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`
  return `${head}\r\n`
}

export async function main(argv: string[]): Promise<number> {
  const { flags, source, positionals } = parseArgs(argv, SPECS)
  if (flags.get('help')) {
    process.stdout.write(`${HELP}\n`)
    return EXIT.OK
  }
  if (positionals.length > 1) throw new UsageError(`one PATH expected, got ${positionals.length}: ${positionals.join(' ')}`)

  // The server: --connect / LIBFCGI_CONNECT, else where `libfcgi serve` listens.
  let address = flags.get('connect') as string | undefined
  let from = source.get('connect') ?? '--connect'
  if (address === undefined && process.env.LIBFCGI_LISTEN) {
    address = process.env.LIBFCGI_LISTEN
    from = 'LIBFCGI_LISTEN'
  }
  if (address === undefined) throw new UsageError('no server address: give --connect ADDR (or set LIBFCGI_CONNECT)')
  let target: ConnectTarget
  try {
    target = parseConnectAddress(address)
  } catch (err) {
    throw new UsageError(`${from} ${address}: ${(err as Error).message}`)
  }
  const connect = target.kind === 'unix' ? { path: target.path } : { host: target.host, port: target.port }

  const timeoutText = flags.get('max-time') as string | undefined
  let timeout = timeoutText === undefined ? 10_000 : parseDuration(timeoutText, source.get('max-time') ?? '--max-time')
  const silent = flags.get('silent') === true

  if (flags.get('get-values')) {
    try {
      const values = await getValues(connect, undefined, { timeout })
      if (!silent) await write(process.stdout, Object.entries(values).map(([n, v]) => `${n}=${v}\n`).join(''))
      return EXIT.OK
    } catch (err) {
      return fail((err as Error).message, exitCodeFor(err))
    }
  }

  const failText = flags.get('fail-status') as string | undefined
  const failStatus = failText === undefined ? 500 : parseCount(failText, '--fail-status')

  // PATH, or an absolute http(s) URL whose authority becomes the Host header.
  let path = positionals[0] ?? '/'
  const headers: Array<[string, string]> = []
  const url = /^https?:\/\/([^/?#]+)([^#]*)/i.exec(path)
  if (url) {
    headers.push(['Host', url[1]!])
    path = url[2] || '/'
  }
  if (!path.startsWith('/')) throw new UsageError(`PATH must start with "/" (or be an http:// URL), got ${JSON.stringify(path)}`)
  const dropped = new Set<string>()
  for (const text of (flags.get('header') as string[] | undefined) ?? []) {
    const [name, value] = parseHeader(text)
    const lower = name.toLowerCase()
    // curl's convention: "Name:" with nothing after the colon removes the header.
    if (value === '' && /:\s*$/.test(text)) {
      dropped.add(lower)
      continue
    }
    if (lower === 'host') headers.splice(0, headers.length, ...headers.filter(([n]) => n.toLowerCase() !== 'host'))
    headers.push([name, value])
  }
  const params: Array<[string, string]> = []
  for (const text of (flags.get('param') as string[] | undefined) ?? []) {
    const eq = text.indexOf('=')
    if (eq <= 0) throw new UsageError(`-p ${JSON.stringify(text)}: expected NAME=VALUE`)
    params.push([text.slice(0, eq), text.slice(eq + 1)])
  }
  const finalHeaders = headers.filter(([n]) => !dropped.has(n.toLowerCase()))
  // fcgiRequest sends no HTTP_HOST for an empty Host.
  if (dropped.has('host')) finalHeaders.push(['Host', ''])

  const data = flags.get('data') as string[] | undefined
  let body: Body | undefined
  if (data) {
    // --max-time covers reading stdin too (a pipe that never closes).
    const started = Date.now()
    let timer: NodeJS.Timeout | undefined
    const expired = new Promise<'timeout'>((resolve) => { if (timeout) timer = setTimeout(() => resolve('timeout'), timeout) })
    const loaded = await Promise.race([loadBody(data), expired]).finally(() => clearTimeout(timer))
    if (loaded === 'timeout') {
      process.stdin.destroy()
      return fail(`timed out after ${timeout} ms reading the body (-d)`, EXIT.TIMEOUT)
    }
    body = loaded
    if (timeout) timeout = Math.max(1, timeout - (Date.now() - started))
    // curl's default for -d; a server decides from it how to parse the body.
    if (!finalHeaders.some(([n]) => n.toLowerCase() === 'content-type') && !dropped.has('content-type')) {
      finalHeaders.push(['Content-Type', 'application/x-www-form-urlencoded'])
    }
  }
  const method = (flags.get('request') as string | undefined) ?? (data ? 'POST' : 'GET')
  if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(method)) throw new UsageError(`-X ${JSON.stringify(method)}: not a method`)

  let res: FcgiResponse
  try {
    res = await fcgiRequest({
      connect,
      method,
      path,
      headers: finalHeaders,
      body: body?.body,
      contentLength: body?.contentLength,
      params,
      timeout: timeout || undefined,
    })
  } catch (err) {
    ;(body?.body as Readable | undefined)?.destroy?.()
    return fail((err as Error).message, exitCodeFor(err))
  }
  if (!silent) {
    if (res.stderr.length > 0) await write(process.stderr, res.stderr)
    if (flags.get('include')) await write(process.stdout, formatHead(res))
    if (res.body.length > 0) await write(process.stdout, res.body)
  }
  if (failStatus > 0 && res.status >= failStatus) {
    return fail(`the server answered ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`, EXIT.STATUS)
  }
  return EXIT.OK
}
