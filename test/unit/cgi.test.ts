import { describe, expect, it } from 'vitest'
import { cgiToRequestInfo, ChunkedDecoder, httpHeadToCgi, requestUrl } from '../../src/http/cgi.js'

describe('requestUrl', () => {
  it('prefers REQUEST_URI', () => {
    expect(requestUrl({ REQUEST_URI: '/a/b?c=1', SCRIPT_NAME: '/x', PATH_INFO: '/y' })).toBe('/a/b?c=1')
  })
  it('falls back to SCRIPT_NAME + PATH_INFO + ?QUERY_STRING', () => {
    expect(requestUrl({ SCRIPT_NAME: '/app', PATH_INFO: '/users/7', QUERY_STRING: 'x=1' })).toBe('/app/users/7?x=1')
    expect(requestUrl({ SCRIPT_NAME: '/app', PATH_INFO: '' })).toBe('/app')
    expect(requestUrl({})).toBe('/')
  })
})

describe('cgiToRequestInfo', () => {
  it('maps the CGI variables to node:http request fields', () => {
    const info = cgiToRequestInfo({
      REQUEST_METHOD: 'post', REQUEST_URI: '/p?q', SERVER_PROTOCOL: 'HTTP/1.0', CONTENT_TYPE: 'text/plain', CONTENT_LENGTH: '5',
      HTTP_HOST: 'example.org', HTTP_ACCEPT_LANGUAGE: 'en', HTTP_CONTENT_LENGTH: '999', REMOTE_ADDR: '::1', REMOTE_PORT: '4567',
      SERVER_ADDR: '127.0.0.1', SERVER_PORT: '80', HTTPS: 'on',
    })
    expect(info).toMatchObject({
      method: 'POST', url: '/p?q', httpVersion: '1.0', httpVersionMajor: 1, httpVersionMinor: 0,
      headers: { 'content-type': 'text/plain', 'content-length': '5', host: 'example.org', 'accept-language': 'en' },
      remoteAddress: '::1', remotePort: 4567, localAddress: '127.0.0.1', localPort: 80, encrypted: true,
    })
    expect(info.rawHeaders).toEqual(['Content-Type', 'text/plain', 'Content-Length', '5', 'Host', 'example.org', 'Accept-Language', 'en'])
  })
  it('joins repeated headers as node:http does', () => {
    const pairs: Array<[string, string]> = [
      ['HTTP_X_MULTI', 'a'], ['HTTP_X_MULTI', 'b'], ['HTTP_COOKIE', 'c1=1'], ['HTTP_COOKIE', 'c2=2'], ['HTTP_HOST', 'one'], ['HTTP_HOST', 'two'],
    ]
    const info = cgiToRequestInfo({}, pairs)
    expect(info.headers).toEqual({ 'x-multi': 'a, b', cookie: 'c1=1; c2=2', host: 'one' })
    expect(info.rawHeaders).toEqual(['X-Multi', 'a', 'X-Multi', 'b', 'Cookie', 'c1=1', 'Cookie', 'c2=2', 'Host', 'one', 'Host', 'two'])
  })
  it('defaults: GET, HTTP/1.1, no TLS, no address', () => {
    expect(cgiToRequestInfo({})).toMatchObject({ method: 'GET', url: '/', httpVersion: '1.1', encrypted: false, remoteAddress: undefined, remotePort: undefined })
    expect(cgiToRequestInfo({ REMOTE_PORT: '99999' }).remotePort).toBeUndefined()
  })
})

describe('httpHeadToCgi', () => {
  it('turns the status line into Status: and drops hop-by-hop headers', () => {
    const head = 'HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nConnection: close\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n'
    expect(httpHeadToCgi(head)).toBe('Status: 404 Not Found\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n')
  })
  it('keeps a status without a reason phrase', () => {
    expect(httpHeadToCgi('HTTP/1.1 299\r\n\r\n')).toBe('Status: 299\r\n\r\n')
  })
  it('rejects what is not an HTTP head', () => {
    expect(() => httpHeadToCgi('garbage\r\n\r\n')).toThrow(/not an HTTP response head/)
  })
})

describe('ChunkedDecoder', () => {
  it('removes the framing, fed in any split', () => {
    const framed = Buffer.from('5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: 1\r\n\r\n')
    for (let step = 1; step <= framed.length; step++) {
      const d = new ChunkedDecoder()
      const out: Buffer[] = []
      for (let i = 0; i < framed.length; i += step) out.push(...d.push(framed.subarray(i, i + step)))
      expect(Buffer.concat(out).toString()).toBe('hello world!')
      expect(d.done).toBe(true)
    }
  })
  it('rejects a bad size line', () => {
    expect(() => new ChunkedDecoder().push(Buffer.from('zz\r\n'))).toThrow(/bad chunk size/)
  })
})
