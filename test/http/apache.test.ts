// createServer() behind a real Apache httpd (mod_proxy_fcgi): an Express app
// and a plain (req, res) listener, over a unix socket (one FastCGI connection
// per request) and over TCP (enablereuse=on: kept connections). A real HTTP
// client gets the status, headers, cookies and bodies the application made,
// and the application sees the request the client made (url, Host, address).
import crypto from 'node:crypto'
import type http from 'node:http'
import type { AddressInfo } from 'node:net'

import express from 'express'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createServer, type IncomingMessage, type Server, type ServerResponse } from '../../src/index.js'
import { type ApacheInstance, apacheSocketPath, startApache, stopAllApache } from '../helpers/apache.js'
import { httpRequest } from '../helpers/http-client.js'
import { withTimeout } from '../helpers/wait.js'

type Listener = (req: http.IncomingMessage, res: http.ServerResponse) => void

/** What the application saw of the request. */
function info(req: http.IncomingMessage) {
  return {
    url: req.url,
    method: req.method,
    host: req.headers.host,
    xTest: req.headers['x-test'],
    remoteAddress: req.socket.remoteAddress,
    remotePort: req.socket.remotePort,
    httpVersion: req.httpVersion,
  }
}

/** Echoes the request body back, with its Content-Length. */
function echo(req: http.IncomingMessage, res: http.ServerResponse): void {
  res.setHeader('Content-Type', 'application/octet-stream')
  if (req.headers['content-length'] !== undefined) res.setHeader('Content-Length', req.headers['content-length'])
  req.pipe(res)
}

function plainApp(): Listener {
  return (req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    switch (path) {
      case '/echo':
        echo(req, res)
        return
      case '/cookies':
        res.statusCode = 201
        res.setHeader('X-Custom', 'yes')
        res.setHeader('Set-Cookie', ['a=1; Path=/', 'b=2; Path=/; HttpOnly'])
        res.end('cookies set\n')
        return
      case '/redirect':
        res.writeHead(302, { Location: '/elsewhere?from=redirect' })
        res.end()
        return
      case '/text':
        res.setHeader('Content-Type', 'text/plain; charset=utf-8')
        res.setHeader('X-Method', req.method ?? '')
        res.end('some text for GET\n')
        return
      case '/empty':
        res.writeHead(204, { 'X-Empty': '1' })
        res.end()
        return
      default:
        res.setHeader('Content-Type', 'application/json')
        res.end(JSON.stringify(info(req)))
    }
  }
}

function expressApp(): Listener {
  const app = express()
  app.post('/echo', echo)
  app.get('/cookies', (_req, res) => {
    res.cookie('a', '1')
    res.cookie('b', '2', { httpOnly: true })
    res.status(201).set('X-Custom', 'yes').send('cookies set\n')
  })
  app.get('/redirect', (_req, res) => res.redirect(302, '/elsewhere?from=redirect'))
  app.get('/text', (req, res) => { res.set('X-Method', req.method).type('text/plain').send('some text for GET\n') })
  app.get('/empty', (_req, res) => { res.set('X-Empty', '1').status(204).end() })
  app.use((req, res) => { res.json(info(req)) })
  return app as unknown as Listener
}

const APPS: Record<string, () => Listener> = { 'plain createServer listener': plainApp, 'Express 5': expressApp }
const TRANSPORTS = [
  { name: 'unix socket', reuse: false },
  { name: 'TCP, enablereuse=on', reuse: true },
] as const

afterAll(async () => {
  await stopAllApache()
})

function listening(server: Server): Promise<void> {
  return withTimeout(new Promise<void>((resolve, reject) => {
    server.once('listening', resolve)
    server.once('error', reject)
  }), 5000, 'the FastCGI server to listen')
}

for (const [appName, makeApp] of Object.entries(APPS)) {
  for (const transport of TRANSPORTS) {
    describe(`${appName} behind Apache mod_proxy_fcgi (${transport.name})`, () => {
      let server: Server
      let apache: ApacheInstance
      const failures: unknown[] = []

      beforeAll(async () => {
        server = createServer(makeApp() as unknown as (req: IncomingMessage, res: ServerResponse) => void)
        server.on('requestError', (err) => failures.push(err))
        if (transport.reuse) {
          server.listen({ port: 0, host: '127.0.0.1' })
          await listening(server)
          const port = (server.address() as AddressInfo).port
          apache = await startApache({ upstream: { port, host: '127.0.0.1' }, reuse: true })
        } else {
          const path = apacheSocketPath('apache')
          server.listen({ path, mode: 0o666 })
          await listening(server)
          apache = await startApache({ upstream: { path } })
        }
      })

      afterAll(async () => {
        await apache?.stop()
        if (server?.listening) await withTimeout(new Promise<void>((r) => server.close(() => r())), 15000, 'server.close()')
      })

      it('GET with a query: req.url is the path and query the client asked for; Host, REMOTE_ADDR, REMOTE_PORT', async () => {
        const target = '/some/where/b%20c?x=1&y=%20z&x=2'
        // From 127.0.0.2: REMOTE_ADDR is the HTTP client, not the FastCGI peer (Apache on 127.0.0.1).
        const r = await httpRequest(apache.url + target, { headers: { 'X-Test': 'hello' }, localAddress: '127.0.0.2' })
        expect(r.status).toBe(200)
        const seen = JSON.parse(r.body.toString())
        expect(seen).toEqual({
          url: target,
          method: 'GET',
          host: `127.0.0.1:${apache.port}`,
          xTest: 'hello',
          remoteAddress: '127.0.0.2',
          remotePort: r.localPort,
          httpVersion: '1.1',
        })
      })

      it('POST of 1 MiB is echoed back intact', async () => {
        const body = crypto.randomBytes(1024 * 1024)
        const r = await httpRequest(`${apache.url}/echo`, { method: 'POST', body, headers: { 'Content-Type': 'application/octet-stream' } })
        expect(r.status).toBe(200)
        expect(r.body.length).toBe(body.length)
        expect(crypto.createHash('sha256').update(r.body).digest('hex')).toBe(crypto.createHash('sha256').update(body).digest('hex'))
      })

      it('status, custom headers and two Set-Cookie headers', async () => {
        const r = await httpRequest(`${apache.url}/cookies`)
        expect(r.status).toBe(201)
        expect(r.headers['x-custom']).toBe('yes')
        expect(r.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; Path=/; HttpOnly'])
        expect(r.body.toString()).toBe('cookies set\n')
      })

      it('a redirect reaches the client as such (no internal redirect by Apache)', async () => {
        const r = await httpRequest(`${apache.url}/redirect`)
        expect(r.status).toBe(302)
        expect(r.headers.location).toBe('/elsewhere?from=redirect')
      })

      it('HEAD: the headers of a GET and no body', async () => {
        const get = await httpRequest(`${apache.url}/text`)
        expect(get.body.toString()).toBe('some text for GET\n')
        expect(get.headers['x-method']).toBe('GET')
        const head = await httpRequest(`${apache.url}/text`, { method: 'HEAD' })
        expect(head.status).toBe(200)
        expect(head.headers['x-method']).toBe('HEAD')
        expect(head.headers['content-type']).toBe('text/plain; charset=utf-8')
        expect(head.body.length).toBe(0)
      })

      it('204 No Content: no body', async () => {
        const r = await httpRequest(`${apache.url}/empty`)
        expect(r.status).toBe(204)
        expect(r.headers['x-empty']).toBe('1')
        expect(r.body.length).toBe(0)
      })

      it('several requests at once', async () => {
        const results = await Promise.all(Array.from({ length: 12 }, (_, i) => httpRequest(`${apache.url}/n/${i}?i=${i}`)))
        expect(results.map((r) => JSON.parse(r.body.toString()).url)).toEqual(Array.from({ length: 12 }, (_, i) => `/n/${i}?i=${i}`))
      })

      it("Apache's error log is clean and no listener failed", async () => {
        // After every test above (they run in order).
        expect(apache.errorLog()).not.toMatch(/\[proxy_fcgi:error\]/)
        expect(apache.errorLogProblems()).toEqual([])
        expect(failures).toEqual([])
        // enablereuse=on: Apache keeps FastCGI connections (FCGI_KEEP_CONN) and
        // sends several requests on one; without it, one connection per request.
        const stats = server.fcgiSocket!.stats()
        expect(stats.requests).toBeGreaterThanOrEqual(19)
        if (transport.reuse) expect(stats.acceptedConnections).toBeLessThan(stats.requests)
        else expect(stats.acceptedConnections).toBe(stats.requests)
      })
    })
  }
}
