// serve({ fetch }): WHATWG Request -> Response handlers (Hono's app.fetch,
// itty-router, a plain function) served over FastCGI.
import { once } from 'node:events'
import { Readable } from 'node:stream'

import { type ListenAddress, parseMode } from '../address.js'
import { createServer, type IncomingMessage, type Server, type ServerOptions, type ServerResponse } from './server.js'

/** What a fetch handler gets besides the Request: the FastCGI params. */
export interface FetchContext {
  /** All FastCGI params (the CGI environment) of the request. */
  env: Record<string, string>
  remoteAddress: string | undefined
  remotePort: number | undefined
}

export type FetchHandler = (request: Request, context: FetchContext) => Response | Promise<Response>

export interface ServeOptions extends ServerOptions {
  fetch: FetchHandler
  /** Where to listen: a port, "host:port", a unix path, `{ fd }`; default fd 0 (started by a web server). */
  listen?: ListenAddress
  port?: number
  hostname?: string
  /** Unix socket path (with `mode` for its permissions). */
  path?: string
  /** Turns an error thrown by `fetch` into a response (default: 500). */
  onError?: (err: unknown, request: Request) => Response | Promise<Response>
}

const BODYLESS = new Set(['GET', 'HEAD'])

/** The WHATWG Request for a FastCGI request (streaming body, abort signal). */
export function toFetchRequest(req: IncomingMessage, signal: AbortSignal): Request {
  const env = req.env
  const secure = (req.socket as { encrypted?: boolean }).encrypted === true
  const host = req.headers.host ?? (env.SERVER_NAME ? `${env.SERVER_NAME}${env.SERVER_PORT ? `:${env.SERVER_PORT}` : ''}` : 'localhost')
  const url = new URL(req.url ?? '/', `${secure ? 'https' : 'http'}://${host}`)
  const headers = new Headers()
  for (let i = 0; i < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i]!, req.rawHeaders[i + 1]!)
  const method = req.method ?? 'GET'
  const init: RequestInit & { duplex?: 'half' } = { method, headers, signal }
  if (!BODYLESS.has(method)) {
    init.body = Readable.toWeb(req) as unknown as ReadableStream<Uint8Array>
    init.duplex = 'half'
  }
  return new Request(url, init)
}

/** Writes a WHATWG Response to a ServerResponse, with backpressure. */
export async function sendFetchResponse(response: Response, res: ServerResponse, signal: AbortSignal): Promise<void> {
  res.statusCode = response.status
  if (response.statusText) res.statusMessage = response.statusText
  const cookies = response.headers.getSetCookie()
  if (cookies.length > 0) res.setHeader('Set-Cookie', cookies)
  response.headers.forEach((value, name) => {
    if (name !== 'set-cookie') res.setHeader(name, value)
  })
  if (!response.body) {
    res.end()
    return
  }
  const reader = response.body.getReader()
  const cancel = () => { void reader.cancel(signal.reason).catch(() => {}) }
  signal.addEventListener('abort', cancel, { once: true })
  try {
    // A body that comes in one piece (new Response(string | buffer | JSON))
    // is sent with res.end(chunk), so node:http gives it a Content-Length.
    const first = await reader.read()
    if (first.done) {
      res.end()
      return
    }
    // Only if the rest is already there: a streamed body's first chunk must
    // not wait for the second.
    const secondRead = reader.read()
    const NOT_YET = Symbol('not yet')
    const quick = await Promise.race([secondRead, new Promise<typeof NOT_YET>((resolve) => setImmediate(resolve, NOT_YET))])
    if (quick !== NOT_YET && quick.done) {
      res.end(first.value)
      return
    }
    let chunk: Uint8Array = first.value
    let pending: Promise<ReadableStreamReadResult<Uint8Array>> = secondRead
    for (;;) {
      if (res.destroyed) return
      if (!res.write(chunk)) await Promise.race([once(res, 'drain'), once(res, 'close')])
      const next = await pending
      if (next.done) break
      chunk = next.value
      pending = reader.read()
    }
    res.end()
  } catch (err) {
    // The body failed half-way: cut the response short (the client must not
    // take it for complete), as node:http does by destroying the socket.
    if (!res.headersSent) throw err
    res.destroy(err as Error)
  } finally {
    signal.removeEventListener('abort', cancel)
  }
}

/**
 * A fetch-style FastCGI server:
 *
 * ```ts
 * import { Hono } from 'hono'
 * const app = new Hono().get('/', (c) => c.text('Hello'))
 * serve({ fetch: app.fetch, path: '/run/app.sock' })
 * ```
 *
 * `request.signal` is aborted when the web server drops the request.
 */
/**
 * A node:http request listener that runs a fetch handler: what serve() uses,
 * for a createServer() of your own (or the `libfcgi serve` command).
 */
export function fetchListener(handler: FetchHandler, onError?: ServeOptions['onError']): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  return async (req, res) => {
    const controller = new AbortController()
    const onClose = () => {
      if (!res.writableFinished) controller.abort(new Error('the web server dropped the request'))
    }
    res.once('close', onClose)
    const request = toFetchRequest(req, controller.signal)
    let response: Response
    try {
      response = await handler(request, { env: req.env, remoteAddress: req.socket.remoteAddress, remotePort: req.socket.remotePort })
    } catch (err) {
      if (!onError) throw err
      response = await onError(err, request)
    }
    await sendFetchResponse(response, res, controller.signal)
  }
}

export function serve(options: ServeOptions, onListening?: () => void): Server {
  const { fetch: handler, onError, listen, port, hostname, path, ...serverOptions } = options
  if (typeof handler !== 'function') {
    const err = new TypeError('serve() needs a fetch(request) function') as TypeError & { code: string }
    err.code = 'ERR_INVALID_ARG_TYPE'
    throw err
  }
  const server = createServer(serverOptions, fetchListener(handler, onError))
  const address: ListenAddress | undefined = listen ?? (path !== undefined ? { path, mode: parseMode(options.mode) } : port !== undefined ? { port, host: hostname } : undefined)
  if (onListening) server.once('listening', onListening)
  return address === undefined ? server.listen() : server.listen(address)
}
