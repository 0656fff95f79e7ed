// libfcgi's FCGX_Request: accept -> env/stdin -> stdout/stderr -> finish,
// with every blocking step on the addon's own threads.
import { EventEmitter } from 'node:events'
import { Readable, Writable } from 'node:stream'

import { FastCGIError, statusError } from './errors.js'
import { envFromPairs, joinRepeatedParam } from './http/cgi.js'
import { EventKind, native, type SlotHandle, STATUS_CLOSED } from './native.js'
import { FcgiSocket, inheritedSocket } from './socket.js'

export type Role = 'RESPONDER' | 'AUTHORIZER' | 'FILTER'
const ROLES: Record<number, Role> = { 1: 'RESPONDER', 2: 'AUTHORIZER', 3: 'FILTER' }

// One native read moves up to this much (the block is shrunk to what
// arrived, see native/server.cc RunRead). Not more: blocks of 256 KiB cost a
// 1 GiB upload ~68 MiB of RSS instead of < 64 (glibc serves blocks above
// its mmap threshold from per-thread arenas once the threshold adapts, and
// they are freed on another thread), for a gain only createServer's echo saw.
const READ_SIZE = 64 * 1024
// FCGI_STDOUT/STDERR's highWaterMark. Kept at 64 KiB: a write of that size
// must return false, since the http layer acknowledges a write at once while
// stdout has room, and large writes are read in place (native/addon.cc WriteJs).
const WRITE_HWM = 64 * 1024

type Callback = (err?: Error | null) => void
const noop: Callback = () => {}

/** Errors reach 'error' only when somebody listens (as node:http's IncomingMessage). */
function quietDestroy(stream: Readable | Writable, err: Error | null, cb: (err: Error | null) => void): void {
  cb(err && stream.listenerCount('error') > 0 ? err : null)
}

/** FCGI_STDIN or FCGI_DATA of one request. */
class InputStream extends Readable {
  readonly #req: Request
  readonly #stream: 0 | 1
  constructor(req: Request, stream: 0 | 1) {
    super({ highWaterMark: READ_SIZE })
    this.#req = req
    this.#stream = stream
  }
  override _read(size: number): void {
    this.#req._read(this.#stream, Math.max(size, READ_SIZE), this)
  }
  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    quietDestroy(this, err, cb)
  }
}

/** FCGI_STDOUT or FCGI_STDERR of one request: the callback of a write fires once the bytes are with the kernel. */
class OutputStream extends Writable {
  readonly #req: Request
  readonly #stream: 1 | 2
  constructor(req: Request, stream: 1 | 2) {
    super({ highWaterMark: WRITE_HWM })
    this.#req = req
    this.#stream = stream
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: Callback): void {
    this.#req._write(this.#stream, chunk, cb)
  }
  override _writev(chunks: Array<{ chunk: Buffer }>, cb: Callback): void {
    this.#req._write(this.#stream, chunks.map((c) => c.chunk), cb)
  }
  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    quietDestroy(this, err, cb)
  }
}

type State = 'idle' | 'accepting' | 'active' | 'finishing'

/**
 * One FastCGI request slot, reused from request to request like libfcgi's
 * `FCGX_Request`:
 *
 * ```ts
 * const req = new Request(socket)
 * while (await req.accept()) {
 *   req.stdout.write('Content-Type: text/plain\r\n\r\nHello\n')
 *   await req.finish()
 * }
 * ```
 *
 * Several Request objects on one socket accept in parallel.
 *
 * Events: `'aborted'` (the web server aborted or dropped the request),
 * `'close'` (the request is over: finished or aborted and finished).
 */
export class Request extends EventEmitter {
  readonly socket: FcgiSocket
  role: Role = 'RESPONDER'
  /** FastCGI request id of the current request. */
  requestId = 0
  /** The web server asked to keep the connection open (FCGI_KEEP_CONN). */
  keepConnection = false
  /** True once the web server aborted or dropped the current request. */
  aborted = false
  // Made on first use: a hello-world handler never pays for what it ignores.
  #params = ''
  #env: Record<string, string> | undefined
  #pairs: Array<[string, string]> | undefined
  #stdin: InputStream | undefined
  #data: InputStream | undefined
  #stdout: OutputStream | undefined
  #stderr: OutputStream | undefined
  #controller: AbortController | undefined
  #slot: SlotHandle | undefined
  #slotId = 0
  #state: State = 'idle'
  #exitStatus = 0
  #acceptWaiter: ((ok: boolean) => void) | undefined
  #acceptReject: ((err: Error) => void) | undefined
  #readTarget: InputStream | undefined
  // A read asked for by the other input stream while one was still in flight
  // (FCGI_DATA after FCGI_STDIN was destroyed by an abort before its read
  // completed): sent once that stream is over, or it would wait forever.
  #deferredRead: { stream: 0 | 1; max: number; target: InputStream } | undefined
  // Writes wait here until the check phase of this loop turn, so that a response
  // written and finished in one go leaves in a single native operation.
  #outQueue: Array<{ stream: 1 | 2; chunk: Buffer; cb: Callback }> = []
  #flushScheduled = false
  #writeCallbacks: Callback[][] = []
  #finishCallbacks: Callback[] = []
  #finishWaiters: Array<() => void> = []
  #pending = 0
  #generation = 0  // counts requests: late events of an old request are dropped

  /** `socket` defaults to the listen socket a web server passed as fd 0. */
  constructor(socket?: FcgiSocket) {
    super()
    if (socket !== undefined && !(socket instanceof FcgiSocket)) {
      const err = new TypeError('socket must be an FcgiSocket made by initSocket()') as TypeError & { code: string }
      err.code = 'ERR_INVALID_ARG_TYPE'
      throw err
    }
    this.socket = socket ?? inheritedSocket()
  }

  /**
   * FCGI_PARAMS of the current request (the CGI environment), as a plain
   * object. A name sent more than once (nginx 1.22 sends a repeated HTTP
   * header so) keeps its first value, but for HTTP_* variables, whose values
   * are joined as node:http joins repeated headers (", ", "; " for cookies).
   */
  get env(): Record<string, string> {
    this.#env ??= envFromPairs(this.paramPairs())
    return this.#env
  }

  /** FCGI_PARAMS of the current request as sent: [name, value] pairs in order, repeats included. */
  paramPairs(): Array<[string, string]> {
    if (this.#pairs === undefined) {
      const pairs: Array<[string, string]> = []
      if (this.#params !== '') {
        for (const kv of this.#params.split('\0')) {
          const eq = kv.indexOf('=')
          pairs.push(eq < 0 ? [kv, ''] : [kv.slice(0, eq), kv.slice(eq + 1)])
        }
      }
      this.#pairs = pairs
    }
    return this.#pairs
  }

  /** @internal FCGI_PARAMS as received ("NAME=value" strings joined with NUL), for createServer's one-pass parse. */
  _rawParams(): string {
    return this.#params
  }

  /** FCGI_STDIN of the current request. */
  get stdin(): Readable {
    if (!this.#live()) return closedInput()
    return (this.#stdin ??= new InputStream(this, 0))
  }

  /** FCGI_DATA of the current request (FILTER role; empty otherwise). */
  get data(): Readable {
    if (!this.#live() || this.role !== 'FILTER') return closedInput()
    return (this.#data ??= new InputStream(this, 1))
  }

  /** FCGI_STDOUT of the current request: a CGI response (headers, blank line, body). */
  get stdout(): Writable {
    if (!this.#live()) return closedOutput()
    return (this.#stdout ??= new OutputStream(this, 1))
  }

  /** FCGI_STDERR of the current request: goes to the web server's error log. */
  get stderr(): Writable {
    if (!this.#live()) return closedOutput()
    return (this.#stderr ??= new OutputStream(this, 2))
  }

  /** Aborted when the web server aborts or drops the current request. */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController()
      if (this.aborted) this.#controller.abort(abortedError())
    }
    return this.#controller.signal
  }

  /** True between a successful accept() and finish(). */
  get active(): boolean {
    return this.#state === 'active'
  }

  /**
   * `FCGX_GetParam(name, envp)`: the value of one param, as `env[name]`,
   * found in the params as received without building `env` (cheap enough
   * for every request).
   */
  getParam(name: string): string | undefined {
    if (this.#env !== undefined) return Object.prototype.hasOwnProperty.call(this.#env, name) ? this.#env[name] : undefined
    const params = this.#params
    const key = `${name}=`
    let value: string | undefined
    for (let at = params.startsWith(key) ? 0 : params.indexOf(`\0${key}`); at >= 0; at = params.indexOf(`\0${key}`, at + 1)) {
      const start = at === 0 && params.startsWith(key) ? key.length : at + 1 + key.length
      const end = params.indexOf('\0', start)
      const found = params.slice(start, end < 0 ? params.length : end)
      if (value === undefined) value = found
      else {
        const joined = joinRepeatedParam(name, value, found)
        if (joined === undefined) break
        value = joined
      }
      if (end < 0) break
    }
    return value
  }

  /** `FCGX_SetExitStatus`: the appStatus of FCGI_END_REQUEST. */
  setExitStatus(status: number): void {
    if (!Number.isInteger(status) || status < -2147483648 || status > 2147483647) {
      throw new RangeError(`exit status must be a 32-bit integer, got ${status}`)
    }
    this.#exitStatus = status
  }

  /**
   * `FCGX_Accept_r`: finishes the current request if any, then waits for the
   * next one. Resolves `false` once the socket is closed.
   */
  async accept(): Promise<boolean> {
    if (this.#state === 'accepting') {
      throw new FastCGIError('ERR_FASTCGI_ACCEPT_PENDING', 'accept() is already pending on this Request')
    }
    if (this.#state === 'active' || this.#state === 'finishing') await this.finish()
    if (!this.socket._canAccept()) return false
    // The native slot (an FCGX_Request) is made on first use.
    if (this.#slot === undefined) [this.#slot, this.#slotId] = this.socket._newSlot(this)
    const slot = this.#slot
    this.#state = 'accepting'
    return new Promise<boolean>((resolve, reject) => {
      this.#acceptWaiter = resolve
      this.#acceptReject = reject
      this.#begin()
      try {
        this.socket._accept(slot)
      } catch (err) {
        this.#end()
        this.#state = 'idle'
        this.#acceptWaiter = this.#acceptReject = undefined
        reject(err as Error)
      }
    })
  }

  /**
   * `FCGX_Finish_r`: ends stdout and stderr, sends FCGI_END_REQUEST. Safe to
   * call more than once; resolves when the web server has the response.
   */
  async finish(): Promise<void> {
    if (this.#state === 'finishing') return new Promise<void>((resolve) => this.#finishWaiters.push(resolve))
    if (this.#state !== 'active') return
    this.#state = 'finishing'
    const done = new Promise<void>((resolve) => this.#finishWaiters.push(resolve))
    const out = this.#stdout
    const err = this.#stderr
    out?.end()
    err?.end()
    // Fast path: every byte written is still in our queue (nothing waits
    // inside the Writables): it goes out with the end records.
    const queued = (stream: 1 | 2) => this.#outQueue.reduce((n, w) => n + (w.stream === stream ? w.chunk.length : 0), 0)
    const allQueued = (w: OutputStream | undefined, stream: 1 | 2) => !w || w.destroyed || w.writableLength === queued(stream)
    if (!(allQueued(out, 1) && allQueued(err, 2))) {
      this.#flushOut()
      await Promise.all([out && endStream(out), err && endStream(err)])
    }
    const tail: Buffer[] = []
    const cbs: Callback[] = []
    if (this.#outQueue.length > 0 && !this.aborted) {
      // stderr first as its own write, then stdout with the end records.
      const last = this.#outQueue.filter((w) => w.stream === 1)
      const before = this.#outQueue.filter((w) => w.stream === 2)
      this.#outQueue = before
      this.#flushOut()
      for (const w of last) {
        tail.push(w.chunk)
        cbs.push(w.cb)
      }
    } else {
      this.#flushOut()
    }
    this.#finishCallbacks = cbs
    // With no operation of ours outstanding, a small response is sent at
    // once by the native side (no thread hop); its result is delivered as the
    // completion would be, after the current synchronous code.
    const now = this.#pending === 0
    this.#begin()
    const status = native.finish(this.#slot!, this.#exitStatus, tail.length === 0 ? undefined : tail.length === 1 ? tail[0] : tail, now)
    if (status !== undefined) {
      const id = this.#slotId
      queueMicrotask(() => this.socket._event(id, EventKind.Finish, status))
    }
    return done
  }

  /**
   * Ends the current request without FCGI_END_REQUEST: its connection is
   * closed, so the web server sees the response cut short (what a reset
   * socket means for node:http) rather than complete. For a response that
   * failed half-way; finish() is the normal end.
   */
  async abort(): Promise<void> {
    if (this.#state === 'finishing') return new Promise<void>((resolve) => this.#finishWaiters.push(resolve))
    if (this.#state !== 'active') return
    this.#state = 'finishing'
    const done = new Promise<void>((resolve) => this.#finishWaiters.push(resolve))
    const err = abortedError()
    for (const w of this.#outQueue.splice(0)) w.cb(err)
    for (const s of [this.#stdout, this.#stderr]) if (s && !s.destroyed) s.destroy()
    this.#begin()
    native.abort(this.#slot!)
    return done
  }

  // ---- stream plumbing

  /** @internal */
  _read(stream: 0 | 1, max: number, target: InputStream): void {
    if (this.#state !== 'active') return
    if (this.#readTarget) {
      if (this.#readTarget !== target) this.#deferredRead = { stream, max, target }
      return
    }
    this.#readTarget = target
    this.#begin()
    native.read(this.#slot!, stream, max)
  }

  /** @internal */
  _write(stream: 1 | 2, chunk: Buffer | Buffer[], cb: Callback): void {
    if (this.#state === 'idle' || this.#state === 'accepting') {
      cb(new FastCGIError('ERR_FASTCGI_REQUEST_NOT_ACTIVE', 'the request is finished'))
      return
    }
    if (this.aborted) {
      cb(abortedError())
      return
    }
    if (Array.isArray(chunk) && chunk.length > 0) {
      // One entry per Buffer (no concatenation: large writes are not copied
      // at all, see native/addon.cc WriteJs); the callback goes with the last.
      for (let i = 0; i < chunk.length - 1; i++) this.#outQueue.push({ stream, chunk: chunk[i]!, cb: noop })
      this.#outQueue.push({ stream, chunk: chunk[chunk.length - 1]!, cb })
    } else {
      this.#outQueue.push({ stream, chunk: Array.isArray(chunk) ? Buffer.alloc(0) : chunk, cb })
    }
    if (!this.#flushScheduled) {
      // setImmediate, not nextTick: the promise and stream callbacks that
      // end a response (ServerResponse 'finish' -> finish()) all run first,
      // so a response's last write leaves together with FCGI_END_REQUEST.
      this.#flushScheduled = true
      setImmediate(this.#flushSoon)
    }
  }

  #flushSoon = (): void => {
    this.#flushScheduled = false
    this.#flushOut()
  }

  /** Hands the queued writes to the native strand, one op per run of one stream. */
  #flushOut(): void {
    while (this.#outQueue.length > 0) {
      const stream = this.#outQueue[0]!.stream
      let n = 1
      while (n < this.#outQueue.length && this.#outQueue[n]!.stream === stream) n++
      const run = this.#outQueue.splice(0, n)
      this.#writeCallbacks.push(run.map((w) => w.cb))
      this.#begin()
      native.write(this.#slot!, stream, run.length === 1 ? run[0]!.chunk : run.map((w) => w.chunk))
    }
  }

  /** @internal completions from the native core, on the JS thread */
  _onNativeEvent(_slotId: number, kind: EventKind, status: number, payload: unknown, n1: number, n2: number): void {
    switch (kind) {
      case EventKind.Accept: {
        this.#end()
        const resolve = this.#acceptWaiter
        const reject = this.#acceptReject
        this.#acceptWaiter = this.#acceptReject = undefined
        if (status !== 0) {
          this.#state = 'idle'
          if (status === STATUS_CLOSED) resolve?.(false)
          else reject?.(statusError(status, 'accept'))
          return
        }
        this.#startRequest(payload as string, n1, n2)
        resolve?.(true)
        return
      }
      case EventKind.Read: {
        this.#end()
        const target = this.#readTarget
        this.#readTarget = undefined
        // The other stream's read waits until this stream is over (destroyed or at its end).
        const deferred = this.#deferredRead
        if (deferred && (!target || target.destroyed || (status === 0 && n1 === 1))) {
          this.#deferredRead = undefined
          if (!deferred.target.destroyed) queueMicrotask(() => this._read(deferred.stream, deferred.max, deferred.target))
        }
        if (!target || target.destroyed) return
        if (status !== 0) {
          target.destroy(status === 125 /* ECANCELED */ ? undefined : statusError(status, 'read'))
          return
        }
        const more = payload === undefined ? true : target.push(payload as Buffer)
        if (n1 === 1) target.push(null)
        else if (more && payload === undefined) this._read(target === this.#data ? 1 : 0, READ_SIZE, target)
        return
      }
      case EventKind.Write: {
        this.#end()
        const error = status === 0 ? null : statusError(status, 'write')
        for (const cb of this.#writeCallbacks.shift() ?? []) cb(error)
        return
      }
      case EventKind.Abort:
        this.#onAbort()
        return
      case EventKind.Finish: {
        this.#end()
        this.#state = 'idle'
        const error = status === 0 ? null : statusError(status, 'write')
        for (const cb of this.#finishCallbacks.splice(0)) cb(error)
        for (const s of [this.#stdin, this.#data]) if (s && !s.destroyed && !s.readableEnded) s.destroy()
        // Let go of the streams now, not at the next accept: their listeners
        // hold the app's per-request state (a 1 MiB body it collected), and
        // a slot may wait long for its next request (the getters answer with
        // closed streams from now on).
        this.#stdin = this.#data = this.#stdout = this.#stderr = undefined
        for (const w of this.#finishWaiters.splice(0)) w()
        this.emit('close')
        return
      }
    }
  }

  #startRequest(params: string, role: number, info: number): void {
    this.#generation++
    this.#params = params
    this.#env = undefined
    this.#pairs = undefined
    this.role = ROLES[role] ?? 'RESPONDER'
    this.requestId = info & 0xffff
    this.keepConnection = info >= 65536
    this.aborted = false
    this.#exitStatus = 0
    this.#controller = undefined
    this.#stdin = this.#data = this.#stdout = this.#stderr = undefined
    this.#deferredRead = undefined
    this.#state = 'active'
  }

  #live(): boolean {
    return this.#state === 'active' || this.#state === 'finishing'
  }

  #onAbort(): void {
    if (this.aborted || this.#state === 'idle') return
    this.aborted = true
    const err = abortedError()
    for (const s of [this.#stdin, this.#data]) if (s && !s.destroyed && !s.readableEnded) s.destroy(err)
    for (const s of [this.#stdout, this.#stderr]) if (s && !s.destroyed) s.destroy()
    // Queued writes will never be sent.
    for (const w of this.#outQueue.splice(0)) w.cb(err)
    // The abort can arrive together with the request itself: the events wait
    // until the code that awaited accept() has run and could listen.
    const generation = this.#generation
    setImmediate(() => {
      if (generation !== this.#generation) return
      this.#controller?.abort(err)
      this.emit('aborted')
    })
  }

  #begin(): void {
    if (this.#pending++ === 0) this.socket._pin(this)
  }

  #end(): void {
    if (--this.#pending === 0) this.socket._unpin(this)
  }

}

function abortedError(): FastCGIError {
  return new FastCGIError('ERR_FASTCGI_REQUEST_ABORTED', 'the web server aborted the request')
}

function closedInput(): Readable {
  const r = new Readable({ read() {} })
  r.push(null)
  return r
}

function closedOutput(): Writable {
  return new Writable({
    write: (_c, _e, cb) => cb(new FastCGIError('ERR_FASTCGI_REQUEST_NOT_ACTIVE', 'no request is active: call accept() first')),
  })
}

function endStream(stream: Writable): Promise<void> {
  if (stream.destroyed || stream.writableFinished) return Promise.resolve()
  return new Promise<void>((resolve) => {
    const done = () => {
      stream.off('finish', done)
      stream.off('close', done)
      stream.off('error', done)
      resolve()
    }
    stream.on('finish', done)
    stream.on('close', done)
    stream.on('error', done)
    if (!stream.writableEnded) stream.end()
  })
}
