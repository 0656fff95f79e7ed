// CGI mode: a process started as a plain CGI program (RFC 3875) by a web
// server (Apache mod_cgi/mod_cgid, lighttpd mod_cgi, ...) instead of as a
// FastCGI application answers its one request and is done, as C libfcgi's
// FCGX_Accept and Python's flup do: the request is the process environment,
// its body is stdin (CONTENT_LENGTH bytes), the response (a CGI head with
// `Status:`, then the body) goes to stdout.
//
// No second http stack: the request goes through the same path as a FastCGI
// one (Server -> FcgiConnection -> node:http's IncomingMessage and
// ServerResponse). What FcgiConnection uses of a FastCGI request is small
// (`role`, `aborted`, `_write()`, `finish()`, `abort()`, `stdin`, `stderr`,
// plus the params string the server reads): CgiRequest below provides just
// that over the process's stdin, stdout and stderr.
import { EventEmitter } from 'node:events'
import { Readable, type Writable } from 'node:stream'

import { native } from '../native.js'
import { FCGI_LISTENSOCK_FILENO } from '../socket.js'

type Callback = (err?: Error | null) => void

/**
 * True when this process was started as a CGI program: fd 0 is not a
 * listening socket (so not FastCGI) and the web server set
 * GATEWAY_INTERFACE (RFC 3875 4.1.4; Apache, lighttpd and nginx's
 * fcgiwrap all do). Without GATEWAY_INTERFACE a process started by hand
 * keeps its clear "fd 0 is not a listening socket" error.
 */
export function isCgiInvocation(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.GATEWAY_INTERFACE !== undefined && !native.isListening(FCGI_LISTENSOCK_FILENO)
}

/** The environment as FastCGI params are received: "NAME=value" joined with NUL. */
function paramsFromEnv(env: NodeJS.ProcessEnv): string {
  const parts: string[] = []
  for (const [name, value] of Object.entries(env)) if (value !== undefined) parts.push(`${name}=${value}`)
  return parts.join('\0')
}

/** ERR_FASTCGI_REQUEST_ABORTED, as a FastCGI request's streams report a web server gone mid-request. */
function abortedError(what: string): Error {
  return Object.assign(new Error(`the web server went away (${what})`), { code: 'ERR_FASTCGI_REQUEST_ABORTED' })
}

/**
 * The request body: CONTENT_LENGTH bytes of stdin, no more (the web server
 * need not close stdin after the body). stdin is opened only when the app
 * reads the body: a request without one never touches it (it may be a
 * terminal when the program is tried by hand).
 */
function bodyStream(length: number): Readable {
  if (length === 0) return Readable.from([], { objectMode: false })
  let left = length
  let input: NodeJS.ReadStream | undefined
  const release = (): void => {
    if (!input) return
    input.off('data', onData)
    input.off('end', onEnd)
    input.off('error', onError)
    input.pause()
    // Let the process exit once the response is out (an open stdin pipe would hold the loop).
    ;(input as unknown as { unref?: () => void }).unref?.()
  }
  const onData = (chunk: Buffer): void => {
    const part = chunk.length > left ? chunk.subarray(0, left) : chunk
    left -= part.length
    const more = body.push(part)
    if (left === 0) {
      release()
      body.push(null)
    } else if (!more) {
      input!.pause()
    }
  }
  const onEnd = (): void => {
    release()
    if (left > 0) body.destroy(abortedError(`stdin ended ${left} bytes before CONTENT_LENGTH`))
  }
  const onError = (err: Error): void => {
    release()
    body.destroy(err)
  }
  const body = new Readable({
    read() {
      if (input === undefined) {
        input = process.stdin
        input.on('data', onData)
        input.on('end', onEnd)
        input.on('error', onError)
      }
      if (left > 0) input.resume()
    },
    destroy(err, cb) {
      release()
      cb(err)
    },
  })
  return body
}

/**
 * The one request of a CGI invocation, shaped as the part of a FastCGI
 * Request that the http layer uses (see the top of this file).
 */
export class CgiRequest extends EventEmitter {
  readonly role = 'RESPONDER' as const
  /** True once stdout failed (the web server closed it: the client is gone). */
  aborted = false
  /** True when the response was cut short (abort()): the process should then exit non-zero. */
  cut = false
  readonly #params: string
  readonly #length: number
  readonly #stdout: Writable
  readonly #stderr: Writable
  #stdin: Readable | undefined
  #pending = 0
  #idle: Array<() => void> = []

  constructor(env: NodeJS.ProcessEnv = process.env, stdout: Writable = process.stdout, stderr: Writable = process.stderr) {
    super()
    this.#params = paramsFromEnv(env)
    const length = Number(env.CONTENT_LENGTH ?? '')
    this.#length = Number.isSafeInteger(length) && length > 0 ? length : 0
    this.#stdout = stdout
    this.#stderr = stderr
    stdout.on('error', this.#onStdoutError)
  }

  #onStdoutError = (err: Error & { code?: string }): void => {
    if (this.aborted) return
    this.aborted = true
    this.emit('aborted', err)
  }

  /** @internal the params string, as FastCGI's (the environment). */
  _rawParams(): string {
    return this.#params
  }

  get stdin(): Readable {
    return (this.#stdin ??= bodyStream(this.#length))
  }

  /** stderr: the web server's error log (as FCGI_STDERR goes there). */
  get stderr(): Writable {
    return this.#stderr
  }

  /** @internal as Request._write: stream 1 is stdout, 2 is stderr. */
  _write(stream: 1 | 2, chunk: Buffer | Buffer[], cb: Callback): void {
    if (stream === 1 && this.aborted) {
      cb(abortedError('stdout closed'))
      return
    }
    const out = stream === 1 ? this.#stdout : this.#stderr
    const data = Array.isArray(chunk) ? Buffer.concat(chunk) : chunk
    this.#pending++
    out.write(data, (err) => {
      cb(err ?? null)
      if (--this.#pending === 0) for (const w of this.#idle.splice(0)) w()
    })
  }

  /** Resolves once everything written has reached stdout (or failed). */
  #flushed(): Promise<void> {
    if (this.#pending === 0) return Promise.resolve()
    return new Promise((resolve) => this.#idle.push(resolve))
  }

  /** The response is complete. */
  finish(): Promise<void> {
    this.#stdin?.destroy()
    return this.#flushed().then(() => {
      this.#stdout.off('error', this.#onStdoutError)
    })
  }

  /**
   * The response is cut short (the app failed after sending its head): CGI
   * has no way to say so but the end of the output; the caller exits
   * non-zero so that the web server logs a failure.
   */
  abort(): Promise<void> {
    this.cut = true
    return this.finish()
  }
}
