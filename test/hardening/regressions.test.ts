// Bugs the protocol fuzzer (scripts/fuzz.mjs) found, each reproduced on its
// own and deterministically where the original needed a race.
import { spawn } from 'node:child_process'
import path from 'node:path'

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
import { assertDistFresh, ROOT } from '../lifecycle/child.js'

const session = new TestSession()
afterEach(() => session.release())
const uncaught = trackUncaught()

/**
 * Runs an ES module script in a child process (a server that may block its
 * own threads cannot hang vitest), `arg` as its process.argv[1]; bounded.
 */
async function runScript(script: string, arg: string, nodeArgs: string[] = []): Promise<{ out: string; err: string; code: number | null }> {
  const child = spawn(process.execPath, [...nodeArgs, '--input-type=module', '-e', script, arg], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => { out += d })
  child.stderr.on('data', (d) => { err += d })
  const code = await withTimeout(new Promise<number | null>((resolve) => child.on('exit', resolve)), 20000, 'the child').finally(() => child.kill('SIGKILL'))
  return { out, err, code }
}

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

describe('createServer: handlers that never answer and keep nothing', () => {
  // The fuzz-target's never-ending handlers: with nothing holding the
  // request, a garbage collection took the Request, its response and the
  // accept loop itself; the native side ended the request, but the loop was
  // gone for good: with maxConns 2, two such requests and a GC, the server
  // never answered again.
  it('a GC while they wait does not take the accept loops: once the web server leaves, the server serves again', async () => {
    assertDistFresh()
    const sock = tmpSocketPath('regr-gc')
    const script = `
      import net from 'node:net'
      import { createServer } from ${JSON.stringify(path.join(ROOT, 'dist/index.js'))}
      import { encodeRequest } from ${JSON.stringify(path.join(ROOT, 'test/helpers/fcgi-wire.mjs'))}
      const server = createServer({ maxConns: 2 }, (req, res) => {
        if (req.url === '/never') return new Promise(() => {})  // keeps nothing
        res.end('ok')
      })
      server.listen(process.argv[1])
      await new Promise((r) => server.once('listening', r))
      async function send(uri, closeAfter) {
        const c = net.connect(process.argv[1])
        c.on('error', () => {})
        const got = []
        c.on('data', (d) => got.push(d))
        await new Promise((r) => c.on('connect', r))
        c.write(encodeRequest(uri))
        const closed = new Promise((r) => c.on('close', r))
        if (closeAfter) { await new Promise((r) => setTimeout(r, closeAfter)); c.destroy() }
        await Promise.race([closed, new Promise((r) => setTimeout(r, 3000))])
        c.destroy()
        return Buffer.concat(got).toString('latin1')
      }
      const a = send('/never', 800), b = send('/never', 800)
      await new Promise((r) => setTimeout(r, 300))
      globalThis.gc()
      await Promise.all([a, b])
      const out = await send('/after', 0)
      process.stdout.write(out.includes('ok') ? 'served' : 'not served')
      process.exit(0)
    `
    const { out, err, code } = await runScript(script, sock, ['--expose-gc'])
    expect(err).toBe('')
    expect(out).toBe('served')
    expect(code).toBe(0)
  })
})

// Found by the libFuzzer harness (fuzz/libfcgi_fuzzer.cc): ScanHead called a
// head "complete" although libfcgi answers each further FCGI_BEGIN_REQUEST
// in it (FCGI_CANT_MPX_CONN) with a write(2); a complete head is accepted
// on the poller (or the JS thread), where a write to a peer that does not
// read blocks everyone.
describe('a request head carrying many FCGI_BEGIN_REQUESTs, from a peer that never reads', () => {
  it('other connections are still served', async () => {
    assertDistFresh()
    const sock = tmpSocketPath('regr')
    const script = `
      import net from 'node:net'
      import { createServer } from ${JSON.stringify(path.join(ROOT, 'dist/index.js'))}
      import { encodeRequest, record } from ${JSON.stringify(path.join(ROOT, 'test/helpers/fcgi-wire.mjs'))}
      const server = createServer((req, res) => res.end('ok'))
      server.listen(process.argv[1])
      await new Promise((r) => server.once('listening', r))
      // 1,000 further FCGI_BEGIN_REQUESTs (16 KiB with the rest of the
      // head): more answers than a unix socket's buffer takes.
      const body = (id) => record(1, id, Buffer.from([0, 1, 0, 0, 0, 0, 0, 0]))
      const head = [body(1)]
      for (let i = 0; i < 1000; i++) head.push(body(2 + i))
      head.push(record(4, 1), record(5, 1))
      const greedy = net.connect(process.argv[1])
      greedy.on('error', () => {})
      greedy.pause()  // never reads its answers
      await new Promise((r) => greedy.on('connect', r))
      greedy.write(Buffer.concat(head))
      await new Promise((r) => setTimeout(r, 500))
      const c = net.connect(process.argv[1])
      c.on('error', () => {})
      const got = []
      c.on('data', (d) => got.push(d))
      c.write(encodeRequest('/after'))
      await Promise.race([new Promise((r) => c.on('close', r)), new Promise((r) => setTimeout(r, 5000))])
      c.destroy()
      greedy.destroy()
      process.stdout.write(Buffer.concat(got).toString('latin1').includes('ok') ? 'served' : 'not served')
      process.exit(0)
    `
    const { out, err, code } = await runScript(script, sock)
    expect(err).toBe('')
    expect(out).toBe('served')
    expect(code).toBe(0)
  })
})
