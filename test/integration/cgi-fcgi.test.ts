// Debian's cgi-fcgi (libfcgi-bin), built on the C libfcgi client side, as an
// independent FastCGI client of the seed's accept loop.
import crypto from 'node:crypto'

import { afterEach, describe, expect, it } from 'vitest'

import { type FcgiSocket, initSocket, Request } from '../../src/index.js'
import { runCgiFcgi, type CgiFcgiTarget } from '../helpers/cgi-fcgi.js'
import { parseCgiResponse } from '../helpers/fcgi-client.js'
import { tmpSocketPath, withTimeout } from '../helpers/wait.js'

const sockets: FcgiSocket[] = []

afterEach(async () => {
  await Promise.all(sockets.splice(0).map((s) => withTimeout(s.close(), 15000, 'FcgiSocket.close() in afterEach')))
})

/**
 * The seed's accept loop: GET answers with REQUEST_URI and QUERY_STRING, POST
 * echoes its body (and CONTENT_LENGTH), /exit/<n> ends with exit status n.
 */
function startApp(kind: 'unix' | 'tcp'): { sock: FcgiSocket; target: CgiFcgiTarget; loop: Promise<number> } {
  const sock = kind === 'unix' ? initSocket(tmpSocketPath('cgifcgi')) : initSocket('127.0.0.1:0')
  sockets.push(sock)
  const addr = sock.address()
  if (!addr) throw new Error('socket has no address')
  const target: CgiFcgiTarget = addr.family === 'unix' ? { path: addr.address } : { port: addr.port!, host: '127.0.0.1' }
  const req = new Request(sock)
  const loop = (async () => {
    let n = 0
    while (await req.accept()) {
      const chunks: Buffer[] = []
      for await (const c of req.stdin) chunks.push(c as Buffer)
      const input = Buffer.concat(chunks)
      const uri = req.getParam('REQUEST_URI') ?? ''
      const exit = /^\/exit\/(\d+)/.exec(uri)
      if (req.getParam('REQUEST_METHOD') === 'POST') {
        req.stdout.write(`Content-Type: application/octet-stream\r\nX-Content-Length: ${req.getParam('CONTENT_LENGTH')}\r\n\r\n`)
        req.stdout.write(input)
      } else {
        req.stdout.write(`Content-Type: text/plain\r\n\r\nuri=${uri} query=${req.getParam('QUERY_STRING')}\n`)
      }
      if (exit) {
        req.stderr.write(`exiting with ${exit[1]}\n`)
        req.setExitStatus(Number(exit[1]))
      }
      await req.finish()
      n++
    }
    return n
  })()
  loop.catch(() => {})
  return { sock, target, loop }
}

describe.each(['unix', 'tcp'] as const)('cgi-fcgi -bind -connect over %s', (kind) => {
  it('GET with QUERY_STRING', async () => {
    const { target } = startApp(kind)
    const r = await runCgiFcgi(target, {
      env: { REQUEST_METHOD: 'GET', REQUEST_URI: '/search?q=fast+cgi&x=1', QUERY_STRING: 'q=fast+cgi&x=1', GATEWAY_INTERFACE: 'CGI/1.1' },
    })
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    const res = parseCgiResponse(r.stdout)
    expect(res.status).toBe(200)
    expect(res.headers['content-type']).toBe('text/plain')
    expect(res.body.toString()).toBe('uri=/search?q=fast+cgi&x=1 query=q=fast+cgi&x=1\n')
  })

  it('POST: the CONTENT_LENGTH body is echoed byte-exact', async () => {
    const { target } = startApp(kind)
    const body = crypto.randomBytes(200 * 1024)
    const r = await runCgiFcgi(target, {
      env: { REQUEST_METHOD: 'POST', REQUEST_URI: '/upload', CONTENT_LENGTH: String(body.length), CONTENT_TYPE: 'application/octet-stream' },
      stdin: body,
    })
    expect(r.code).toBe(0)
    const res = parseCgiResponse(r.stdout)
    expect(res.headers['x-content-length']).toBe(String(body.length))
    expect(res.body.length).toBe(body.length)
    expect(res.body.equals(body)).toBe(true)
  })

  it('setExitStatus becomes the exit code of cgi-fcgi; stderr is forwarded', async () => {
    const { sock, target } = startApp(kind)
    const r = await runCgiFcgi(target, { env: { REQUEST_METHOD: 'GET', REQUEST_URI: '/exit/7', QUERY_STRING: '' } })
    expect(r.code).toBe(7)
    expect(r.stderr).toBe('exiting with 7\n')
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('uri=/exit/7 query=\n')
    // The same accept loop answers the next cgi-fcgi run, with status 0 again.
    const r2 = await runCgiFcgi(target, { env: { REQUEST_METHOD: 'GET', REQUEST_URI: '/after', QUERY_STRING: 'a=b' } })
    expect(r2.code).toBe(0)
    expect(parseCgiResponse(r2.stdout).body.toString()).toBe('uri=/after query=a=b\n')
    expect(sock.stats().requests).toBe(2)
  })
})
