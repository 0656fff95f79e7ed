import { afterEach, describe, expect, it } from 'vitest'
import { initSocket, Request, type FcgiSocket } from '../../src/index.js'
import { defaultParams, fcgiRequest, parseCgiResponse } from '../helpers/fcgi-client.js'
import { tmpSocketPath } from '../helpers/wait.js'

let sock: FcgiSocket | undefined
afterEach(async () => { await sock?.close(); sock = undefined })

describe('smoke', () => {
  it('serves the seed loop over a unix socket', async () => {
    const path = tmpSocketPath('smoke')
    sock = initSocket(path)
    const req = new Request(sock)
    const loop = (async () => {
      let n = 0
      while (await req.accept()) {
        let body = ''
        for await (const c of req.stdin) body += c
        req.stdout.write(`Content-Type: text/plain\r\n\r\nHello from ${req.env.REQUEST_URI} ${body}\n`)
        await req.finish()
        n++
      }
      return n
    })()
    const r = await fcgiRequest({ path }, { params: defaultParams({ REQUEST_URI: '/x' }), stdin: 'abc' })
    const res = parseCgiResponse(r.stdout)
    expect(res.body.toString()).toBe('Hello from /x abc\n')
    const r2 = await fcgiRequest({ path }, { params: defaultParams({ REQUEST_URI: '/y' }), keepConn: true })
    expect(parseCgiResponse(r2.stdout).body.toString()).toBe('Hello from /y \n')
    await sock.close()
    expect(await loop).toBe(2)
    sock = undefined
  })
})

describe('arguments', () => {
  it('new Request() with something that is not an FcgiSocket is a TypeError with a code', () => {
    expect(() => new Request({} as unknown as FcgiSocket)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }))
  })

  it('setExitStatus() takes 32-bit integers only', async () => {
    const path = tmpSocketPath('args')
    sock = initSocket(path)
    const req = new Request(sock)
    expect(() => req.setExitStatus(1.5)).toThrow(RangeError)
    expect(() => req.setExitStatus(2 ** 40)).toThrow(RangeError)
  })

  it('a second accept() while one is pending is an error with a code', async () => {
    const path = tmpSocketPath('args2')
    sock = initSocket(path)
    const req = new Request(sock)
    const first = req.accept()
    await expect(req.accept()).rejects.toMatchObject({ code: 'ERR_FASTCGI_ACCEPT_PENDING' })
    await sock.close()
    expect(await first).toBe(false)
    sock = undefined
  })
})

describe('getParam', () => {
  it('finds params as env does, without building env (first value; HTTP_* repeats joined)', async () => {
    const path = tmpSocketPath('getparam')
    sock = initSocket(path)
    const req = new Request(sock)
    const seen: Array<Record<string, string | undefined>> = []
    const loop = (async () => {
      while (await req.accept()) {
        seen.push({ uri: req.getParam('REQUEST_URI'), multi: req.getParam('HTTP_X_MULTI'), cookie: req.getParam('HTTP_COOKIE'),
          dup: req.getParam('DUP'), empty: req.getParam('EMPTY'), missing: req.getParam('MISSING'), first: req.getParam('FCGI_ROLE') })
        seen.push({ uri: req.env.REQUEST_URI, multi: req.env.HTTP_X_MULTI, cookie: req.env.HTTP_COOKIE, dup: req.env.DUP,
          empty: req.env.EMPTY, missing: req.env.MISSING, first: req.env.FCGI_ROLE })
        req.stdout.write('Content-Type: text/plain\r\n\r\nok')
        await req.finish()
      }
    })()
    await fcgiRequest({ path }, { params: [['REQUEST_URI', '/p'], ['HTTP_X_MULTI', 'a'], ['HTTP_X_MULTI', 'b'], ['HTTP_COOKIE', 'c=1'],
      ['HTTP_COOKIE', 'd=2'], ['DUP', 'one'], ['DUP', 'two'], ['EMPTY', '']] })
    await sock.close()
    await loop
    sock = undefined
    expect(seen[0]).toEqual({ uri: '/p', multi: 'a, b', cookie: 'c=1; d=2', dup: 'one', empty: '', missing: undefined, first: 'RESPONDER' })
    expect(seen[1]).toEqual(seen[0])
  })
})
