import { getRequestListener } from '@hono/node-server'
import { Hono } from 'hono'
import { afterEach, describe, expect, it } from 'vitest'
import { createServer, serve, type Server } from '../../src/index.js'
import { defaultParams, fcgiRequest, parseCgiResponse } from '../helpers/fcgi-client.js'
import { tmpSocketPath } from '../helpers/wait.js'

let server: Server | undefined
afterEach(async () => { await new Promise<void>((r) => (server ? server.close(() => r()) : r())); server = undefined })

function app(): Hono {
  const a = new Hono()
  a.get('/hello/:name', (c) => c.json({ hi: c.req.param('name'), url: c.req.url }))
  a.post('/echo', async (c) => c.text(await c.req.text(), 201))
  a.get('/cookies', (c) => { c.header('Set-Cookie', 'a=1', { append: true }); c.header('Set-Cookie', 'b=2', { append: true }); return c.text('ok') })
  a.get('/stream', (c) => new Response(new ReadableStream({ start(ctl) { for (let i = 0; i < 3; i++) ctl.enqueue(new TextEncoder().encode(`part${i};`)); ctl.close() } })))
  return a
}

for (const mode of ['serve({ fetch })', '@hono/node-server listener'] as const) {
  describe(`hono via ${mode}`, () => {
    it('routes, bodies, cookies, streams', async () => {
      const path = tmpSocketPath('hono')
      const a = app()
      server = mode === 'serve({ fetch })' ? serve({ fetch: a.fetch, path }) : createServer(getRequestListener(a.fetch)).listen(path)
      await new Promise((r) => server!.once('listening', r))
      const call = async (uri: string, stdin?: string, extra: Record<string, string> = {}) =>
        parseCgiResponse((await fcgiRequest({ path }, { params: defaultParams({ REQUEST_URI: uri, REQUEST_METHOD: stdin ? 'POST' : 'GET', HTTP_HOST: 'example.org', ...extra }, stdin), stdin })).stdout)
      const r1 = await call('/hello/ann?x=1')
      expect(r1.status).toBe(200)
      expect(JSON.parse(r1.body.toString())).toEqual({ hi: 'ann', url: 'http://example.org/hello/ann?x=1' })
      const r2 = await call('/echo', 'some body')
      expect(r2.status).toBe(201)
      expect(r2.body.toString()).toBe('some body')
      const r3 = await call('/cookies')
      expect(r3.headers['set-cookie']).toEqual(['a=1', 'b=2'])
      const r4 = await call('/stream')
      expect(r4.body.toString()).toBe('part0;part1;part2;')
      const r5 = await call('/missing')
      expect(r5.status).toBe(404)
    })
  })
}
