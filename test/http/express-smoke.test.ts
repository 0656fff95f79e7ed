import express from 'express'
import { afterEach, describe, expect, it } from 'vitest'
import { createServer, type Server } from '../../src/index.js'
import { defaultParams, fcgiRequest, parseCgiResponse } from '../helpers/fcgi-client.js'
import { tmpSocketPath } from '../helpers/wait.js'

let server: Server | undefined
afterEach(async () => { await new Promise<void>((r) => (server ? server.close(() => r()) : r())); server = undefined })

describe('express smoke', () => {
  it('routes, json, redirect, cookies, errors', async () => {
    const app = express()
    app.use(express.json())
    app.get('/hello/:name', (req, res) => { res.json({ hi: req.params.name, q: req.query, ip: req.ip, proto: req.protocol }) })
    app.post('/echo', (req, res) => { res.status(201).json(req.body) })
    app.get('/redir', (_req, res) => { res.redirect('/hello/x') })
    app.get('/cookie', (_req, res) => { res.cookie('a', '1'); res.cookie('b', '2'); res.send('ok') })
    app.get('/boom', () => { throw new Error('boom') })
    const path = tmpSocketPath('express')
    server = createServer(app).listen(path)
    await new Promise((r) => server!.once('listening', r))
    const get = async (uri: string, extra: Record<string, string> = {}, stdin?: string) =>
      parseCgiResponse((await fcgiRequest({ path }, { params: defaultParams({ REQUEST_URI: uri, REQUEST_METHOD: stdin ? 'POST' : 'GET', ...extra }, stdin), stdin })).stdout)
    const r1 = await get('/hello/bob?x=1', { REMOTE_ADDR: '10.0.0.7', HTTPS: 'on' })
    expect(r1.status).toBe(200)
    expect(JSON.parse(r1.body.toString())).toEqual({ hi: 'bob', q: { x: '1' }, ip: '10.0.0.7', proto: 'https' })
    const r2 = await get('/echo', { CONTENT_TYPE: 'application/json' }, '{"a":[1,2]}')
    expect(r2.status).toBe(201)
    expect(JSON.parse(r2.body.toString())).toEqual({ a: [1, 2] })
    const r3 = await get('/redir')
    expect(r3.status).toBe(302)
    expect(r3.headers.location).toBe('/hello/x')
    const r4 = await get('/cookie')
    expect(r4.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; Path=/'])
    const r5 = await get('/boom')
    expect(r5.status).toBe(500)
    const r6 = await get('/nope')
    expect(r6.status).toBe(404)
  })
})
