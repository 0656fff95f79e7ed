// Bugs the protocol fuzzer (scripts/fuzz.mjs) found, each reproduced on its
// own and deterministically where the original needed a race.
import { afterEach, describe, expect, it } from 'vitest'

import {
  defaultParams,
  encodeBeginRequest,
  encodeParams,
  encodeRecord,
  encodeStream,
  FCGI_DATA,
  FCGI_FILTER,
  FCGI_STDIN,
  parseCgiResponse,
} from '../helpers/fcgi-client.js'
import { TestSession } from '../helpers/session.js'
import { trackUncaught } from '../helpers/uncaught.js'
import { sleep, tmpSocketPath, waitFor, withTimeout } from '../helpers/wait.js'

const session = new TestSession()
afterEach(() => session.release())
const uncaught = trackUncaught()

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  let s = ''
  for await (const c of stream) s += String(c)
  return s
}

describe('FCGI_DATA read while a read of FCGI_STDIN is still in flight', () => {
  // The fuzzer's case: a FILTER request whose connection closes while stdin
  // is being read; the abort destroys stdin before its read completes, the
  // handler goes on to req.data, and that read was dropped: the handler
  // waited forever and its Request never accepted again.
  it('the app destroys stdin during its read, then reads data: data arrives whole', async () => {
    const path = tmpSocketPath('regr')
    const sock = session.listen(path)
    const req = session.request(sock)
    const accepted = req.accept()
    const conn = await session.connect({ path })
    await conn.write(Buffer.concat([encodeBeginRequest(1, FCGI_FILTER), encodeParams(1, defaultParams({ REQUEST_URI: '/f' }))]))
    expect(await withTimeout(accepted, 5000, 'accept')).toBe(true)
    // A read of stdin goes out (and waits for input), then stdin is dropped.
    req.stdin.on('error', () => {})
    req.stdin.resume()
    await sleep(50)
    req.stdin.destroy()
    const data = readAll(req.data)
    await sleep(20)
    await conn.write(Buffer.concat([encodeStream(FCGI_STDIN, 1, 'ignored stdin'), encodeStream(FCGI_DATA, 1, 'the data')]))
    expect(await withTimeout(data, 5000, 'req.data')).toBe('the data')
    req.stdout.write('Content-Type: text/plain\r\n\r\nok')
    await withTimeout(req.finish(), 5000, 'finish')
    const res = await conn.readUntilEnd(1, 5000)
    expect(parseCgiResponse(res.stdout).body.toString()).toBe('ok')
    await uncaught.expectNone(50)
  })

  it('the web server closes mid-stdin (worker blocked on a cut header) and the handler reads data next: it ends, 20 times', async () => {
    const path = tmpSocketPath('regr')
    const sock = session.listen(path)
    const req = session.request(sock)
    let handled = 0
    const loop = (async () => {
      while (await req.accept()) {
        await readAll(req.stdin).catch(() => {})
        await readAll(req.data).catch(() => {})
        handled++
        await req.finish()
      }
    })()
    for (let i = 0; i < 20; i++) {
      const conn = await session.connect({ path })
      const head = Buffer.concat([encodeBeginRequest(1, FCGI_FILTER), encodeParams(1, defaultParams({ REQUEST_URI: `/f${i}` }))])
      // 3 bytes of a STDIN header: the read blocks for the rest of it.
      await conn.write(Buffer.concat([head, encodeRecord(FCGI_STDIN, 1, 'abc').subarray(0, 3)]))
      await sleep(20)
      conn.destroy()
      await waitFor(() => handled === i + 1, { timeoutMs: 5000, what: `handler ${i} to end` })
    }
    await withTimeout(sock.close(), 5000, 'close')
    await withTimeout(loop, 5000, 'the accept loop')
  })
})
