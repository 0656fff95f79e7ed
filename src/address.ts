// Parsing of listen addresses and allow-lists: pure functions, unit-tested
// without the addon.
import net from 'node:net'

export type ListenTarget =
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'unix'; path: string; mode?: number; owner?: string | number; group?: string | number }
  | { kind: 'fd'; fd: number }

/** What `initSocket` and `listen` accept as an address. */
export type ListenAddress =
  | number
  | string
  | { port: number; host?: string }
  | { path: string; mode?: number; owner?: string | number; group?: string | number }
  | { fd: number }

function invalid(message: string): TypeError {
  const err = new TypeError(message) as TypeError & { code: string }
  err.code = 'ERR_INVALID_ARG_VALUE'
  return err
}

function checkPort(port: number, what: unknown): number {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    const err = new RangeError(`port must be an integer from 0 to 65535, got ${JSON.stringify(what)}`) as RangeError & { code: string }
    err.code = 'ERR_SOCKET_BAD_PORT'
    throw err
  }
  return port
}

function checkHost(host: string): string {
  if (host === '' || host === '*') return ''
  if (host === 'localhost') return '127.0.0.1'
  if (net.isIP(host) === 0) throw invalid(`host must be an IP address (or "localhost"), got ${JSON.stringify(host)}`)
  return host
}

/** Unix socket owner or group: a name or a numeric id. */
function checkOwner(what: string, value: unknown): string | number | undefined {
  if (value === undefined || value === null) return undefined
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0) return value
  if (typeof value === 'string' && /^\d+$/.test(value)) return Number(value)
  if (typeof value === 'string' && value !== '' && !/[\0:]/.test(value)) return value
  throw invalid(`socket ${what} must be a user or group name or a numeric id, got ${JSON.stringify(value)}`)
}

/** Unix socket mode: a number (0o660) or an octal string ("660", "0660"). */
export function parseMode(mode: unknown): number | undefined {
  if (mode === undefined || mode === null) return undefined
  const value = typeof mode === 'string' && /^0?[0-7]{3,4}$/.test(mode) ? parseInt(mode, 8) : mode
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0o7777) {
    throw invalid(`socket mode must be a permission number such as 0o660 or "660", got ${JSON.stringify(mode)}`)
  }
  return value
}

/**
 * `9000`, `":9000"`, `"9000"`, `"127.0.0.1:9000"`, `"[::1]:9000"`,
 * `"localhost:9000"`, a unix socket path (`"/run/app.sock"`, `"unix:/run/app.sock"`),
 * or an object `{ port, host }`, `{ path, mode }`, `{ fd }`.
 */
export function parseListenAddress(address: ListenAddress, mode?: number | string): ListenTarget {
  if (typeof address === 'number') return { kind: 'tcp', host: '', port: checkPort(address, address) }
  if (typeof address === 'string') {
    if (address === '') throw invalid('address must not be empty')
    if (/^\d+$/.test(address)) return { kind: 'tcp', host: '', port: checkPort(Number(address), address) }
    const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(address)
    if (v6) {
      if (net.isIPv6(v6[1]!) === false) throw invalid(`not an IPv6 address: ${JSON.stringify(address)}`)
      return { kind: 'tcp', host: v6[1]!, port: checkPort(Number(v6[2]), address) }
    }
    const hostPort = /^([^/:]*):(\d+)$/.exec(address)
    if (hostPort) return { kind: 'tcp', host: checkHost(hostPort[1]!), port: checkPort(Number(hostPort[2]), address) }
    const path = address.startsWith('unix:') ? address.slice(5) : address
    if (path === '' || path.includes('\0')) throw invalid(`not a usable unix socket path: ${JSON.stringify(address)}`)
    return { kind: 'unix', path, mode: parseMode(mode) }
  }
  if (address !== null && typeof address === 'object') {
    if ('fd' in address) {
      if (!Number.isInteger(address.fd) || address.fd < 0) throw invalid(`fd must be a non-negative integer, got ${JSON.stringify(address.fd)}`)
      return { kind: 'fd', fd: address.fd }
    }
    if ('path' in address) {
      if (typeof address.path !== 'string') throw invalid('path must be a string')
      const target = parseListenAddress(address.path, address.mode ?? mode)
      if (target.kind !== 'unix') throw invalid(`not a unix socket path: ${JSON.stringify(address.path)}`)
      const owner = checkOwner('owner', address.owner)
      const group = checkOwner('group', address.group)
      if (owner !== undefined) target.owner = owner
      if (group !== undefined) target.group = group
      return target
    }
    if ('port' in address) {
      return { kind: 'tcp', host: checkHost(address.host ?? ''), port: checkPort(Number(address.port), address.port) }
    }
  }
  throw invalid(`unsupported address ${JSON.stringify(address)}`)
}

/** IPv4 or IPv6 literal -> 16 bytes (IPv4 as ::ffff:a.b.c.d), or undefined. */
export function addressBytes(ip: string): Buffer | undefined {
  const kind = net.isIP(ip)
  if (kind === 4) {
    const out = Buffer.alloc(16)
    out[10] = 0xff
    out[11] = 0xff
    ip.split('.').forEach((part, i) => { out[12 + i] = Number(part) })
    return out
  }
  if (kind !== 6) return undefined
  let text = ip.replace(/%.*$/, '')
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text)
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number]
    text = text.slice(0, v4.index) + ((a << 8) | b).toString(16) + ':' + ((c << 8) | d).toString(16)
  }
  const halves = text.split('::')
  const parse = (s: string) => (s === '' ? [] : s.split(':').map((h) => parseInt(h, 16)))
  const left = parse(halves[0]!)
  const right = halves.length === 2 ? parse(halves[1]!) : []
  const groups = halves.length === 2 ? [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right] : left
  if (groups.length !== 8) return undefined
  const out = Buffer.alloc(16)
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2))
  return out
}

/**
 * FCGI_WEB_SERVER_ADDRS syntax: addresses separated by commas (libfcgi's),
 * here IPv6 as well. An empty list allows every peer.
 */
export function parseAllowedClients(list: string | readonly string[] | undefined): Buffer[] {
  if (list === undefined) return []
  const items = typeof list === 'string' ? list.split(/[,\s]+/) : list
  const out: Buffer[] = []
  for (const raw of items) {
    const item = raw.trim()
    if (item === '') continue
    const bytes = addressBytes(item)
    if (!bytes) throw invalid(`allowed client must be an IPv4 or IPv6 address, got ${JSON.stringify(item)}`)
    out.push(bytes)
  }
  return out
}
