// Pure tests of src/address.ts: listen-address parsing, socket modes, IP
// literals to 16-byte form, and FCGI_WEB_SERVER_ADDRS-style allow-lists.
import { describe, expect, it } from 'vitest'
import { addressBytes, parseAllowedClients, parseListenAddress, parseMode, type ListenAddress } from '../../src/address.js'

/** Runs fn, expects it to throw, returns the error (for checks on class and code). */
function thrown(fn: () => unknown): Error & { code?: string } {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(Error)
    return err as Error & { code?: string }
  }
  throw new Error('expected the call to throw, it returned normally')
}

function hex(buf: Buffer | undefined): string | undefined {
  return buf?.toString('hex')
}

describe('parseListenAddress: accepted forms', () => {
  const cases: Array<[ListenAddress, ReturnType<typeof parseListenAddress>]> = [
    [9000, { kind: 'tcp', host: '', port: 9000 }],
    [0, { kind: 'tcp', host: '', port: 0 }],
    [65535, { kind: 'tcp', host: '', port: 65535 }],
    [':9000', { kind: 'tcp', host: '', port: 9000 }],
    ['9000', { kind: 'tcp', host: '', port: 9000 }],
    ['127.0.0.1:9000', { kind: 'tcp', host: '127.0.0.1', port: 9000 }],
    ['0.0.0.0:80', { kind: 'tcp', host: '0.0.0.0', port: 80 }],
    ['*:9000', { kind: 'tcp', host: '', port: 9000 }],
    ['[::1]:9000', { kind: 'tcp', host: '::1', port: 9000 }],
    ['[::]:0', { kind: 'tcp', host: '::', port: 0 }],
    ['[2001:db8::5]:1234', { kind: 'tcp', host: '2001:db8::5', port: 1234 }],
    ['localhost:9000', { kind: 'tcp', host: '127.0.0.1', port: 9000 }],
    ['unix:/x', { kind: 'unix', path: '/x', mode: undefined }],
    ['/run/app.sock', { kind: 'unix', path: '/run/app.sock', mode: undefined }],
    ['relative/app.sock', { kind: 'unix', path: 'relative/app.sock', mode: undefined }],
    [{ port: 9000 }, { kind: 'tcp', host: '', port: 9000 }],
    [{ port: 9000, host: '127.0.0.1' }, { kind: 'tcp', host: '127.0.0.1', port: 9000 }],
    [{ port: 0, host: '::1' }, { kind: 'tcp', host: '::1', port: 0 }],
    [{ port: 8080, host: 'localhost' }, { kind: 'tcp', host: '127.0.0.1', port: 8080 }],
    [{ path: '/run/app.sock' }, { kind: 'unix', path: '/run/app.sock', mode: undefined }],
    [{ path: '/run/app.sock', mode: 0o660 }, { kind: 'unix', path: '/run/app.sock', mode: 0o660 }],
    [{ path: 'unix:/run/app.sock', mode: 0o600 }, { kind: 'unix', path: '/run/app.sock', mode: 0o600 }],
    [{ fd: 0 }, { kind: 'fd', fd: 0 }],
    [{ fd: 7 }, { kind: 'fd', fd: 7 }],
  ]
  for (const [input, expected] of cases) {
    it(`parses ${JSON.stringify(input)}`, () => {
      expect(parseListenAddress(input)).toEqual(expected)
    })
  }

  it('applies the mode argument to unix paths (number or octal string)', () => {
    expect(parseListenAddress('/run/a.sock', 0o660)).toEqual({ kind: 'unix', path: '/run/a.sock', mode: 0o660 })
    expect(parseListenAddress('unix:/run/a.sock', '600')).toEqual({ kind: 'unix', path: '/run/a.sock', mode: 0o600 })
    expect(parseListenAddress({ path: '/run/a.sock' }, '0640')).toEqual({ kind: 'unix', path: '/run/a.sock', mode: 0o640 })
  })

  it("prefers the object's own mode over the mode argument", () => {
    expect(parseListenAddress({ path: '/run/a.sock', mode: 0o600 }, 0o666)).toEqual({ kind: 'unix', path: '/run/a.sock', mode: 0o600 })
  })

  it('ignores the mode argument for TCP addresses', () => {
    expect(parseListenAddress('127.0.0.1:9000', 0o660)).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 9000 })
  })

  it('rejects a bad mode for a unix path', () => {
    const err = thrown(() => parseListenAddress('/run/a.sock', 'rw-rw----'))
    expect(err).toBeInstanceOf(TypeError)
    expect(err.code).toBe('ERR_INVALID_ARG_VALUE')
  })
})

describe('parseListenAddress: errors', () => {
  const badPorts: ListenAddress[] = [-1, 65536, 1.5, NaN, Infinity, '127.0.0.1:99999', ':65536', '[::1]:70000', '70000', { port: -1 }, { port: 65536, host: '127.0.0.1' }, { port: 1.5 }]
  for (const input of badPorts) {
    it(`rejects port in ${String(typeof input === 'object' ? JSON.stringify(input) : input)} with RangeError ERR_SOCKET_BAD_PORT`, () => {
      const err = thrown(() => parseListenAddress(input))
      expect(err).toBeInstanceOf(RangeError)
      expect(err.code).toBe('ERR_SOCKET_BAD_PORT')
    })
  }

  it('rejects "abc:99999" (neither host nor port is usable) with a coded error', () => {
    const err = thrown(() => parseListenAddress('abc:99999'))
    // The host is checked first: a TypeError; a RangeError for the port would be as good.
    expect(['ERR_INVALID_ARG_VALUE', 'ERR_SOCKET_BAD_PORT']).toContain(err.code)
    expect(err instanceof TypeError || err instanceof RangeError).toBe(true)
  })

  const badHosts: ListenAddress[] = ['example.com:80', 'abc:9000', 'localhost.localdomain:80', 'my-host:1', { port: 80, host: 'example.com' }, { port: 80, host: 'ip6-localhost' }, '[zz::1]:80', '[127.0.0.1]:80', '256.1.1.1:80']
  for (const input of badHosts) {
    it(`rejects host in ${JSON.stringify(input)} with TypeError ERR_INVALID_ARG_VALUE`, () => {
      const err = thrown(() => parseListenAddress(input))
      expect(err).toBeInstanceOf(TypeError)
      expect(err.code).toBe('ERR_INVALID_ARG_VALUE')
    })
  }

  const badOthers: Array<[string, unknown]> = [
    ['the empty string', ''],
    ['"unix:" with no path', 'unix:'],
    ['a path with NUL', '/tmp/a\0b.sock'],
    ['"unix:" path with NUL', 'unix:/tmp/\0'],
    ['{path} with NUL', { path: '/tmp/x\0y' }],
    ['{path: ""}', { path: '' }],
    ['{path} that is a TCP address', { path: '127.0.0.1:9000' }],
    ['{path} that is not a string', { path: 42 }],
    ['{fd: -1}', { fd: -1 }],
    ['{fd: 1.5}', { fd: 1.5 }],
    ['null', null],
    ['an empty object', {}],
    ['a boolean', true],
  ]
  for (const [what, input] of badOthers) {
    it(`rejects ${what} with TypeError ERR_INVALID_ARG_VALUE`, () => {
      const err = thrown(() => parseListenAddress(input as ListenAddress))
      expect(err).toBeInstanceOf(TypeError)
      expect(err.code).toBe('ERR_INVALID_ARG_VALUE')
    })
  }
})

describe('parseMode', () => {
  it('accepts numbers and octal strings', () => {
    expect(parseMode('660')).toBe(0o660)
    expect(parseMode('0660')).toBe(0o660)
    expect(parseMode('600')).toBe(0o600)
    expect(parseMode('0777')).toBe(0o777)
    expect(parseMode('1777')).toBe(0o1777)
    expect(parseMode('000')).toBe(0)
    expect(parseMode(0o660)).toBe(0o660)
    expect(parseMode(0)).toBe(0)
    expect(parseMode(0o7777)).toBe(0o7777)
  })

  it('returns undefined for no mode', () => {
    expect(parseMode(undefined)).toBeUndefined()
    expect(parseMode(null)).toBeUndefined()
  })

  const bad: unknown[] = ['abc', '', '66', '999', '0o660', '0x1b0', '6600 ', ' 660', '-660', '000660', '12345', -1, 1.5, 0o10000, NaN, true, {}, [0o660]]
  for (const value of bad) {
    it(`rejects ${JSON.stringify(value) ?? String(value)} with TypeError ERR_INVALID_ARG_VALUE`, () => {
      const err = thrown(() => parseMode(value))
      expect(err).toBeInstanceOf(TypeError)
      expect(err.code).toBe('ERR_INVALID_ARG_VALUE')
    })
  }
})

describe('addressBytes', () => {
  it('maps IPv4 to ::ffff:a.b.c.d', () => {
    expect(hex(addressBytes('127.0.0.1'))).toBe('00000000000000000000ffff7f000001')
    expect(hex(addressBytes('10.1.2.3'))).toBe('00000000000000000000ffff0a010203')
    expect(hex(addressBytes('0.0.0.0'))).toBe('00000000000000000000ffff00000000')
    expect(hex(addressBytes('255.255.255.255'))).toBe('00000000000000000000ffffffffffff')
  })

  it('parses full IPv6', () => {
    expect(hex(addressBytes('2001:0db8:0000:0000:0000:ff00:0042:8329'))).toBe('20010db8000000000000ff0000428329')
    expect(hex(addressBytes('fe80:0:0:0:202:b3ff:fe1e:8329'))).toBe('fe800000000000000202b3fffe1e8329')
    expect(hex(addressBytes('FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF'))).toBe('ff'.repeat(16))
  })

  it('parses compressed IPv6', () => {
    expect(hex(addressBytes('2001:db8::ff00:42:8329'))).toBe('20010db8000000000000ff0000428329')
    expect(hex(addressBytes('2001:db8::'))).toBe('20010db8000000000000000000000000')
    expect(hex(addressBytes('::2001:db8'))).toBe('00000000000000000000000020010db8')
    expect(hex(addressBytes('1:2:3:4:5:6:7::'))).toBe('00010002000300040005000600070000')
    expect(hex(addressBytes('::2:3:4:5:6:7:8'))).toBe('00000002000300040005000600070008')
  })

  it('parses "::" and "::1"', () => {
    expect(hex(addressBytes('::'))).toBe('00'.repeat(16))
    expect(hex(addressBytes('::1'))).toBe('00'.repeat(15) + '01')
  })

  it('parses IPv6 with an embedded IPv4 address', () => {
    expect(hex(addressBytes('::ffff:127.0.0.1'))).toBe(hex(addressBytes('127.0.0.1')))
    expect(hex(addressBytes('::ffff:192.0.2.128'))).toBe('00000000000000000000ffffc0000280')
    expect(hex(addressBytes('64:ff9b::192.0.2.33'))).toBe('0064ff9b0000000000000000c0000221')
    expect(hex(addressBytes('0:0:0:0:0:ffff:10.1.2.3'))).toBe(hex(addressBytes('10.1.2.3')))
    expect(hex(addressBytes('::1.2.3.4'))).toBe('00000000000000000000000001020304')
  })

  it('drops a zone index', () => {
    expect(hex(addressBytes('fe80::1%eth0'))).toBe('fe800000000000000000000000000001')
  })

  it('returns undefined for strings that are not IP literals', () => {
    for (const s of ['', 'localhost', 'abc', '1.2.3', '1.2.3.256', '1.2.3.4.5', ':::', '1::2::3', '::g', '12345::', '1:2:3:4:5:6:7:8:9', '[::1]', ' 127.0.0.1', '127.0.0.1/8']) {
      expect(addressBytes(s), JSON.stringify(s)).toBeUndefined()
    }
  })

  it('always yields 16 bytes', () => {
    for (const s of ['1.2.3.4', '::', '::1', '2001:db8::1', '::ffff:1.2.3.4']) {
      expect(addressBytes(s)?.length, s).toBe(16)
    }
  })
})

describe('parseAllowedClients', () => {
  const v4 = (s: string) => hex(addressBytes(s))

  it('splits on commas', () => {
    expect(parseAllowedClients('127.0.0.1,10.0.0.1').map(hex)).toEqual([v4('127.0.0.1'), v4('10.0.0.1')])
  })

  it('splits on commas with spaces, and on spaces alone', () => {
    expect(parseAllowedClients('127.0.0.1, ::1').map(hex)).toEqual([v4('127.0.0.1'), v4('::1')])
    expect(parseAllowedClients('  127.0.0.1   10.0.0.2 ').map(hex)).toEqual([v4('127.0.0.1'), v4('10.0.0.2')])
    expect(parseAllowedClients('127.0.0.1 ,\t::1,,10.0.0.3\n').map(hex)).toEqual([v4('127.0.0.1'), v4('::1'), v4('10.0.0.3')])
  })

  it('accepts an array (entries trimmed, empty ones skipped)', () => {
    expect(parseAllowedClients(['127.0.0.1', ' ::1 ', '']).map(hex)).toEqual([v4('127.0.0.1'), v4('::1')])
  })

  it('returns an empty list (anyone allowed) for nothing', () => {
    expect(parseAllowedClients(undefined)).toEqual([])
    expect(parseAllowedClients('')).toEqual([])
    expect(parseAllowedClients(' , ')).toEqual([])
    expect(parseAllowedClients([])).toEqual([])
  })

  it('rejects an invalid entry with TypeError ERR_INVALID_ARG_VALUE', () => {
    for (const bad of ['127.0.0.1,nope', 'localhost', '10.0.0.0/8', '1.2.3.999', ['::1', 'example.com'], ['127.0.0.1;10.0.0.1']] as Array<string | string[]>) {
      const err = thrown(() => parseAllowedClients(bad))
      expect(err, JSON.stringify(bad)).toBeInstanceOf(TypeError)
      expect(err.code, JSON.stringify(bad)).toBe('ERR_INVALID_ARG_VALUE')
    }
  })
})
