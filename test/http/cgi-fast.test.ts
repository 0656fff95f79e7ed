// The one-pass conversions createServer uses per request, checked against
// the plain ones they replace (which test/unit/cgi.test.ts pins down).
import { describe, expect, it } from 'vitest'

import { envFromPairs, envFromParams, httpHeadToCgi, requestInfoFromPairs, requestInfoFromParams } from '../../src/http/cgi.js'

/** FCGI_PARAMS as a string -> pairs, as Request.paramPairs() splits them. */
function pairsOf(params: string): Array<[string, string]> {
  if (params === '') return []
  return params.split('\0').map((kv) => {
    const eq = kv.indexOf('=')
    return eq < 0 ? [kv, ''] : [kv.slice(0, eq), kv.slice(eq + 1)]
  })
}

const NGINX = [
  'QUERY_STRING=a=1&b=2', 'REQUEST_METHOD=get', 'CONTENT_TYPE=', 'CONTENT_LENGTH=', 'SCRIPT_NAME=/index.php',
  'REQUEST_URI=/p/q?a=1&b=2', 'DOCUMENT_URI=/p/q', 'DOCUMENT_ROOT=/srv', 'SERVER_PROTOCOL=HTTP/1.1', 'REQUEST_SCHEME=http',
  'GATEWAY_INTERFACE=CGI/1.1', 'SERVER_SOFTWARE=nginx/1.22.1', 'REMOTE_ADDR=127.0.0.1', 'REMOTE_PORT=51234',
  'SERVER_ADDR=127.0.0.1', 'SERVER_PORT=8080', 'SERVER_NAME=localhost', 'REDIRECT_STATUS=200', 'HTTP_HOST=localhost:8080',
  'HTTP_USER_AGENT=wrk', 'HTTP_ACCEPT=*/*',
].join('\0')

const CASES: Record<string, string> = {
  empty: '',
  nginx: NGINX,
  'body, HTTP/1.0, TLS': [
    'REQUEST_METHOD=POST', 'CONTENT_TYPE=application/json', 'CONTENT_LENGTH=12', 'SERVER_PROTOCOL=HTTP/1.0', 'HTTPS=On',
    'HTTP_TRANSFER_ENCODING=chunked', 'HTTP_CONTENT_LENGTH=999', 'HTTP_CONTENT_TYPE=x/y', 'REMOTE_ADDR=::1', 'REMOTE_PORT=99999',
  ].join('\0'),
  'chunked without a length': ['REQUEST_METHOD=POST', 'HTTP_TRANSFER_ENCODING=chunked', 'HTTPS=1', 'SERVER_PROTOCOL=http/2.0'].join('\0'),
  'repeats, odd names, no = sign, empty entries': [
    'HTTP_X_MULTI=a', 'HTTP_COOKIE=c1=1', 'HTTP_X_MULTI=b', 'HTTP_COOKIE=c2=2', 'HTTP_HOST=one', 'HTTP_HOST=two', 'HTTP_=nothing',
    'REQUEST_URI=/first', 'REQUEST_URI=/second', 'NOVALUE', '', 'HTTP_X__Y=z', 'EQ=a=b=c', 'HTTP_ACCEPT_LANGUAGE=en',
  ].join('\0'),
  'no REQUEST_URI': ['SCRIPT_NAME=/app', 'PATH_INFO=/a b/ü', 'QUERY_STRING=x=1'].join('\0'),
}

describe('envFromParams and requestInfoFromParams: the same as envFromPairs and requestInfoFromPairs', () => {
  for (const [name, params] of Object.entries(CASES)) {
    it(name, () => {
      const pairs = pairsOf(params)
      const env = envFromParams(params)
      const info = requestInfoFromParams(params)
      expect(env).toEqual(envFromPairs(pairs))
      expect(Object.keys(env)).toEqual(Object.keys(envFromPairs(pairs)))
      const expected = requestInfoFromPairs(pairs)
      expect(info).toEqual(expected)
      expect(info.rawHeaders).toEqual(expected.rawHeaders)
      expect(Object.keys(info.headers)).toEqual(Object.keys(expected.headers))
    })
  }
  it('header names are the same on a second request (cached)', () => {
    expect(requestInfoFromParams(NGINX).rawHeaders).toEqual(requestInfoFromParams(NGINX).rawHeaders)
  })
})

/** httpHeadToCgi as it was: split into lines, filter, join. */
function reference(head: string): string {
  const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade'])
  const lines = head.split('\r\n')
  const status = /^HTTP\/\d\.\d (\d{3})(?: (.*))?$/.exec(lines[0] ?? '')
  if (!status) throw new Error('not an HTTP response head')
  const out = [`Status: ${status[1]}${status[2] ? ` ${status[2]}` : ''}`]
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!
    if (line === '') continue
    const colon = line.indexOf(':')
    if (colon > 0 && HOP.has(line.slice(0, colon).trim().toLowerCase())) continue
    out.push(line)
  }
  return `${out.join('\r\n')}\r\n\r\n`
}

describe('httpHeadToCgi (run-copying version) = the line-splitting one', () => {
  const heads = [
    'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\nConnection: close\r\nContent-Length: 12\r\n\r\n',
    'HTTP/1.1 404 Not Found\r\nConnection: close\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n',
    'HTTP/1.1 299\r\n\r\n',
    'HTTP/1.1 200 OK',
    'HTTP/1.1 200 OK\r\n',
    'HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nX-B: 2\r\nupgrade: h2c\r\nPROXY-CONNECTION: x\r\n Connection : y\r\n\tkeep-alive:z\r\nkept-alive: k\r\nTrailer: X\r\n:colon-first\r\nno colon\r\n\r\n',
    'HTTP/1.0 500 Internal Server Error\r\nContent-Type: text/html; charset=ü\r\nTransfer-Encoding: chunked\r\n\r\n',
  ]
  for (const head of heads) {
    it(JSON.stringify(head.slice(0, 50)), () => {
      expect(httpHeadToCgi(head)).toBe(reference(head))
    })
  }
  it('still rejects what is not an HTTP head', () => {
    expect(() => httpHeadToCgi('garbage\r\n\r\n')).toThrow(/not an HTTP response head/)
    expect(() => httpHeadToCgi('HTTP/1.1 2000 X\r\n\r\n')).toThrow(/not an HTTP response head/)
  })
})

describe('httpHeadToCgi with odd header names (trimmed as before)', () => {
  const names = ['Connection', 'connection ', ' connection', '\tConnection', '\vConnection', '\u00a0Connection', 'Connection\u00a0', 'Connectio', 'Connections', 'X-Connection', 'Upgrade', 'upgradE', 'Transfer-Encoding', 'Proxy-Connection', 'Keep-Alive', 'keep-alive\t', 'Content-Length', 'Trailer']
  for (const name of names) {
    it(JSON.stringify(name), () => {
      const head = `HTTP/1.1 200 OK\r\n${name}: v\r\nX-After: 1\r\n\r\n`
      expect(httpHeadToCgi(head)).toBe(reference(head))
    })
  }
})
