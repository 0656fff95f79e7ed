// Requests the web server gives up on: FCGI_ABORT_REQUEST, a closed
// connection, and what the application sees (and may still do) afterwards.
import { once } from 'node:events'

import { afterEach, describe, expect, it } from 'vitest'

import { type FcgiSocket, Request } from '../../src/index.js'
import {
  defaultParams,
  encodeAbort,
  encodeBeginRequest,
  encodeParams,
  encodeRecord,
  encodeStream,
  FCGI_END_REQUEST,
  FCGI_STDIN,
  type FcgiConnection,
  fcgiRequest,
  parseCgiResponse,
} from '../helpers/fcgi-client.js'
import { TestSession } from '../helpers/session.js'
import { trackUncaught } from '../helpers/uncaught.js'
import { sleep, tmpSocketPath, waitFor, withTimeout } from '../helpers/wait.js'

// ---------------------------------------------------------------- bookkeeping

const session = new TestSession()
afterEach(() => session.release())
// After the clean-up hook, so that it stops listening before the clean-up runs.
const uncaught = trackUncaught()

/** BEGIN_REQUEST + PARAMS (+ the STDIN given, terminated or not). */
async function begin(conn: FcgiConnection, uri: string, stdin?: { bytes: Buffer | string; complete: boolean }, contentLength?: number): Promise<void> {
  const body = stdin?.bytes
  const params = defaultParams({ REQUEST_URI: uri, ...(contentLength !== undefined ? { CONTENT_LENGTH: String(contentLength) } : {}) },
    contentLength === undefined ? body : undefined)
  const parts = [encodeBeginRequest(1), encodeParams(1, params)]
  if (stdin) {
    parts.push(stdin.complete ? encodeStream(FCGI_STDIN, 1, stdin.bytes) : encodeRecord(FCGI_STDIN, 1, stdin.bytes))
  }
  await conn.write(Buffer.concat(parts))
}

/**
 * The set-up of every test here: a socket, a Request accepting on it, and a
 * raw client that sends `uri` (see begin); resolves once the request is accepted.
 * `pauseClient`: the client reads nothing (paused before it sends).
 */
async function acceptedRequest(
  uri: string,
  stdin: { bytes: Buffer | string; complete: boolean },
  opts: { contentLength?: number; pauseClient?: boolean } = {},
): Promise<{ sock: FcgiSocket; path: string; req: Request; conn: FcgiConnection }> {
  const path = tmpSocketPath('abort')
  const sock = session.listen(path)
  const req = session.request(sock)
  const accepted = req.accept()
  const conn = await session.connect({ path })
  if (opts.pauseClient) conn.socket.pause()
  await begin(conn, uri, stdin, opts.contentLength)
  expect(await withTimeout(accepted, 5000, 'accept')).toBe(true)
  return { sock, path, req, conn }
}

/** Collects every 'error' a stream emits (so that its listener is present). */
function errorsOf(stream: NodeJS.EventEmitter): Error[] {
  const errs: Error[] = []
  stream.on('error', (e: Error) => errs.push(e))
  return errs
}

/** Writes with a callback; resolves with what the callback got (bounded). */
function writeCb(stream: NodeJS.WritableStream, chunk: string): Promise<Error | null | undefined> {
  return withTimeout(new Promise<Error | null | undefined>((resolve) => {
    stream.write(chunk, (err?: Error | null) => resolve(err))
  }), 5000, 'the write callback')
}

/** The same Request object serves a normal request afterwards. */
async function expectServesNext(req: Request, path: string): Promise<void> {
  const accepted = req.accept()
  const client = fcgiRequest({ path }, { params: defaultParams({ REQUEST_URI: '/next' }), stdin: 'n', timeoutMs: 10000 })
  expect(await withTimeout(accepted, 10000, 'the next accept')).toBe(true)
  expect(req.aborted).toBe(false)
  expect(req.signal.aborted).toBe(false)
  let input = ''
  for await (const c of req.stdin) input += String(c)
  req.stdout.write(`Content-Type: text/plain\r\n\r\nnext ${req.env.REQUEST_URI} ${input}`)
  await withTimeout(req.finish(), 5000, 'finish of the next request')
  const r = await client
  expect(parseCgiResponse(r.stdout).body.toString()).toBe('next /next n')
}

/** The client is not left hanging: it gets END_REQUEST or its connection closes. */
async function expectClientReleased(conn: FcgiConnection): Promise<void> {
  await waitFor(() => conn.closed || conn.pending.some((r) => r.type === FCGI_END_REQUEST),
    { timeoutMs: 5000, what: 'END_REQUEST or a closed connection after the abort' })
}

/** Lets late errors surface (50 ms), then expects no uncaught exception nor unhandled rejection. */
function expectNothingUncaught(): Promise<void> {
  return uncaught.expectNone(50)
}

// ---------------------------------------------------------------------- tests

describe('FCGI_ABORT_REQUEST', () => {
  it('after the full stdin, while the handler waits: aborted, signal, failing writes, finish, slot reused', async () => {
    const { path, req, conn } = await acceptedRequest('/busy', { bytes: 'hello', complete: true })
    let abortedEvents = 0
    req.on('aborted', () => { abortedEvents++ })
    const signalAbort = once(req.signal, 'abort')
    let input = ''
    for await (const c of req.stdin) input += String(c)
    expect(input).toBe('hello')
    expect(req.aborted).toBe(false)

    // The handler is busy (waiting on something) when the abort arrives.
    const work = session.gate()
    const handlerDone = (async () => {
      await work.promise
      return writeCb(req.stdout, 'Content-Type: text/plain\r\n\r\ntoo late')
    })()
    await conn.write(encodeAbort(1))
    await waitFor(() => abortedEvents > 0, { timeoutMs: 5000, what: "'aborted' after FCGI_ABORT_REQUEST" })
    await withTimeout(signalAbort, 1000, "the signal's 'abort' event")
    expect(req.aborted).toBe(true)
    expect(req.signal.aborted).toBe(true)
    expect((req.signal.reason as { code?: string }).code).toBe('ERR_FASTCGI_REQUEST_ABORTED')

    work.open()
    const writeErr = await handlerDone
    expect(writeErr).toBeInstanceOf(Error)
    await withTimeout(req.finish(), 5000, 'finish() after the abort')
    expect(abortedEvents).toBe(1)
    await expectClientReleased(conn)
    await expectServesNext(req, path)
    await expectNothingUncaught()
  })

  it('while the app reads stdin: stdin errors with ERR_FASTCGI_REQUEST_ABORTED and aborted fires', async () => {
    const { path, req, conn } = await acceptedRequest('/upload', { bytes: 'part-1', complete: false }, { contentLength: 1000 })
    let aborted = false
    req.on('aborted', () => { aborted = true })
    const errs = errorsOf(req.stdin)
    let received = ''
    req.stdin.on('data', (c: Buffer) => { received += c.toString() })
    await waitFor(() => received === 'part-1', { timeoutMs: 5000, what: 'the first part of the body' })

    // The app waits for more stdin now; the web server aborts instead.
    await conn.write(encodeAbort(1))
    await waitFor(() => errs.length > 0, { timeoutMs: 5000, what: "stdin's 'error'" })
    expect((errs[0] as Error & { code?: string }).code).toBe('ERR_FASTCGI_REQUEST_ABORTED')
    await waitFor(() => aborted, { timeoutMs: 5000, what: "'aborted'" })
    expect(req.aborted).toBe(true)
    expect(req.signal.aborted).toBe(true)
    await withTimeout(req.finish(), 5000, 'finish() after the abort')
    await expectClientReleased(conn)
    await expectServesNext(req, path)
    await expectNothingUncaught()
  })

  it('while the app reads stdin with for await: the loop throws ERR_FASTCGI_REQUEST_ABORTED, nothing uncaught', async () => {
    const { path, req, conn } = await acceptedRequest('/upload', { bytes: 'part-1', complete: false }, { contentLength: 1000 })
    let received = ''
    const reading = (async () => {
      try {
        for await (const c of req.stdin) received += String(c)
        return undefined
      } catch (err) {
        return err as Error & { code?: string }
      }
    })()
    await waitFor(() => received === 'part-1', { timeoutMs: 5000, what: 'the first part of the body' })
    await conn.write(encodeAbort(1))
    const err = await withTimeout(reading, 5000, 'the stdin loop to end')
    expect(err?.code).toBe('ERR_FASTCGI_REQUEST_ABORTED')
    expect(req.aborted).toBe(true)
    await withTimeout(req.finish(), 5000, 'finish() after the abort')
    await expectServesNext(req, path)
    await expectNothingUncaught()
  })
})

describe('the web server closes the connection', () => {
  it('while the handler runs after reading all of stdin: aborted fires', async () => {
    const { path, req, conn } = await acceptedRequest('/x', { bytes: 'all', complete: true })
    let input = ''
    for await (const c of req.stdin) input += String(c)
    expect(input).toBe('all')
    const aborted = once(req, 'aborted')
    conn.destroy()
    await withTimeout(aborted, 5000, "'aborted' after the client closed")
    expect(req.signal.aborted).toBe(true)
    await withTimeout(req.finish(), 5000, 'finish()')
    await expectServesNext(req, path)
    await expectNothingUncaught()
  })

  it('while the handler runs without touching stdin: aborted fires', async () => {
    const { path, req, conn } = await acceptedRequest('/x', { bytes: 'unread', complete: true })
    const aborted = once(req, 'aborted')
    conn.destroy()
    await withTimeout(aborted, 5000, "'aborted' after the client closed")
    expect(req.aborted).toBe(true)
    await withTimeout(req.finish(), 5000, 'finish()')
    await expectServesNext(req, path)
    await expectNothingUncaught()
  })

  it('while the handler waits for stdin that never comes (half the body, then closed): aborted, the read ends', async () => {
    const half = Buffer.alloc(500, 'h')
    const { path, req, conn } = await acceptedRequest('/half', { bytes: half, complete: false }, { contentLength: 1000 })
    let aborted = false
    req.on('aborted', () => { aborted = true })
    let received = 0
    const reading = (async () => {
      try {
        for await (const c of req.stdin) received += (c as Buffer).length
        return 'end'
      } catch (err) {
        return (err as { code?: string }).code ?? String(err)
      }
    })()
    await waitFor(() => received === half.length, { timeoutMs: 5000, what: 'the first half of the body' })
    conn.destroy()
    const outcome = await withTimeout(reading, 5000, 'the blocked stdin read to end after the client closed')
    // A truncated body must not look like a complete one.
    expect(outcome).not.toBe('end')
    await waitFor(() => aborted, { timeoutMs: 5000, what: "'aborted'" })
    expect(req.signal.aborted).toBe(true)
    await withTimeout(req.finish(), 5000, 'finish()')
    await expectServesNext(req, path)
    await expectNothingUncaught()
  })

  it('a handler that never reads nor writes: the slot is freed once it calls finish', async () => {
    const { sock, path, req, conn } = await acceptedRequest('/idle-handler', { bytes: '', complete: true })
    conn.destroy()
    await withTimeout(once(req, 'aborted'), 5000, "'aborted'")
    // Still the app's until it finishes.
    await sleep(100)
    expect(req.active).toBe(true)
    expect(sock.stats().busyConnections).toBe(1)
    const closed = once(req, 'close')
    await withTimeout(req.finish(), 5000, 'finish()')
    await withTimeout(closed, 1000, "'close'")
    expect(req.active).toBe(false)
    await waitFor(() => sock.stats().connections === 0, { timeoutMs: 5000, what: 'the dropped connection to be released' })
    await expectServesNext(req, path)
    await expectNothingUncaught()
  })

  it('a handler that only calls finish, long after the client left (without waiting for aborted)', async () => {
    const { sock, path, req, conn } = await acceptedRequest('/gone', { bytes: '', complete: true })
    conn.destroy()
    await sleep(300)
    req.stdout.write('Content-Type: text/plain\r\n\r\nnobody listens')
    await withTimeout(req.finish(), 5000, 'finish()')
    await waitFor(() => sock.stats().connections === 0, { timeoutMs: 5000, what: 'the dropped connection to be released' })
    await expectServesNext(req, path)
    await expectNothingUncaught()
  })
})

describe('writing after an abort', () => {
  it('without an error listener on stdout/stderr nothing crashes', async () => {
    const { path, req, conn } = await acceptedRequest('/w', { bytes: 'x', complete: true })
    for await (const _ of req.stdin) { /* drain */ }
    await conn.write(encodeAbort(1))
    await withTimeout(once(req, 'aborted'), 5000, "'aborted'")
    expect(req.stdout.listenerCount('error')).toBe(0)
    req.stdout.write('Content-Type: text/plain\r\n\r\n')
    req.stdout.write(Buffer.alloc(100000, 'a'))
    req.stderr.write('log line\n')
    req.stdout.end('bye')
    req.stderr.end()
    await sleep(100)
    await withTimeout(req.finish(), 5000, 'finish()')
    await expectServesNext(req, path)
    await expectNothingUncaught()
  })

  it('a large write blocked on a client that stops reading and closes: callbacks get errors, nothing crashes', async () => {
    const { path, req, conn } = await acceptedRequest('/big', { bytes: '', complete: true }, { pauseClient: true })
    let aborted = false
    req.on('aborted', () => { aborted = true })
    const results: Array<Error | null | undefined> = []
    const chunk = Buffer.alloc(256 * 1024, 'b')
    const writes: Array<Promise<void>> = []
    req.stdout.write('Content-Type: application/octet-stream\r\n\r\n')
    for (let i = 0; i < 32; i++) {
      writes.push(new Promise<void>((resolve) => {
        req.stdout.write(chunk, (err?: Error | null) => { results.push(err); resolve() })
      }))
    }
    // Wait until the writes back up (the client reads nothing), then hang up.
    await sleep(300)
    expect(results.length).toBeLessThan(32)
    conn.destroy()
    await withTimeout(Promise.all(writes), 10000, 'every write callback after the client closed')
    expect(results.some((e) => e instanceof Error)).toBe(true)
    await waitFor(() => aborted, { timeoutMs: 5000, what: "'aborted'" })
    await withTimeout(req.finish(), 5000, 'finish()')
    await expectServesNext(req, path)
    await expectNothingUncaught()
  })
})

describe('the streams a RESPONDER request does not have', () => {
  // Minimal reproduction of the uncaught exception seen in the tests above:
  // an abort destroys req.data (a placeholder for FCGI_DATA, which only the
  // FILTER role has) with an error although nobody can listen to it.
  it("an abort emits no 'error' from req.data of a RESPONDER request", async () => {
    const { req, conn } = await acceptedRequest('/responder', { bytes: '', complete: true })
    expect(req.role).toBe('RESPONDER')
    const dataErrors: Error[] = []
    const emit = req.data.emit.bind(req.data)
    // Observe without listening (a listener would change what destroy() does).
    req.data.emit = ((name: string | symbol, ...args: unknown[]) => {
      if (name === 'error') dataErrors.push(args[0] as Error)
      return name === 'error' ? true : emit(name, ...args)
    }) as typeof req.data.emit
    conn.destroy()
    await withTimeout(once(req, 'aborted'), 5000, "'aborted'")
    await sleep(50)
    expect(dataErrors).toEqual([])
    await withTimeout(req.finish(), 5000, 'finish()')
    await expectNothingUncaught()
  })
})
