// Request and response bodies of many sizes through the real addon: sizes
// around libfcgi's stream buffers (8 KiB before patch 0008, 64 KiB now), the
// largest record (65535 bytes of content) and the size from which a stdout
// write is read in place and sent as records by our own sendmsg (16 KiB,
// native/addon.cc kBorrowMin). Checks byte-exact echoes, the record framing
// (content <= 65535, stdout's end record, FCGI_END_REQUEST last), the order
// of stdout and stderr, and that a kept connection serves the next request.
import { createHash } from 'node:crypto'
import v8 from 'node:v8'
import vm from 'node:vm'
import { afterEach, describe, expect, it } from 'vitest'
import { initSocket, Request, type FcgiSocket } from '../../src/index.js'
import {
  FCGI_END_REQUEST, FCGI_REQUEST_COMPLETE, FCGI_STDERR, FCGI_STDOUT,
  FcgiConnection, fcgiRequest, defaultParams, parseCgiResponse,
  type FcgiResult, type FcgiTarget,
} from '../helpers/fcgi-client.js'

type Handler = (req: Request) => Promise<void> | void

let sock: FcgiSocket | undefined
let target: FcgiTarget
let handler: Handler
let handlerErrors: unknown[] = []
const conns: FcgiConnection[] = []

function start(loops = 4): void {
  const s = initSocket({ port: 0, host: '127.0.0.1' })
  sock = s
  const addr = s.address()
  if (!addr || addr.port === undefined) throw new Error('no TCP address')
  target = { port: addr.port, host: '127.0.0.1' }
  for (let i = 0; i < loops; i++) {
    void (async () => {
      const req = new Request(s)
      while (await req.accept()) {
        try {
          await handler(req)
        } catch (err) {
          handlerErrors.push(err)
        }
        await req.finish()
      }
    })().catch((err: unknown) => handlerErrors.push(err))
  }
}

afterEach(async () => {
  for (const c of conns.splice(0)) c.destroy()
  await sock?.close()
  sock = undefined
  expect(handlerErrors).toEqual([])
  handlerErrors = []
})

/** Deterministic, non-repeating-looking bytes (a record boundary shows up as a mismatch). */
function bytes(n: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(n)
  let x = seed * 2654435761 >>> 0
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0
    b[i] = x >>> 24
  }
  return b
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

/** Checks the framing of one response and returns its CGI body. */
function checkFraming(r: FcgiResult): Buffer {
  expect(r.protocolStatus).toBe(FCGI_REQUEST_COMPLETE)
  const types = r.records.map((rec) => rec.type)
  expect(types.at(-1)).toBe(FCGI_END_REQUEST)
  // stdout's end record (empty) comes after every stdout byte, once.
  const stdoutRecs = r.records.filter((rec) => rec.type === FCGI_STDOUT)
  const empties = stdoutRecs.filter((rec) => rec.content.length === 0)
  expect(empties).toHaveLength(1)
  expect(stdoutRecs.at(-1)!.content.length).toBe(0)
  for (const rec of r.records) expect(rec.content.length).toBeLessThanOrEqual(0xffff)
  return parseCgiResponse(r.stdout).body
}

const HEAD = 'Content-Type: application/octet-stream\r\n\r\n'

// Around 8 KiB, the 16 KiB borrow threshold, 64 KiB (the stream buffers, the
// largest record, a full record of our own: 65528), and past several records.
const SIZES = [0, 1, 8183, 8184, 8192, 8193, 16383, 16384, 16385, 65527, 65528, 65529, 65535, 65536, 65537, 131056, 131072, 200000, 1048577]

describe('bodies', () => {
  it('echoes stdin byte for byte, for sizes around buffer and record boundaries', async () => {
    start()
    handler = async (req) => {
      const body = await readAll(req.stdin)
      req.stdout.write(HEAD)
      req.stdout.write(body)
    }
    for (const size of SIZES) {
      const body = bytes(size, size)
      const r = await fcgiRequest(target, { params: defaultParams({ REQUEST_METHOD: 'POST', CONTENT_LENGTH: String(size) }), stdin: body, timeoutMs: 20000 })
      const out = checkFraming(r)
      expect(out.length, `size ${size}`).toBe(size)
      expect(sha(out), `size ${size}`).toBe(sha(body))
    }
  })

  it('reads stdin sent in small and odd-sized records', async () => {
    start()
    handler = async (req) => {
      const body = await readAll(req.stdin)
      req.stdout.write(`${HEAD}${body.length} ${sha(body)}`)
    }
    for (const chunkSize of [1, 7, 8, 4096, 8191, 65535]) {
      const body = bytes(chunkSize === 1 ? 3000 : 150000, chunkSize)
      const r = await fcgiRequest(target, { params: defaultParams({ REQUEST_METHOD: 'POST' }), stdin: body, chunkSize, timeoutMs: 20000 })
      expect(checkFraming(r).toString(), `records of ${chunkSize}`).toBe(`${body.length} ${sha(body)}`)
    }
  })

  it('sends stdout written in every shape: one large write, corked runs of small and large chunks, many writes', async () => {
    start()
    const big = bytes(300000, 7)
    const shapes: Record<string, (req: Request) => Promise<void> | void> = {
      single: (req) => {
        req.stdout.write(Buffer.concat([Buffer.from(HEAD), big]))
      },
      headThenBody: (req) => {
        req.stdout.write(HEAD)
        req.stdout.write(big)
      },
      corked: (req) => {
        // _writev: an array of Buffers, small and large mixed.
        req.stdout.cork()
        req.stdout.write(HEAD)
        for (let off = 0; off < big.length; off += 70000) req.stdout.write(big.subarray(off, Math.min(big.length, off + 70000)))
        req.stdout.uncork()
      },
      smallPieces: async (req) => {
        req.stdout.write(HEAD)
        for (let off = 0; off < big.length; off += 3000) {
          if (!req.stdout.write(big.subarray(off, Math.min(big.length, off + 3000)))) await new Promise((resolve) => req.stdout.once('drain', resolve))
        }
      },
      awaitedLarge: async (req) => {
        req.stdout.write(HEAD)
        for (let off = 0; off < big.length; off += 100000) {
          await new Promise<void>((resolve, reject) => req.stdout.write(big.subarray(off, off + 100000), (err) => (err ? reject(err) : resolve())))
        }
      },
    }
    for (const [name, fn] of Object.entries(shapes)) {
      handler = fn
      const r = await fcgiRequest(target, { params: defaultParams({ REQUEST_URI: `/${name}` }), timeoutMs: 20000 })
      const out = checkFraming(r)
      expect(out.length, name).toBe(big.length)
      expect(sha(out), name).toBe(sha(big))
    }
  })

  it('keeps stdout and stderr in the order written, large writes included', async () => {
    start()
    const a = bytes(40000, 11)
    const b = bytes(100000, 12)
    handler = async (req) => {
      const write = (stream: NodeJS.WritableStream, data: Buffer | string) =>
        new Promise<void>((resolve, reject) => stream.write(data, (err) => (err ? reject(err) : resolve())))
      await write(req.stdout, HEAD)
      await write(req.stderr, 'first warning\n')
      await write(req.stdout, a)
      await write(req.stderr, 'second warning\n')
      await write(req.stdout, b)
      await write(req.stderr, 'third warning\n')
      req.stdout.write('tail')
    }
    const r = await fcgiRequest(target, { params: defaultParams({}), timeoutMs: 20000 })
    const out = checkFraming(r)
    expect(sha(out)).toBe(sha(Buffer.concat([a, b, Buffer.from('tail')])))
    expect(r.stderr.toString()).toBe('first warning\nsecond warning\nthird warning\n')
    // Record order: each stderr line comes after the stdout bytes written before it.
    let stdoutSoFar = 0
    const at: number[] = []
    for (const rec of r.records) {
      if (rec.type === FCGI_STDOUT) stdoutSoFar += rec.content.length
      if (rec.type === FCGI_STDERR && rec.content.length > 0) at.push(stdoutSoFar)
    }
    const headLen = Buffer.byteLength(HEAD)
    expect(at).toEqual([headLen, headLen + a.length, headLen + a.length + b.length])
  })

  it('serves the next request on a kept connection after large bodies both ways', async () => {
    start(1)
    handler = async (req) => {
      const body = await readAll(req.stdin)
      req.stdout.write(HEAD)
      req.stdout.write(body)
      req.stdout.write(body.subarray(0, 20000))
    }
    const conn = await FcgiConnection.connect(target, 5000)
    conns.push(conn)
    for (let i = 0; i < 4; i++) {
      const body = bytes(70000 * (i + 1) + i, 100 + i)
      const r = await fcgiRequest(target, { params: defaultParams({ REQUEST_METHOD: 'POST' }), stdin: body, keepConn: true, connection: conn, requestId: i + 1, timeoutMs: 20000 })
      const out = checkFraming(r)
      expect(sha(out), `request ${i}`).toBe(sha(Buffer.concat([body, body.subarray(0, 20000)])))
      for (const rec of r.records) expect(rec.requestId).toBe(i + 1)
    }
    expect(conn.closed).toBe(false)
  })

  it('keeps large Buffers intact when the app drops its references right after write()', async () => {
    start()
    handler = (req) => {
      req.stdout.write(HEAD)
      // Nothing but the write itself refers to these Buffers.
      for (let i = 0; i < 8; i++) req.stdout.write(bytes(50000, 200 + i))
    }
    const r = await fcgiRequest(target, { params: defaultParams({}), timeoutMs: 20000 })
    const expected = Buffer.concat(Array.from({ length: 8 }, (_, i) => bytes(50000, 200 + i)))
    expect(sha(checkFraming(r))).toBe(sha(expected))
  })
})

describe('memory of a finished request', () => {
  it('a slot waiting for its next request no longer holds the last one (its streams and what their listeners hold)', async () => {
    // An app collects the body in a closure of a 'data' listener; once the
    // request is finished, nothing of ours may keep that alive while the
    // Request object waits in accept() (with many slots, each kept its last
    // body: hundreds of MiB under a 1 MiB echo load).
    v8.setFlagsFromString('--expose-gc')
    const gc = vm.runInNewContext('gc') as () => void
    start(1)
    let held: WeakRef<object> | undefined
    handler = async (req) => {
      const state = { chunks: [] as Buffer[] }
      held = new WeakRef(state)
      await new Promise<void>((resolve) => {
        req.stdin.on('data', (c: Buffer) => state.chunks.push(c))
        req.stdin.on('end', resolve)
      })
      req.stdout.write(HEAD)
      req.stdout.write(`${state.chunks.length}`)
    }
    const r = await fcgiRequest(target, { params: defaultParams({ REQUEST_METHOD: 'POST' }), stdin: bytes(200000, 7), timeoutMs: 20000 })
    expect(Number(checkFraming(r).toString())).toBeGreaterThan(0)
    // The loop's Request is back in accept(); let the finish settle, then collect.
    for (let i = 0; i < 5 && held!.deref() !== undefined; i++) {
      await new Promise((res) => setTimeout(res, 20))
      gc()
    }
    expect(held!.deref()).toBeUndefined()
  })
})
