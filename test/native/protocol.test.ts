// FastCGI protocol behaviour of the real addon + patched libfcgi, driven by
// the raw test client: management records, roles, multiplexing refusal,
// params limits, malformed records, streams and request attributes.
import { createHash, randomBytes } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import { initSocket, Request, type FcgiSocket, type SocketOptions } from '../../src/index.js'
import {
  // record types
  FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_GET_VALUES, FCGI_GET_VALUES_RESULT, FCGI_PARAMS, FCGI_STDERR, FCGI_STDIN, FCGI_STDOUT, FCGI_UNKNOWN_TYPE,
  // roles, protocol statuses, FCGI_GET_VALUES variables
  FCGI_AUTHORIZER, FCGI_FILTER,
  FCGI_CANT_MPX_CONN, FCGI_REQUEST_COMPLETE, FCGI_UNKNOWN_ROLE,
  FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS,
  // encoders and decoders
  encodeBeginRequest, encodeBeginRequestBody, encodeNameValue, encodeParams, encodeRecord, encodeRequest, encodeStream,
  decodeEndRequestBody, decodeNameValues,
  // the client
  FcgiConnection, fcgiRequest, defaultParams, parseCgiResponse,
  type FcgiRecord, type FcgiResult, type FcgiTarget,
} from '../helpers/fcgi-client.js'
import { sleep, waitFor, withTimeout } from '../helpers/wait.js'

// ---------------------------------------------------------------------------
// Harness: one FcgiSocket on 127.0.0.1:0 served by a few parallel Request
// loops that call the current test's handler.
// ---------------------------------------------------------------------------

type Handler = (req: Request) => Promise<void> | void

interface Snapshot {
  env: Record<string, string>
  role: string
  requestId: number
  keepConnection: boolean
}

let sock: FcgiSocket | undefined
let target: FcgiTarget
let handler: Handler
let handlerErrors: unknown[] = []
let seen: Snapshot[] = []
const conns: FcgiConnection[] = []

const HEADER = 'Content-Type: text/plain\r\n\r\n'

/** Default app: reads stdin to its end, answers with a body naming the request URI. */
const echoHandler: Handler = async (req) => {
  await readAll(req.stdin)
  req.stdout.write(`${HEADER}ok ${req.env.REQUEST_URI ?? ''}`)
}

function start(options: SocketOptions = {}, loops = 4): FcgiSocket {
  const s = initSocket({ port: 0, host: '127.0.0.1' }, options)
  sock = s
  const addr = s.address()
  if (!addr || addr.port === undefined) throw new Error('no TCP address')
  target = { port: addr.port, host: '127.0.0.1' }
  handler = echoHandler
  for (let i = 0; i < loops; i++) {
    void (async () => {
      const req = new Request(s)
      while (await req.accept()) {
        seen.push({ env: req.env, role: req.role, requestId: req.requestId, keepConnection: req.keepConnection })
        try {
          await handler(req)
        } catch (err) {
          handlerErrors.push(err)
        }
        await req.finish()
      }
    })().catch((err: unknown) => handlerErrors.push(err))
  }
  return s
}

async function connect(): Promise<FcgiConnection> {
  const c = await FcgiConnection.connect(target, 5000)
  conns.push(c)
  return c
}

/** A new connection that sends `records` at once (the write is not awaited). */
async function send(...records: Buffer[]): Promise<FcgiConnection> {
  const conn = await connect()
  void conn.write(Buffer.concat(records))
  return conn
}

/** A full, simple request on its own connection; checks it was answered normally. */
async function simpleRequest(uri = '/ping', opts: { requestId?: number } = {}): Promise<FcgiResult> {
  const r = await fcgiRequest(target, { params: defaultParams({ REQUEST_URI: uri }), requestId: opts.requestId, timeoutMs: 10000 })
  expect(r.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
  return r
}

async function expectServing(): Promise<void> {
  handler = echoHandler
  const uri = `/alive-${Math.random().toString(36).slice(2)}`
  const r = await simpleRequest(uri)
  expect(parseCgiResponse(r.stdout).body.toString()).toBe(`ok ${uri}`)
}

function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex')
}

/** Reads a whole Readable into one Buffer. */
async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

/** Writes with backpressure. */
async function writeAll(stream: NodeJS.WritableStream, data: Buffer, chunk = 64 * 1024): Promise<void> {
  for (let off = 0; off < data.length; off += chunk) {
    if (!stream.write(data.subarray(off, off + chunk))) {
      await withTimeout(new Promise<void>((resolve) => stream.once('drain', () => resolve())), 20000, 'drain')
    }
  }
}

function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void
  const promise = new Promise<T>((r) => { resolve = r })
  return { promise, resolve }
}

/** Expects the server to close `conn` without sending a byte. */
async function expectDroppedSilently(conn: FcgiConnection): Promise<void> {
  expect(await conn.waitClosed(5000)).toBe(true)
  expect(conn.bytesReceived).toBe(0)
  expect(conn.pending).toHaveLength(0)
}

/** `conn` is dropped silently before the app sees any request, and the server keeps serving. */
async function expectDroppedBeforeTheApp(conn: FcgiConnection): Promise<void> {
  await expectDroppedSilently(conn)
  expect(seen).toHaveLength(0)
  await expectServing()
}

afterEach(async () => {
  for (const c of conns.splice(0)) c.destroy()
  const s = sock
  sock = undefined
  if (s) await withTimeout(s.close(), 10000, 'socket close')
  const errors = handlerErrors
  handlerErrors = []
  seen = []
  expect(errors).toEqual([])
})

// ---------------------------------------------------------------------------

describe('management records', () => {
  const manyNames = [
    ...Array.from({ length: 4 }, () => FCGI_MPXS_CONNS),
    'SOME_UNKNOWN_NAME',
    ...Array.from({ length: 50 }, () => [FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS]).flat(),
    'FCGI_MAX_CONNS_X',
    'fcgi_max_conns',
  ]

  function checkValuesResult(rec: FcgiRecord): void {
    expect(rec.type).toBe(FCGI_GET_VALUES_RESULT)
    expect(rec.requestId).toBe(0)
    const pairs = decodeNameValues(rec.content)
    const names = pairs.map(([n]) => n).sort()
    // each known name exactly once, unknown names left out
    expect(names).toEqual([FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS].sort())
    expect(Object.fromEntries(pairs)).toEqual({ [FCGI_MAX_CONNS]: '7', [FCGI_MAX_REQS]: '5', [FCGI_MPXS_CONNS]: '0' })
  }

  const manyValues = () => encodeRecord(FCGI_GET_VALUES, 0, Buffer.concat(manyNames.map((n) => encodeNameValue(n, ''))))

  /** Starts the server (maxConns 7, maxReqs 5); resolves with a kept connection that has served request 1 ('/one'). */
  async function keptConnectionAfterOne(): Promise<FcgiConnection> {
    start({ maxConns: 7, maxReqs: 5 })
    const conn = await connect()
    const r1 = await fcgiRequest(target, { connection: conn, keepConn: true, requestId: 1, params: defaultParams({ REQUEST_URI: '/one' }) })
    expect(parseCgiResponse(r1.stdout).body.toString()).toBe('ok /one')
    return conn
  }

  // A web server sends FCGI_GET_VALUES and waits for the answer before it
  // sends anything else: the answer must not wait for more input.
  it('answers FCGI_GET_VALUES sent alone on a fresh connection, each variable once, with the socket options', async () => {
    start({ maxConns: 7, maxReqs: 5 })
    const conn = await send(manyValues())
    checkValuesResult(await conn.readRecord(3000))
    // the same connection then carries a request
    const r = await fcgiRequest(target, { connection: conn, params: defaultParams({ REQUEST_URI: '/after-values' }), requestId: 3 })
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('ok /after-values')
    await expectServing()
  })

  it('answers FCGI_GET_VALUES sent alone on a kept connection between requests', async () => {
    const conn = await keptConnectionAfterOne()
    void conn.write(manyValues())
    checkValuesResult(await conn.readRecord(3000))
    const r2 = await fcgiRequest(target, { connection: conn, keepConn: true, requestId: 2, params: defaultParams({ REQUEST_URI: '/two' }) })
    expect(parseCgiResponse(r2.stdout).body.toString()).toBe('ok /two')
    expect(conn.closed).toBe(false)
    await expectServing()
  })

  it('answers FCGI_GET_VALUES followed at once by a request (fresh connection), then serves the request', async () => {
    start({ maxConns: 7, maxReqs: 5 })
    const conn = await send(manyValues(), encodeRequest({ requestId: 4, params: defaultParams({ REQUEST_URI: '/piped' }) }))
    checkValuesResult(await conn.readRecord(5000))
    const r = await conn.readUntilEnd(4, 5000)
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('ok /piped')
    await expectServing()
  })

  it('answers FCGI_GET_VALUES followed at once by a request on a kept connection between requests', async () => {
    const conn = await keptConnectionAfterOne()
    void conn.write(Buffer.concat([manyValues(), encodeRequest({ requestId: 2, keepConn: true, params: defaultParams({ REQUEST_URI: '/two' }) })]))
    checkValuesResult(await conn.readRecord(5000))
    const r2 = await conn.readUntilEnd(2, 5000)
    expect(parseCgiResponse(r2.stdout).body.toString()).toBe('ok /two')
    // twice more on the same kept connection
    void conn.write(Buffer.concat([manyValues(), manyValues(), encodeRequest({ requestId: 3, keepConn: true, params: defaultParams({ REQUEST_URI: '/three' }) })]))
    checkValuesResult(await conn.readRecord(5000))
    checkValuesResult(await conn.readRecord(5000))
    const r3 = await conn.readUntilEnd(3, 5000)
    expect(parseCgiResponse(r3.stdout).body.toString()).toBe('ok /three')
    expect(conn.closed).toBe(false)
    await expectServing()
  })

  it('FCGI_MAX_REQS defaults to maxConns', async () => {
    start({ maxConns: 12 })
    const conn = await send(manyValues(), encodeRequest({ requestId: 1, params: defaultParams({ REQUEST_URI: '/defaults' }) }))
    const rec = await conn.readRecord(5000)
    expect(rec.type).toBe(FCGI_GET_VALUES_RESULT)
    expect(Object.fromEntries(decodeNameValues(rec.content))).toEqual({ [FCGI_MAX_CONNS]: '12', [FCGI_MAX_REQS]: '12', [FCGI_MPXS_CONNS]: '0' })
    expect((await conn.readUntilEnd(1, 5000)).protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
  })

  it('answers only known names and ignores unknown ones', async () => {
    start({ maxConns: 7, maxReqs: 5 })
    const conn = await send(
      encodeRecord(FCGI_GET_VALUES, 0, Buffer.concat([encodeNameValue('NOT_A_VARIABLE', ''), encodeNameValue(FCGI_MAX_REQS, '')])),
      // a record with nothing known gets an empty result
      encodeRecord(FCGI_GET_VALUES, 0, encodeNameValue('NOTHING_KNOWN', '')),
      encodeRequest({ requestId: 1, params: defaultParams({ REQUEST_URI: '/names' }) }),
    )
    const rec = await conn.readRecord(5000)
    expect(rec.type).toBe(FCGI_GET_VALUES_RESULT)
    expect(decodeNameValues(rec.content)).toEqual([[FCGI_MAX_REQS, '5']])
    const empty = await conn.readRecord(5000)
    expect(empty.type).toBe(FCGI_GET_VALUES_RESULT)
    expect(empty.content.length).toBe(0)
    const r = await conn.readUntilEnd(1, 5000)
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('ok /names')
    await expectServing()
  })

  it('answers an unknown management record type with FCGI_UNKNOWN_TYPE', async () => {
    start()
    const conn = await send(encodeRecord(42, 0))
    const rec = await conn.readRecord(5000)
    expect(rec.type).toBe(FCGI_UNKNOWN_TYPE)
    expect(rec.requestId).toBe(0)
    expect(rec.content.length).toBe(8)
    expect(rec.content[0]).toBe(42)
    const r = await fcgiRequest(target, { connection: conn, params: defaultParams({ REQUEST_URI: '/after-unknown' }) })
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('ok /after-unknown')
    await expectServing()
  })

  it('answers an unknown management record type that has a body, and keeps the connection usable', async () => {
    start()
    const conn = await send(encodeRecord(42, 0, Buffer.from('12345678'), { padding: 3 }))
    const rec = await conn.readRecord(5000)
    expect(rec.type).toBe(FCGI_UNKNOWN_TYPE)
    expect(rec.content[0]).toBe(42)
    const r = await fcgiRequest(target, { connection: conn, params: defaultParams({ REQUEST_URI: '/after-unknown-body' }) })
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('ok /after-unknown-body')
    await expectServing()
  })
})

describe('roles and multiplexing', () => {
  it('ends a request with an unknown role with FCGI_UNKNOWN_ROLE and keeps serving', async () => {
    start()
    const conn = await send(encodeRequest({ requestId: 77, role: 9, params: defaultParams() }))
    const r = await conn.readUntilEnd(77, 5000)
    expect(r.protocolStatus).toBe(FCGI_UNKNOWN_ROLE)
    expect(r.stdout.length).toBe(0)
    expect(seen).toHaveLength(0) // the app never saw it
    await expectServing()
    expect(seen).toHaveLength(1)
  })

  /** The app of the multiplexing tests: echoes stdin, signals its first chunk. */
  function stdinEcho(firstChunk: { resolve: () => void }): Handler {
    return async (req) => {
      const chunks: Buffer[] = []
      for await (const c of req.stdin) {
        chunks.push(c as Buffer)
        firstChunk.resolve()
      }
      req.stdout.write(HEADER)
      req.stdout.write(Buffer.concat(chunks))
    }
  }

  /** Starts the server and request 1 on a kept connection with part of its stdin; resolves once the app waits for the rest. */
  async function busyConnection(): Promise<FcgiConnection> {
    start()
    const firstChunk = deferred()
    handler = stdinEcho(firstChunk)
    const conn = await send(
      encodeBeginRequest(1, 1, true),
      encodeParams(1, defaultParams({ REQUEST_URI: '/first' })),
      encodeRecord(FCGI_STDIN, 1, 'part one, '),
    )
    await withTimeout(firstChunk.promise, 5000, 'the app reading the first stdin bytes')
    await sleep(50) // let the app's next read wait for input
    return conn
  }

  /** Request 2 gets only END_REQUEST{FCGI_CANT_MPX_CONN}; request 1, given the rest of its stdin, completes intact. */
  async function expectSecondRefusedFirstCompletes(conn: FcgiConnection): Promise<void> {
    const refused = await conn.readUntilEnd(2, 5000)
    expect(refused.protocolStatus).toBe(FCGI_CANT_MPX_CONN)
    expect(refused.records.map((r) => r.type)).toEqual([FCGI_END_REQUEST])
    void conn.write(Buffer.concat([encodeRecord(FCGI_STDIN, 1, 'part two'), encodeRecord(FCGI_STDIN, 1)]))
    const first = await conn.readUntilEnd(1, 5000)
    expect(first.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
    expect(parseCgiResponse(first.stdout).body.toString()).toBe('part one, part two')
  }

  it('refuses a second BEGIN_REQUEST on a busy connection with FCGI_CANT_MPX_CONN, and completes the first', async () => {
    const conn = await busyConnection()
    void conn.write(encodeBeginRequest(2, 1, true))
    await expectSecondRefusedFirstCompletes(conn)
    expect(seen.map((x) => x.requestId)).toEqual([1])
    await expectServing()
  })

  it("refuses a multiplexed second request (BEGIN, PARAMS, STDIN with their empty terminators) and the first request's stdin stays intact", async () => {
    const conn = await busyConnection()
    void conn.write(Buffer.concat([
      encodeBeginRequest(2, 1, true),
      encodeParams(2, defaultParams({ REQUEST_URI: '/second' })),
      encodeStream(FCGI_STDIN, 2, 'stdin of the second request'),
    ]))
    await expectSecondRefusedFirstCompletes(conn)
    // the kept connection goes on with a third request
    const third = await fcgiRequest(target, { connection: conn, requestId: 3, keepConn: true, params: defaultParams({ REQUEST_URI: '/third' }), stdin: 'three' })
    expect(parseCgiResponse(third.stdout).body.toString()).toBe('three')
    expect(seen.map((s) => s.requestId)).toEqual([1, 3])
    await expectServing()
  })

  it("gives an AUTHORIZER request role 'AUTHORIZER'", async () => {
    start()
    const r = await fcgiRequest(target, { role: FCGI_AUTHORIZER, params: defaultParams({ REQUEST_URI: '/auth' }) })
    expect(r.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
    expect(seen).toHaveLength(1)
    expect(seen[0]!.role).toBe('AUTHORIZER')
    expect(seen[0]!.env.FCGI_ROLE).toBe('AUTHORIZER')
  })

  it("gives a RESPONDER request role 'RESPONDER'", async () => {
    start()
    await simpleRequest('/resp')
    expect(seen[0]!.role).toBe('RESPONDER')
    expect(seen[0]!.env.FCGI_ROLE).toBe('RESPONDER')
  })

  it('FILTER: req.stdin then req.data deliver FCGI_STDIN and FCGI_DATA exactly', async () => {
    start()
    const stdin = randomBytes(200 * 1024 + 17)
    const data = randomBytes(150 * 1024 + 3)
    const got: { stdin?: Buffer; data?: Buffer; role?: string } = {}
    handler = async (req) => {
      got.role = req.role
      got.stdin = await readAll(req.stdin)
      got.data = await readAll(req.data)
      req.stdout.write(`${HEADER}${got.stdin.length} ${got.data.length}`)
    }
    const r = await fcgiRequest(target, { role: FCGI_FILTER, params: defaultParams({ REQUEST_URI: '/filter' }), stdin, data, chunkSize: 30000, timeoutMs: 20000 })
    expect(r.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
    expect(parseCgiResponse(r.stdout).body.toString()).toBe(`${stdin.length} ${data.length}`)
    expect(got.role).toBe('FILTER')
    expect(sha256(got.stdin!)).toBe(sha256(stdin))
    expect(sha256(got.data!)).toBe(sha256(data))
    expect(seen[0]!.env.FCGI_ROLE).toBe('FILTER')
  })

  it('FILTER: req.data alone delivers FCGI_DATA exactly when stdin is never read', async () => {
    start()
    const stdin = randomBytes(120 * 1024 + 1)
    const data = randomBytes(90 * 1024 + 5)
    let gotData: Buffer | undefined
    handler = async (req) => {
      gotData = await readAll(req.data)
      req.stdout.write(`${HEADER}${gotData.length}`)
    }
    const r = await fcgiRequest(target, { role: FCGI_FILTER, params: defaultParams(), stdin, data, chunkSize: 20000, timeoutMs: 20000 })
    expect(r.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
    expect(parseCgiResponse(r.stdout).body.toString()).toBe(String(data.length))
    expect(sha256(gotData!)).toBe(sha256(data))
  })

  it('FILTER with empty stdin and empty data', async () => {
    start()
    const got: Buffer[] = []
    handler = async (req) => {
      got.push(await readAll(req.stdin), await readAll(req.data))
    }
    const r = await fcgiRequest(target, { role: FCGI_FILTER, params: defaultParams(), stdin: '', data: '' })
    expect(r.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
    expect(got.map((b) => b.length)).toEqual([0, 0])
  })

  it('a RESPONDER has an empty req.data', async () => {
    start()
    let data: Buffer | undefined
    handler = async (req) => {
      data = await readAll(req.data)
    }
    await simpleRequest()
    expect(data?.length).toBe(0)
  })
})

describe('params', () => {
  it('drops a connection whose PARAMS declare a name length of 0x7ffffff0, and keeps serving', async () => {
    start()
    const conn = await send(
      encodeBeginRequest(1, 1, false),
      encodeRecord(FCGI_PARAMS, 1, encodeNameValue('A', 'b', { nameLen: 0x7ffffff0 })),
      encodeRecord(FCGI_PARAMS, 1),
      encodeRecord(FCGI_STDIN, 1),
    )
    await expectDroppedBeforeTheApp(conn)
  })

  it('drops a connection whose PARAMS declare a huge value length', async () => {
    start()
    const conn = await send(
      encodeBeginRequest(1, 1, false),
      encodeRecord(FCGI_PARAMS, 1, encodeNameValue('NAME', 'v', { valueLen: 0x7fffffff })),
    )
    await expectDroppedSilently(conn)
    await expectServing()
  })

  /** n pairs whose names and values add up to exactly `total` bytes. */
  function pairsOfSize(total: number, n: number): Array<[string, string]> {
    const pairs: Array<[string, string]> = []
    let used = 0
    for (let i = 0; i < n - 1; i++) {
      const name = `P${i}`
      const value = 'v'.repeat(Math.floor(total / n) - name.length)
      pairs.push([name, value])
      used += name.length + value.length
    }
    const last = `P${n - 1}`
    pairs.push([last, 'w'.repeat(total - used - last.length)])
    const sum = pairs.reduce((a, [k, v]) => a + k.length + v.length, 0)
    if (sum !== total) throw new Error(`pairsOfSize: ${sum} != ${total}`)
    return pairs
  }

  it('drops a request whose params exceed paramsMaxBytes (reported: clientError, stats), accepts exactly the cap', async () => {
    const s = start({ paramsMaxBytes: 4096 })
    const reported: Array<Error & { code?: string }> = []
    s.on('clientError', (err: Error) => reported.push(err))
    // 5000 bytes in one pair
    const over = await send(encodeRequest({ params: [['BIG', 'x'.repeat(4997)]] }))
    await expectDroppedSilently(over)
    // 4097 bytes spread over several pairs
    const over2 = await send(encodeRequest({ params: pairsOfSize(4097, 5) }))
    await expectDroppedSilently(over2)
    expect(seen).toHaveLength(0)
    await waitFor(() => reported.length === 2, { timeoutMs: 5000, what: 'two clientError reports' })
    for (const err of reported) {
      expect(err.code).toBe('ERR_FASTCGI_PARAMS_ERROR')
      expect(err.message).toBe('a request was dropped unanswered: its params are malformed or over the limits (paramsMaxBytes 4096, paramsMaxCount 1000)')
    }
    expect(s.stats().droppedRequests).toBe(2)

    const atCap = pairsOfSize(4096, 5)
    const r = await fcgiRequest(target, { params: atCap })
    expect(r.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
    const one = await fcgiRequest(target, { params: [['BIG', 'y'.repeat(4093)]] })
    expect(one.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
    expect(seen).toHaveLength(2)
    expect(seen[0]!.env).toEqual({ FCGI_ROLE: 'RESPONDER', ...Object.fromEntries(atCap) })
    expect(seen[1]!.env.BIG).toBe('y'.repeat(4093))
  })

  it('drops a request with more params than paramsMaxCount, accepts exactly the cap', async () => {
    start({ paramsMaxCount: 20 })
    const make = (n: number) => Array.from({ length: n }, (_, i): [string, string] => [`N${i}`, `v${i}`])
    const over = await send(encodeRequest({ params: make(21) }))
    await expectDroppedSilently(over)
    expect(seen).toHaveLength(0)
    const r = await fcgiRequest(target, { params: make(20) })
    expect(r.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
    expect(seen[0]!.env).toEqual({ FCGI_ROLE: 'RESPONDER', ...Object.fromEntries(make(20)) })
  })

  it('delivers 300 KiB of params split over many PARAMS records exactly (latin1 bytes, empty values)', async () => {
    start()
    const expected: Record<string, string> = {}
    const encoded: Buffer[] = []
    let total = 0
    for (let i = 0; i < 290; i++) {
      const name = i === 7 ? Buffer.from(`HTTP_X_\xe9\xff_${i}`, 'latin1') : Buffer.from(`HTTP_X_PARAM_${i}`)
      let value: Buffer
      if (i % 29 === 0) {
        value = Buffer.alloc(0)
      } else {
        value = Buffer.alloc(1000 + ((i * 37) % 200))
        for (let j = 0; j < value.length; j++) value[j] = 1 + ((i * 131 + j * 7) % 255) // 0x01..0xff, never NUL
      }
      expected[name.toString('latin1')] = value.toString('latin1')
      encoded.push(encodeNameValue(name, value))
      total += name.length + value.length
    }
    // a value with every high byte, and a long name
    const high = Buffer.from(Array.from({ length: 128 }, (_, k) => 0x80 + k))
    expected.HIGH_BYTES = high.toString('latin1')
    encoded.push(encodeNameValue('HIGH_BYTES', high))
    const longName = 'N'.repeat(300)
    expected[longName] = 'long name'
    encoded.push(encodeNameValue(longName, 'long name'))
    total += 10 + 128 + 300 + 9
    expect(total).toBeGreaterThanOrEqual(300 * 1024)

    const body = Buffer.concat(encoded)
    const request = Buffer.concat([
      encodeBeginRequest(1, 1, false),
      encodeStream(FCGI_PARAMS, 1, body, 4001), // records split in the middle of pairs
      encodeStream(FCGI_STDIN, 1, ''),
    ])
    const conn = await send(request)
    const r = await conn.readUntilEnd(1, 15000)
    expect(r.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
    expect(seen).toHaveLength(1)
    const env = seen[0]!.env
    expect(Object.keys(env)).toHaveLength(Object.keys(expected).length + 1)
    expect(env).toEqual({ FCGI_ROLE: 'RESPONDER', ...expected })
    expect(env.HIGH_BYTES!.length).toBe(128)
    expect(env.HIGH_BYTES!.charCodeAt(127)).toBe(0xff)
    expect(env['HTTP_X_PARAM_0']).toBe('')
  })

  it('accepts params in 4-byte length form and padded PARAMS records', async () => {
    start()
    const conn = await send(
      encodeBeginRequest(1, 1, false),
      encodeRecord(FCGI_PARAMS, 1, encodeNameValue('LONG_FORM', 'yes', { forceLong: true }), { padding: 5 }),
      encodeRecord(FCGI_PARAMS, 1, encodeNameValue('EMPTY', ''), { padding: 7 }),
      encodeRecord(FCGI_PARAMS, 1),
      encodeRecord(FCGI_STDIN, 1),
    )
    const r = await conn.readUntilEnd(1, 5000)
    expect(r.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
    expect(seen[0]!.env).toEqual({ FCGI_ROLE: 'RESPONDER', LONG_FORM: 'yes', EMPTY: '' })
  })
})

describe('readTimeout: peers that stop sending', () => {
  it('a head that stops inside PARAMS is dropped after readTimeout: clientError ERR_FASTCGI_READ_TIMEOUT, no thread held meanwhile, the socket serves on', async () => {
    const s = start({ readTimeout: 800 })
    const errors: Array<Error & { code?: string }> = []
    s.on('clientError', (err: Error) => errors.push(err))
    await expectServing()
    const threads = s.stats().threads
    const t0 = Date.now()
    const conn = await send(encodeBeginRequest(1, 1, false), encodeParams(1, defaultParams()).subarray(0, 30))
    expect(await conn.waitClosed(5000)).toBe(true)
    expect(Date.now() - t0).toBeGreaterThanOrEqual(700)
    expect(conn.bytesReceived).toBe(0)
    expect(errors.map((e) => e.code)).toEqual(['ERR_FASTCGI_READ_TIMEOUT'])
    expect(s.stats()).toMatchObject({ readTimeouts: 1, droppedRequests: 1, threads })
    expect(seen).toHaveLength(1)
    await expectServing()
  })

  it('a body that stops inside a record header: the read fails with ETIMEDOUT after readTimeout and the connection is closed', async () => {
    const s = start({ readTimeout: 800 })
    let failed: (Error & { code?: string }) | undefined
    let got = ''
    handler = async (req) => {
      try {
        for await (const chunk of req.stdin) got += String(chunk)
      } catch (err) {
        failed = err as Error
      }
    }
    const conn = await send(
      encodeBeginRequest(1, 1, false),
      encodeParams(1, defaultParams()),
      encodeRecord(FCGI_STDIN, 1, Buffer.from('abc')),
      encodeRecord(FCGI_STDIN, 1, Buffer.from('def')).subarray(0, 3),
    )
    await waitFor(() => failed, { timeoutMs: 5000, what: 'the stdin read to fail' })
    expect(failed!.code).toBe('ETIMEDOUT')
    expect(got).toBe('abc')
    expect(await conn.waitClosed(5000)).toBe(true)
    expect(s.stats().readTimeouts).toBe(1)
    await expectServing()
  })
})

describe('malformed records', () => {
  it('drops a connection that sends a wrong version byte, and keeps serving', async () => {
    start()
    const conn = await send(
      encodeRecord(FCGI_BEGIN_REQUEST, 1, encodeBeginRequestBody(1, false), { version: 2 }),
      encodeParams(1, defaultParams()),
      encodeStream(FCGI_STDIN, 1, ''),
    )
    await expectDroppedBeforeTheApp(conn)
  })

  it('skips a STDIN record for another request id sent before BEGIN_REQUEST', async () => {
    start()
    const conn = await send(
      encodeRecord(FCGI_STDIN, 9, 'not for anyone', { padding: 2 }),
      encodeRequest({ requestId: 1, params: defaultParams({ REQUEST_URI: '/after-stray' }) }),
    )
    const r = await conn.readUntilEnd(1, 5000)
    expect(r.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('ok /after-stray')
    expect(r.records.every((rec) => rec.requestId === 1)).toBe(true)
    await expectServing()
  })

  it('skips an EMPTY record for another request id sent before BEGIN_REQUEST', async () => {
    start()
    const conn = await send(
      encodeRecord(FCGI_STDIN, 9), // e.g. the stdin terminator of a request this app never saw
      encodeRequest({ requestId: 1, params: defaultParams({ REQUEST_URI: '/after-empty-stray' }) }),
    )
    const r = await conn.readUntilEnd(1, 5000)
    expect(r.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('ok /after-empty-stray')
    await expectServing()
  })

  it('an EMPTY record for another request id in the middle of stdin does not swallow the next stdin record', async () => {
    start()
    let stdin: Buffer | undefined
    handler = async (req) => {
      stdin = await readAll(req.stdin)
      req.stdout.write(`${HEADER}${stdin.length}`)
    }
    const conn = await send(
      encodeBeginRequest(1),
      encodeParams(1, defaultParams()),
      encodeRecord(FCGI_STDIN, 1, 'one,'),
      encodeRecord(FCGI_STDIN, 9),
      encodeRecord(FCGI_STDIN, 1, 'two,'),
      encodeRecord(FCGI_PARAMS, 9),
      encodeRecord(FCGI_STDIN, 1, 'three'),
      encodeRecord(FCGI_STDIN, 1),
    )
    const r = await conn.readUntilEnd(1, 5000)
    expect(r.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
    expect(stdin?.toString()).toBe('one,two,three')
    await expectServing()
  })

  it('survives a truncated header followed by a close', async () => {
    start()
    const conn = await connect()
    await conn.write(encodeBeginRequest(1).subarray(0, 4))
    conn.socket.end()
    expect(await conn.waitClosed(5000)).toBe(true)
    expect(conn.bytesReceived).toBe(0)
    await expectServing()
  })

  it('survives a record body cut short by a close (mid-PARAMS)', async () => {
    start()
    const conn = await connect()
    const params = encodeRecord(FCGI_PARAMS, 1, encodeNameValue('NAME', 'value'.repeat(20)))
    await conn.write(Buffer.concat([encodeBeginRequest(1), params.subarray(0, 30)]))
    conn.socket.end()
    expect(await conn.waitClosed(5000)).toBe(true)
    expect(conn.bytesReceived).toBe(0)
    expect(seen).toHaveLength(0)
    await expectServing()
  })

  it('drops a BEGIN_REQUEST with request id 0 or a short body', async () => {
    start()
    const zero = await send(encodeRecord(FCGI_BEGIN_REQUEST, 0, encodeBeginRequestBody(1, false)))
    // id 0 is a management request id: a BEGIN_REQUEST there is a protocol error
    await expectDroppedSilently(zero)
    const short = await send(encodeRecord(FCGI_BEGIN_REQUEST, 1, Buffer.alloc(3)))
    await expectDroppedSilently(short)
    await expectServing()
  })
})

describe('output streams and END_REQUEST', () => {
  it('sends stderr writes as FCGI_STDERR records', async () => {
    start()
    handler = async (req) => {
      req.stderr.write('warning: one\n')
      req.stdout.write(`${HEADER}body`)
      req.stderr.write(Buffer.from('warning: two\n'))
    }
    const r = await simpleRequest('/stderr')
    expect(r.stderr.toString()).toBe('warning: one\nwarning: two\n')
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('body')
    const types = r.records.map((rec) => rec.type)
    expect(types).toContain(FCGI_STDERR)
    // both streams end with an empty record, END_REQUEST comes last
    expect(r.records.filter((rec) => rec.type === FCGI_STDERR && rec.content.length === 0)).toHaveLength(1)
    expect(r.records.filter((rec) => rec.type === FCGI_STDOUT && rec.content.length === 0)).toHaveLength(1)
    expect(types[types.length - 1]).toBe(FCGI_END_REQUEST)
  })

  it('setExitStatus(42) puts appStatus 42 in FCGI_END_REQUEST', async () => {
    start()
    handler = (req) => {
      req.stdout.write(HEADER)
      req.setExitStatus(42)
    }
    const r = await simpleRequest('/status')
    expect(r.appStatus).toBe(42)
    expect(r.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
    // the next request on the same Request object starts again at 0
    handler = echoHandler
    const r2 = await simpleRequest('/status-again')
    expect(r2.appStatus).toBe(0)
  })

  it('setExitStatus(-1) is sent as the 32-bit pattern', async () => {
    start()
    handler = (req) => req.setExitStatus(-1)
    const r = await simpleRequest('/neg')
    expect(r.appStatus).toBe(0xffffffff)
  })

  it('an empty response gets an empty FCGI_STDOUT and FCGI_END_REQUEST only', async () => {
    start()
    handler = () => {}
    const r = await simpleRequest('/empty')
    expect(r.stdout.length).toBe(0)
    expect(r.records.map((rec) => [rec.type, rec.content.length])).toEqual([[FCGI_STDOUT, 0], [FCGI_END_REQUEST, 8]])
    expect(decodeEndRequestBody(r.records[1]!.content)).toEqual({ appStatus: 0, protocolStatus: FCGI_REQUEST_COMPLETE })
  })

  it('delivers a 5 MiB stdout body byte-exact', async () => {
    start()
    const body = randomBytes(5 * 1024 * 1024)
    handler = async (req) => {
      req.stdout.write(`${HEADER}`)
      await writeAll(req.stdout, body, 100 * 1024 + 7)
    }
    const r = await fcgiRequest(target, { params: defaultParams({ REQUEST_URI: '/big' }), timeoutMs: 30000 })
    expect(r.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
    const got = parseCgiResponse(r.stdout).body
    expect(got.length).toBe(body.length)
    expect(sha256(got)).toBe(sha256(body))
    expect(r.records.every((rec) => rec.content.length <= 0xffff)).toBe(true)
  })

  it('delivers a 5 MiB stdin upload byte-exact', async () => {
    start()
    const upload = randomBytes(5 * 1024 * 1024 + 11)
    handler = async (req) => {
      const hash = createHash('sha256')
      let n = 0
      for await (const c of req.stdin) {
        hash.update(c as Buffer)
        n += (c as Buffer).length
      }
      req.stdout.write(`${HEADER}${n} ${hash.digest('hex')}`)
    }
    const r = await fcgiRequest(target, { params: defaultParams({ REQUEST_URI: '/upload' }, upload), stdin: upload, timeoutMs: 30000 })
    expect(r.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
    expect(parseCgiResponse(r.stdout).body.toString()).toBe(`${upload.length} ${sha256(upload)}`)
  })
})

describe('request attributes', () => {
  it('exposes env, getParam, requestId 513 and keepConnection true', async () => {
    start()
    const params = defaultParams({ REQUEST_URI: '/env?x=1', HTTP_X_CUSTOM: 'custom value', EMPTY_ONE: '' })
    const checks: Record<string, unknown> = {}
    handler = async (req) => {
      await readAll(req.stdin)
      checks.method = req.getParam('REQUEST_METHOD')
      checks.custom = req.getParam('HTTP_X_CUSTOM')
      checks.empty = req.getParam('EMPTY_ONE')
      checks.missing = req.getParam('NO_SUCH_PARAM')
      checks.proto = req.getParam('toString')
      checks.hasOwn = req.getParam('hasOwnProperty')
      req.stdout.write(`${HEADER}${req.requestId}`)
    }
    const conn = await connect()
    const r = await fcgiRequest(target, { connection: conn, requestId: 513, keepConn: true, params })
    expect(r.records.every((rec) => rec.requestId === 513)).toBe(true)
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('513')
    expect(seen[0]!.requestId).toBe(513)
    expect(seen[0]!.keepConnection).toBe(true)
    expect(seen[0]!.env).toEqual({ ...params, FCGI_ROLE: 'RESPONDER' })
    expect(checks).toEqual({ method: 'GET', custom: 'custom value', empty: '', missing: undefined, proto: undefined, hasOwn: undefined })
    // the kept connection stays open and carries the next request
    await sleep(50)
    expect(conn.closed).toBe(false)
    const r2 = await fcgiRequest(target, { connection: conn, requestId: 0xffff, keepConn: false, params: defaultParams({ REQUEST_URI: '/next' }) })
    expect(r2.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
    expect(seen[1]!.requestId).toBe(0xffff)
    expect(seen[1]!.keepConnection).toBe(false)
    expect(await conn.waitClosed(5000)).toBe(true)
  })

  it('keepConnection false: the app sees false and the connection is closed after the response', async () => {
    start()
    const conn = await connect()
    const r = await fcgiRequest(target, { connection: conn, requestId: 1, keepConn: false, params: defaultParams({ REQUEST_URI: '/close' }) })
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('ok /close')
    expect(seen[0]!.keepConnection).toBe(false)
    expect(seen[0]!.requestId).toBe(1)
    expect(await conn.waitClosed(5000)).toBe(true)
  })

  it('keeps a kept connection open when the app does not read its (empty) stdin', async () => {
    start()
    // A GET handler that never touches req.stdin: FCGI_KEEP_CONN should still hold.
    handler = (req) => {
      req.stdout.write(`${HEADER}no stdin read ${req.requestId}`)
    }
    const conn = await connect()
    const r1 = await fcgiRequest(target, { connection: conn, requestId: 1, keepConn: true, params: defaultParams({ REQUEST_URI: '/get1' }) })
    expect(parseCgiResponse(r1.stdout).body.toString()).toBe('no stdin read 1')
    await sleep(100)
    expect(conn.closed).toBe(false)
    const r2 = await fcgiRequest(target, { connection: conn, requestId: 2, keepConn: true, params: defaultParams({ REQUEST_URI: '/get2' }) })
    expect(parseCgiResponse(r2.stdout).body.toString()).toBe('no stdin read 2')
  })

  // FCGI_MPXS_CONNS is 0: a web server sends the next request on a kept
  // connection only after FCGI_END_REQUEST. Bytes of a request sent earlier
  // would be lost with libfcgi's buffer, so the connection is answered for
  // its first request and then closed (never left hanging); the client
  // retries on a new connection.
  it('answers the first of pipelined requests, then closes the connection', async () => {
    start()
    const conn = await connect()
    void conn.write(Buffer.concat([1, 2, 3].map((id) => encodeRequest({ requestId: id, keepConn: true, params: defaultParams({ REQUEST_URI: `/p${id}` }) }))))
    const r = await conn.readUntilEnd(1, 3000)
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('ok /p1')
    expect(await conn.waitClosed(3000)).toBe(true)
    const again = await connect()
    const r2 = await fcgiRequest(target, { connection: again, requestId: 2, keepConn: true, params: defaultParams({ REQUEST_URI: '/p2' }) })
    expect(parseCgiResponse(r2.stdout).body.toString()).toBe('ok /p2')
    expect(seen.map((s) => s.requestId)).toEqual([1, 2])
  })
})
