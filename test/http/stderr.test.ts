// res.stderr: FCGI_STDERR, which a web server writes to its error log.
import { afterEach, describe, expect, it } from 'vitest'
import { createServer, type Server } from '../../src/index.js'
import { defaultParams, fcgiRequest, parseCgiResponse } from '../helpers/fcgi-client.js'
import { startNginx, stopAllNginx } from '../helpers/nginx.js'
import { tmpSocketPath, waitFor } from '../helpers/wait.js'

let server: Server | undefined
afterEach(async () => {
  await stopAllNginx()
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()))
  server = undefined
})

describe('res.stderr', () => {
  it('reaches the web server as FCGI_STDERR and nginx logs it; the response is unaffected', async () => {
    const path = tmpSocketPath('stderr')
    server = createServer((req, res) => {
      res.stderr.write(`app warning for ${req.url}\n`)
      res.end('body')
    }).listen({ path, mode: 0o666 })
    await new Promise((r) => server!.once('listening', r))
    const raw = await fcgiRequest({ path }, { params: defaultParams({ REQUEST_URI: '/raw' }) })
    expect(raw.stderr.toString()).toBe('app warning for /raw\n')
    expect(parseCgiResponse(raw.stdout).body.toString()).toBe('body')
    const nginx = await startNginx({ upstream: { path } })
    const res = await fetch(`${nginx.url}/via-nginx`)
    expect(await res.text()).toBe('body')
    await waitFor(() => nginx.errorLog().includes('app warning for /via-nginx'), { timeoutMs: 5000, what: 'the line in nginx error log' })
    expect(nginx.errorLog()).toMatch(/FastCGI sent in stderr: "app warning for \/via-nginx/)
  })
})
