#!/usr/bin/env node
// A FastCGI protocol fuzzer: seeded, reproducible, bounded in time. It runs
// the server under test in a child process (scripts/fuzz-target.mjs: the
// low level accept loop with an echo app, and createServer), so that a crash
// is seen as the child's exit, and drives it over many unix socket
// connections at once with record streams made by a seeded PRNG:
//
// - valid requests ("strict"): random params (1- and 4-byte lengths, split
//   over records of random sizes with random padding), bodies from 0 to
//   400 KiB in records of random sizes, RESPONDER/AUTHORIZER/FILTER, kept
//   connections carrying several requests, management records between them;
//   each must be answered exactly (stdout, END_REQUEST status);
// - mutated requests ("loose", the last one on their connection): wrong
//   versions, types, lengths, paddings, request ids; params declaring huge or
//   inconsistent lengths; FCGI_GET_VALUES with repeated, unknown or
//   oversized names; stdin after its end; a second request interleaved;
//   management and unknown records mid-request; FCGI_ABORT_REQUEST at any
//   record; flipped bytes; the stream cut at any byte (headers too); then the
//   connection is closed at once, half-closed, or left until it goes quiet.
//
// The echo app answers every request with data derived from that request
// alone (`token=<FUZZ_TOKEN>\nid=<id>\nstdin=<len>:<sha1>`, see
// fuzz-target.mjs), and every token is unique, so a response carrying
// another request's data is seen on any connection: every token found in a
// response must be one sent on that connection, and every response record's
// request id one sent on it.
//
// After each target's run: the process is alive; it still answers valid
// requests exactly (a fresh connection with a 100 KiB body, and two requests
// on a kept connection); its descriptor count (/proc/PID/fd) is back to its
// idle value and so are its threads (/proc/PID/task): the same threads but
// native workers, and every native worker idle (workers started past the
// idle value leave after 30 s idle; --settle 35 waits for that); no handler
// is still running. Any failure prints the connection index to replay
// (--replay N, same --seed) and exits with status 1.
//
// usage: node scripts/fuzz.mjs [--seed S] [--seconds 10] [--connections 32]
//          [--records N] [--target both|loop|http] [--parallel 32]
//          [--settle 10] [--replay N [--dump]] [--json] [--verbose]
//   --seconds: fuzzing time in all (split between the targets)
//   --connections: client connections open at once
//   --records: stop after this many records sent (0: no limit, time only)
//   --parallel: the apps' requests in parallel (Request objects / maxConns)
//   --settle: seconds allowed for the counts to get back to idle
//   --replay N: send only connection N of the seed (to reproduce a failure);
//     --dump prints its records
// Needs dist/ (npx tsup).
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const HERE = path.dirname(fileURLToPath(import.meta.url))

// ------------------------------------------------------------ the PRNG

// xmur3 string hash -> sfc32: small, fast and the same on every platform.
function seedWords(str) {
  let h = 1779033703 ^ str.length
  for (let i = 0; i < str.length; i++) {
    h = Math.imul(h ^ str.charCodeAt(i), 3432918353)
    h = (h << 13) | (h >>> 19)
  }
  const next = () => {
    h = Math.imul(h ^ (h >>> 16), 2246822507)
    h = Math.imul(h ^ (h >>> 13), 3266489909)
    return (h ^= h >>> 16) >>> 0
  }
  return [next(), next(), next(), next()]
}

class Rng {
  constructor(...parts) {
    ;[this.a, this.b, this.c, this.d] = seedWords(parts.join('/'))
    for (let i = 0; i < 12; i++) this.u32()
  }
  u32() {
    let { a, b, c, d } = this
    const t = (((a + b) | 0) + d) | 0
    d = (d + 1) | 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) | 0
    c = (c << 21) | (c >>> 11)
    c = (c + t) | 0
    Object.assign(this, { a, b, c, d })
    return t >>> 0
  }
  /** 0 <= x < n */
  int(n) {
    return Math.floor((this.u32() / 4294967296) * n)
  }
  range(lo, hi) {
    return lo + this.int(hi - lo + 1)
  }
  chance(p) {
    return this.u32() / 4294967296 < p
  }
  pick(arr) {
    return arr[this.int(arr.length)]
  }
  bytes(n) {
    const b = Buffer.allocUnsafe(n)
    let i = 0
    for (; i + 4 <= n; i += 4) b.writeUInt32LE(this.u32(), i)
    for (; i < n; i++) b[i] = this.u32() & 0xff
    return b
  }
  hex(n) {
    let s = ''
    while (s.length < n) s += this.u32().toString(16).padStart(8, '0')
    return s.slice(0, n)
  }
}

// ------------------------------------------------------------ records

// The server's default limits on one request's params (src/socket.ts).
const PARAMS_MAX_BYTES = 1 << 20
const T = { BEGIN: 1, ABORT: 2, END: 3, PARAMS: 4, STDIN: 5, STDOUT: 6, STDERR: 7, DATA: 8, GET_VALUES: 9, GET_VALUES_RESULT: 10, UNKNOWN_TYPE: 11 }
const EMPTY = Buffer.alloc(0)

/** A record to send: fields may be set to anything (version, declared length, ...). */
function rec(type, id, content = EMPTY, padding = 0) {
  return { version: 1, type, id, content, padding, length: undefined, reserved: 0 }
}

function serialize(records) {
  const parts = []
  for (const r of records) {
    const h = Buffer.alloc(8)
    h[0] = r.version & 0xff
    h[1] = r.type & 0xff
    h.writeUInt16BE(r.id & 0xffff, 2)
    h.writeUInt16BE((r.length ?? r.content.length) & 0xffff, 4)
    h[6] = r.padding & 0xff
    h[7] = r.reserved & 0xff
    parts.push(h, r.content)
    if (r.padding > 0) parts.push(Buffer.alloc(r.padding))
  }
  return Buffer.concat(parts)
}

function nvLength(n, long) {
  if (n < 128 && !long) return Buffer.from([n])
  const b = Buffer.alloc(4)
  b.writeUInt32BE((n | 0x80000000) >>> 0)
  return b
}

function nv(name, value, r) {
  const n = Buffer.from(name, 'latin1')
  const v = Buffer.isBuffer(value) ? value : Buffer.from(value, 'latin1')
  const long = r !== undefined && r.chance(0.05)
  return Buffer.concat([nvLength(n.length, long), nvLength(v.length, long), n, v])
}

function beginBody(role, keep) {
  const b = Buffer.alloc(8)
  b.writeUInt16BE(role)
  b[2] = keep ? 1 : 0
  return b
}

/** A stream's records: content split at random sizes, random padding, then the empty one. */
function streamRecords(r, type, id, data) {
  const out = []
  let at = 0
  while (at < data.length) {
    const max = r.pick([1, 7, 64, 512, 4096, 8192, 65535, 65535])
    const size = Math.min(data.length - at, r.range(1, max))
    out.push(rec(type, id, data.subarray(at, at + size), padFor(r, size)))
    at += size
  }
  out.push(rec(type, id, EMPTY, padFor(r, 0)))
  return out
}

function padFor(r, size) {
  const x = r.int(10)
  if (x < 5) return (8 - (size % 8)) % 8
  if (x < 8) return 0
  return r.int(256)
}

const NAME_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789'
function paramName(r) {
  let s = ''
  for (let i = r.range(1, r.chance(0.1) ? 300 : 24); i > 0; i--) s += NAME_CHARS[r.int(NAME_CHARS.length)]
  return s
}
function paramValue(r) {
  const x = r.int(20)
  const len = x < 14 ? r.int(60) : x < 19 ? r.range(120, 3000) : r.range(10000, 70000)
  // latin1 text, no NUL (a NUL would end the value in the CGI environment)
  const b = r.bytes(len)
  for (let i = 0; i < len; i++) b[i] = 32 + (b[i] % 95)
  return b
}

// ------------------------------------------------------------ requests

// Tokens carry a check (6 hex digits of their SHA-1): a mutation that flips
// a byte of a token in the params makes a string that fails the check, so
// only tokens that were really sent somewhere count when they show up.
const TOKEN_RE = /t\d+x\d+x[0-9a-f]{8}k[0-9a-f]{6}/g
function tokenCheck(base) {
  return createHash('sha1').update(base).digest('hex').slice(0, 6)
}
function makeToken(base) {
  return `${base}k${tokenCheck(base)}`
}
function tokenValid(token) {
  const k = token.lastIndexOf('k')
  return tokenCheck(token.slice(0, k)) === token.slice(k + 1)
}

/**
 * A valid request: its records and what its answer must be.
 * target: 'loop' or 'http' (the http layer serves RESPONDER only here).
 */
function validRequest(r, ctx, target, force = {}) {
  const id = r.range(1, 65535)
  const token = makeToken(`t${ctx.index}x${ctx.seq++}x${r.hex(8)}`)
  ctx.tokens.add(token)
  ctx.ids.add(id)
  const keep = force.keep ?? r.chance(0.6)
  const role = force.role ?? (target === 'http' ? 1 : r.pick([1, 1, 1, 1, 1, 1, 2, 3]))
  const x = r.int(100)
  const stdinLen = force.stdinLen ?? (x < 55 ? 0 : x < 85 ? r.range(1, 2000) : x < 97 ? r.range(2001, 70000) : r.range(70001, 400000))
  const stdin = r.bytes(stdinLen)
  const data = role === 3 ? r.bytes(r.chance(0.5) ? 0 : r.range(1, 20000)) : undefined
  const big = r.chance(0.1) ? r.range(1, 300000) : 0
  const params = [
    ['GATEWAY_INTERFACE', 'CGI/1.1'], ['SERVER_PROTOCOL', 'HTTP/1.1'],
    ['REQUEST_METHOD', stdinLen > 0 ? 'POST' : 'GET'], ['REQUEST_URI', `/fuzz/${ctx.index}?q=${r.hex(6)}`],
    ['SCRIPT_NAME', `/fuzz/${ctx.index}`], ['QUERY_STRING', `q=${r.hex(6)}`],
    ['SERVER_NAME', 'localhost'], ['SERVER_PORT', '80'], ['REMOTE_ADDR', '127.0.0.1'], ['HTTP_HOST', 'localhost'],
    ['CONTENT_LENGTH', String(stdinLen)],
    ['FUZZ_TOKEN', token], ['HTTP_X_FUZZ_TOKEN', token], ['HTTP_X_FUZZ_ID', String(id)],
  ]
  if (stdinLen > 0) params.push(['CONTENT_TYPE', 'application/octet-stream'])
  if (big > 0) params.push(['FUZZ_BIG', String(big)], ['HTTP_X_FUZZ_BIG', String(big)])
  if (data) params.push(['FCGI_DATA_LENGTH', String(data.length)])
  // Extra params, within the server's default limits (paramsMaxBytes 1 MiB
  // of names and values, paramsMaxCount 1000): a request past them is
  // dropped by design, so it is not a valid request here.
  let paramBytes = params.reduce((n, [k, v]) => n + k.length + v.length, 0)
  for (let i = r.int(r.chance(0.1) ? 200 : 12); i > 0; i--) {
    const name = `X_${paramName(r)}`
    const value = paramValue(r)
    if (paramBytes + name.length + value.length > PARAMS_MAX_BYTES) continue
    paramBytes += name.length + value.length
    params.push([name, value])
  }
  if (process.env.FUZZ_DEBUG_PARAMS) console.error(`params: ${params.length} pairs, ${paramBytes} bytes`)
  // Shuffle the extra params in among the others (order must not matter).
  for (let i = params.length - 1; i > 0; i--) {
    const j = r.int(i + 1)
    ;[params[i], params[j]] = [params[j], params[i]]
  }
  const records = [rec(T.BEGIN, id, beginBody(role, keep), padFor(r, 8))]
  records.push(...streamRecords(r, T.PARAMS, id, Buffer.concat(params.map(([k, v]) => nv(k, v, r)))))
  records.push(...streamRecords(r, T.STDIN, id, stdin))
  if (data) records.push(...streamRecords(r, T.DATA, id, data))
  const stdinSum = `${stdinLen}:${createHash('sha1').update(stdin).digest('hex')}`
  const dataSum = data ? `${data.length}:${createHash('sha1').update(data).digest('hex')}` : undefined
  let body = `token=${token}\nid=${id}\nstdin=${stdinSum}\n`
  if (target === 'loop' && dataSum) body += `data=${dataSum}\n`
  if (big > 0) body += `${token};`.repeat(Math.ceil(big / (token.length + 1))).slice(0, big)
  return { id, token, keep, role, records, body }
}

/** FCGI_GET_VALUES with names repeated, unknown, or declaring lengths they do not have. */
function getValuesRecord(r, clean = false) {
  const names = ['FCGI_MAX_CONNS', 'FCGI_MAX_REQS', 'FCGI_MPXS_CONNS', 'FCGI_UNKNOWN', 'X']
  const parts = []
  for (let i = r.range(0, r.chance(0.2) ? 200 : 6); i > 0; i--) {
    if (!clean && r.chance(0.05)) {
      const b = Buffer.concat([nvLength(r.pick([0x7fffffff, 0x7ffffff0, 1 << 20, 300]), true), nvLength(r.int(4), false)])
      parts.push(b, Buffer.from('FCGI_MAX'))
    } else {
      parts.push(nv(r.chance(0.8) ? r.pick(names) : paramName(r), r.chance(0.9) ? '' : 'v'))
    }
  }
  let content = Buffer.concat(parts)
  if (content.length > 65535) content = content.subarray(0, 65535)
  return rec(T.GET_VALUES, clean || r.chance(0.9) ? 0 : r.range(1, 65535), content, padFor(r, content.length))
}

function managementRecord(r) {
  const x = r.int(4)
  if (x < 2) return getValuesRecord(r)
  if (x === 2) {
    // an unknown (or an application-to-server) type, request id 0
    const content = r.bytes(r.pick([0, 0, 1, 8, 100, 3000]))
    return rec(r.pick([T.UNKNOWN_TYPE, T.GET_VALUES_RESULT, T.END, 12, 13, 100, 255]), 0, content, padFor(r, content.length))
  }
  const content = r.bytes(r.int(64))
  return rec(r.int(256), r.int(65536), content, r.int(256))
}

/** Params content that lies about its lengths. */
function badParams(r) {
  const huge = () => r.pick([0x7fffffff, 0x7ffffff0, 0x40000000, 0x10000001, (1 << 20) + 1, 65536, 70000, 300])
  const x = r.int(3)
  if (x === 0) return Buffer.concat([nvLength(huge(), true), nvLength(r.int(10), false), Buffer.from('NAME')])
  if (x === 1) return Buffer.concat([nvLength(r.int(10), false), nvLength(huge(), true), Buffer.from('NAMEVALUE')])
  // a 4-byte length cut short, or a 1-byte length past the end
  return r.chance(0.5) ? Buffer.from([0x80, 0x00]) : Buffer.from([r.range(10, 127), 5, 65])
}

const MUTATIONS = {
  version(r, recs) { r.pick(recs).version = r.pick([0, 2, 3, 255]) },
  type(r, recs) { r.pick(recs).type = r.int(256) },
  length(r, recs) {
    const x = r.pick(recs)
    x.length = r.chance(0.5) ? Math.max(0, x.content.length + r.range(-8, 8)) : r.int(65536)
  },
  padding(r, recs) { r.pick(recs).padding = r.int(256) },
  reserved(r, recs) { r.pick(recs).reserved = r.range(1, 255) },
  requestId(r, recs) { r.pick(recs).id = r.chance(0.3) ? 0 : r.int(65536) },
  hugeParams(r, recs, req) {
    const at = firstIndex(recs, T.PARAMS)
    recs.splice(at < 0 ? 1 : at + r.int(2), 0, rec(T.PARAMS, req.id, badParams(r), r.int(8)))
  },
  stdinAfterEof(r, recs, req) {
    const data = r.bytes(r.range(1, 3000))
    recs.push(rec(T.STDIN, req.id, data, padFor(r, data.length)))
    if (r.chance(0.5)) recs.push(rec(T.STDIN, req.id))
  },
  interleave(r, recs, req, ctx) {
    const other = validRequest(r, ctx, 'loop')
    let at = r.range(1, recs.length)
    for (const x of other.records.slice(0, r.range(1, other.records.length))) {
      recs.splice(at, 0, x)
      at = Math.min(recs.length, at + 1 + r.int(3))
    }
    if (r.chance(0.3)) for (const x of recs) if (x.id === other.id) x.id = req.id
  },
  managementMidRequest(r, recs) {
    for (let i = r.range(1, 3); i > 0; i--) recs.splice(r.range(0, recs.length), 0, managementRecord(r))
  },
  abort(r, recs, req) {
    recs.splice(r.range(0, recs.length), 0, rec(T.ABORT, r.chance(0.85) ? req.id : r.int(65536), r.chance(0.9) ? EMPTY : r.bytes(8)))
  },
  duplicateBegin(r, recs, req) {
    recs.splice(r.range(1, recs.length), 0, rec(T.BEGIN, r.chance(0.5) ? req.id : r.range(1, 65535), beginBody(r.range(1, 3), r.chance(0.5))))
  },
  badBegin(r, recs) {
    const b = recs[0]
    const x = r.int(4)
    b.content = Buffer.from(b.content)
    if (x === 0) b.content = b.content.subarray(0, r.int(8))
    else if (x === 1 && b.content.length >= 2) b.content.writeUInt16BE(r.pick([0, 4, 7, 65535]))
    else if (x === 2 && b.content.length >= 3) b.content[2] = r.int(256)
    else b.id = 0
  },
  garbage(r, recs) {
    const content = r.bytes(r.int(2000))
    const g = rec(r.int(256), r.int(65536), content, r.int(256))
    g.version = r.chance(0.5) ? 1 : r.int(256)
    recs.splice(r.range(0, recs.length), 0, g)
  },
  dropRecord(r, recs) { recs.splice(r.int(recs.length), 1) },
}
// Byte level, after serialization.
const BYTE_MUTATIONS = {
  flip(r, buf) {
    for (let i = r.range(1, 8); i > 0 && buf.length > 0; i--) buf[r.int(buf.length)] = r.int(256)
    return buf
  },
  truncate(r, buf) { return buf.subarray(0, r.int(buf.length + 1)) },
  truncateHeader(r, buf) {
    // cut right inside a record header: within the first 8 bytes of some record
    const at = Math.max(0, Math.min(buf.length, r.int(buf.length)))
    return buf.subarray(0, at - (at % 8) + r.range(1, 7))
  },
}
const MUTATION_NAMES = [...Object.keys(MUTATIONS), ...Object.keys(BYTE_MUTATIONS)]

function firstIndex(recs, type) {
  return recs.findIndex((x) => x.type === type)
}

// ------------------------------------------------------------ a connection

/** Reads records off a socket, collecting stdout per request id. */
class Reader {
  constructor() {
    this.buf = EMPTY
    this.out = new Map() // id -> { stdout: Buffer[], stderr: number }
    this.management = 0
    this.waiters = new Set()
    this.closed = false
  }
  push(chunk, onRecord) {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk])
    while (this.buf.length >= 8) {
      const len = this.buf.readUInt16BE(4)
      const total = 8 + len + this.buf[6]
      if (this.buf.length < total) break
      const r = { version: this.buf[0], type: this.buf[1], id: this.buf.readUInt16BE(2), content: this.buf.subarray(8, 8 + len) }
      this.buf = this.buf.subarray(total)
      onRecord(r)
    }
    for (const w of this.waiters) w()
  }
}

/**
 * One connection of the fuzz: its records come from Rng(seed, target, index)
 * only. Returns { records, requests, strict, failures: [...] }.
 */
async function runConnection(seed, target, index, sockPath, stats) {
  const r = new Rng(seed, target, index)
  const ctx = { index, seq: 0, tokens: new Set(), ids: new Set([0]) }
  const failures = []
  const fail = (what) => failures.push(`${target} connection ${index}: ${what}`)
  const sock = net.connect(sockPath)
  sock.setNoDelay?.(true)
  const reader = new Reader()
  const expected = new Map() // id -> body string (strict requests)
  const answered = new Map() // id -> true once checked

  const onRecord = (x) => {
    if (!ctx.ids.has(x.id)) fail(`a ${x.type} record for request id ${x.id}, never sent on this connection`)
    if (x.version !== 1) fail(`a record with version ${x.version}`)
    if (x.type === T.STDOUT || x.type === T.STDERR) {
      let o = reader.out.get(x.id)
      if (!o) reader.out.set(x.id, (o = { stdout: [] }))
      if (x.type === T.STDOUT) o.stdout.push(Buffer.from(x.content))
    } else if (x.type === T.END) {
      const o = reader.out.get(x.id)
      reader.out.delete(x.id)
      const stdout = o ? Buffer.concat(o.stdout).toString('latin1') : ''
      for (const t of stdout.match(TOKEN_RE) ?? []) {
        if (!ctx.tokens.has(t) && tokenValid(t)) fail(`request ${x.id} was answered with ${t}, a token never sent on this connection (cross-request data)`)
      }
      const protocolStatus = x.content.length >= 5 ? x.content[4] : -1
      const want = expected.get(x.id)
      if (want !== undefined) {
        expected.delete(x.id)
        const sep = stdout.indexOf('\r\n\r\n')
        const body = sep < 0 ? undefined : stdout.slice(sep + 4)
        const status = /^Status: (\d+)/m.exec(stdout.slice(0, sep))?.[1]
        if (protocolStatus !== 0) fail(`valid request ${x.id} ended with protocolStatus ${protocolStatus}`)
        else if (body !== want.body) fail(`valid request ${x.id}: wrong answer ${JSON.stringify(stdout.slice(0, 200))}, wanted ${JSON.stringify(want.body.slice(0, 200))}`)
        else if (status !== undefined && status !== '200') fail(`valid request ${x.id}: status ${status}`)
        else stats.strictOk++
        answered.set(x.id, true)
      }
    } else if (x.type === T.GET_VALUES_RESULT || x.type === T.UNKNOWN_TYPE) {
      reader.management++
    } else {
      fail(`an unexpected record of type ${x.type}`)
    }
  }
  sock.on('data', (chunk) => reader.push(chunk, onRecord))
  const closed = new Promise((resolve) => sock.on('close', () => { reader.closed = true; for (const w of reader.waiters) w(); resolve() }))
  sock.on('error', () => {})
  const until = (pred, ms) => new Promise((resolve) => {
    if (pred()) return resolve(true)
    const done = (ok) => { clearTimeout(timer); reader.waiters.delete(check); resolve(ok) }
    const check = () => { if (pred()) done(true) }
    const timer = setTimeout(() => done(false), ms)
    reader.waiters.add(check)
  })
  const connected = await new Promise((resolve) => {
    const onError = (e) => { stats.connectErrors[e.code] = (stats.connectErrors[e.code] ?? 0) + 1; resolve(false) }
    sock.once('connect', () => { sock.off('error', onError); resolve(true) })
    sock.once('error', onError)
  })
  if (!connected) return { records: 0, failures }

  let records = 0
  const send = async (buf) => {
    // In 1 to 6 pieces, with pauses, so records and headers arrive split.
    const cuts = [0]
    for (let i = r.int(6); i > 0; i--) cuts.push(r.int(buf.length + 1))
    cuts.push(buf.length)
    cuts.sort((a, b) => a - b)
    for (let i = 0; i + 1 < cuts.length; i++) {
      if (reader.closed) return
      const piece = buf.subarray(cuts[i], cuts[i + 1])
      if (piece.length === 0) continue
      if (!sock.write(piece)) {
        await new Promise((res) => {
          const done = () => { clearTimeout(t); sock.off('drain', done); sock.off('close', done); res() }
          const t = setTimeout(done, 10000)
          sock.on('drain', done)
          sock.on('close', done)
        })
      }
      if (r.chance(0.3)) await new Promise((res) => setTimeout(res, r.int(3)))
    }
  }

  try {
    const count = r.chance(0.5) ? 1 : r.range(2, 5)
    for (let n = 0; n < count; n++) {
      const req = validRequest(r, ctx, target)
      const mutate = n === count - 1 && r.chance(0.55)
      const last = n === count - 1 || !req.keep
      let recs = req.records
      // Between requests on a kept connection: a well-formed management record.
      if (n > 0 && r.chance(0.3)) recs = [r.chance(0.7) ? getValuesRecord(r, true) : rec(T.UNKNOWN_TYPE + 1 + r.int(100), 0), ...recs]
      if (!mutate) {
        expected.set(req.id, req)
        stats.strict++
        const buf = serialize(recs)
        if (stats.dump) console.error(`connection ${index}: valid request ${req.id}, role ${req.role}, keep ${req.keep}, ${recs.length} records, ${buf.length} bytes`)
        records += recs.length
        const sentAt = Date.now()
        await send(buf)
        const ok = await until(() => answered.has(req.id) || reader.closed, 20000)
        const took = Date.now() - sentAt
        if (took > stats.slowestAnswer.ms) stats.slowestAnswer = { ms: took, connection: index, bytes: buf.length }
        if (!answered.has(req.id)) {
          fail(`valid request ${req.id} (${buf.length} bytes, role ${req.role}, keep ${req.keep}) was not answered${ok ? ' (connection closed)' : ' within 20 s'}`)
          break
        }
        if (last) {
          if (!req.keep) await until(() => reader.closed, 5000)
          break
        }
        continue
      }
      // The mutated request ends the connection: what follows is undefined.
      stats.loose++
      const applied = []
      for (let i = r.range(1, 3); i > 0; i--) {
        const name = r.pick(MUTATION_NAMES)
        applied.push(name)
        if (MUTATIONS[name]) MUTATIONS[name](r, recs, req, ctx)
      }
      for (const x of recs) ctx.ids.add(x.id & 0xffff)
      let buf = serialize(recs)
      for (const name of applied) if (BYTE_MUTATIONS[name]) buf = BYTE_MUTATIONS[name](r, buf)
      // Flipped bytes may have changed request ids: the ids sent are those
      // of the records as the server frames them.
      for (let at = 0; at + 8 <= buf.length; at += 8 + buf.readUInt16BE(at + 4) + buf[at + 6]) ctx.ids.add(buf.readUInt16BE(at + 2))
      if (stats.dump) {
        console.error(`connection ${index}: mutated request ${req.id} (${applied.join(', ')}), ${buf.length} of ${serialize(recs).length} bytes sent:`)
        for (const x of recs) console.error(`  v${x.version} type ${x.type} id ${x.id} content ${x.content.length}${x.length !== undefined ? ` (declared ${x.length})` : ''} padding ${x.padding}`)
      }
      for (const name of applied) stats.mutations[name] = (stats.mutations[name] ?? 0) + 1
      records += recs.length
      await send(buf)
      const how = r.int(10)
      if (how < 4) {
        stats.closes.destroy++
      } else if (how < 7) {
        stats.closes.end++
        sock.end()
        await until(() => reader.closed, 3000)
      } else {
        stats.closes.wait++
        // until it closes, or nothing arrives for 300 ms (1.5 s at most)
        let last = sock.bytesRead
        const end = Date.now() + 1500
        while (!reader.closed && Date.now() < end) {
          await until(() => reader.closed, 300)
          const now = sock.bytesRead
          if (now === last) break
          last = now
        }
      }
      break
    }
  } finally {
    sock.destroy()
    await Promise.race([closed, new Promise((res) => setTimeout(res, 1000))])
  }
  return { records, failures }
}

// ------------------------------------------------------------ the target

function countDir(dir) {
  try {
    return fs.readdirSync(dir).length
  } catch {
    return -1
  }
}

/** Threads and descriptors of a process, from /proc. */
function procCounts(pid) {
  const taskDir = `/proc/${pid}/task`
  let tasks = 0
  let workers = 0
  try {
    for (const t of fs.readdirSync(taskDir)) {
      tasks++
      try {
        if (fs.readFileSync(`${taskDir}/${t}/comm`, 'utf8').trim() === 'fcgi-worker') workers++
      } catch { /* exited meanwhile */ }
    }
  } catch {
    return { tasks: -1, workers: -1, fds: -1 }
  }
  return { tasks, workers, fds: countDir(`/proc/${pid}/fd`) }
}

class Target {
  constructor(kind, parallel) {
    this.kind = kind
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fcgi-fuzz-'))
    this.sock = path.join(this.dir, 'app.sock')
    this.parallel = parallel
    this.stderr = ''
    this.messages = []
    this.waiters = []
  }
  async start() {
    this.child = spawn(process.execPath, [path.join(HERE, 'fuzz-target.mjs'), this.kind, this.sock, String(this.parallel)], {
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
    })
    this.child.stderr.on('data', (d) => { this.stderr = (this.stderr + d).slice(-8000) })
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })))
    this.child.on('message', (m) => {
      const w = this.waiters.shift()
      if (w) w(m)
      else this.messages.push(m)
    })
    const ready = await this.message(10000)
    if (!ready?.ready) throw new Error(`the ${this.kind} target did not start: ${this.stderr}`)
  }
  message(ms) {
    if (this.messages.length > 0) return Promise.resolve(this.messages.shift())
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.waiters.splice(this.waiters.indexOf(done), 1); resolve(undefined) }, ms)
      const done = (m) => { clearTimeout(timer); resolve(m) }
      this.waiters.push(done)
    })
  }
  get alive() {
    return this.child.exitCode === null && this.child.signalCode === null
  }
  async stats() {
    if (!this.alive) return undefined
    this.child.send('stats')
    return this.message(5000)
  }
  counts() {
    return procCounts(this.child.pid)
  }
  async stop() {
    if (this.alive) {
      this.child.kill('SIGTERM')
      const t = setTimeout(() => this.child.kill('SIGKILL'), 6000)
      await this.exited
      clearTimeout(t)
    }
    fs.rmSync(this.dir, { recursive: true, force: true })
  }
}

/**
 * Valid requests only: one with a 100 KiB body on a fresh connection, then
 * two in a row on a kept connection, each answer checked exactly.
 */
async function probe(seed, target, sockPath, label) {
  return [
    ...(await probeConnection(seed, target, sockPath, label, 0, [{ role: 1, keep: false, stdinLen: 100 * 1024 }])),
    ...(await probeConnection(seed, target, sockPath, label, 1, [{ role: 1, keep: true, stdinLen: 1000 }, { role: 1, keep: true, stdinLen: 0 }])),
  ]
}

async function probeConnection(seed, target, sockPath, label, i, forces) {
  const failures = []
  const r = new Rng(seed, 'probe', label, i)
  const ctx = { index: 900000 + i, seq: 0, tokens: new Set(), ids: new Set([0]) }
  const sock = net.connect(sockPath)
  sock.on('error', () => {})
  const reader = new Reader()
  let current
  let result
  const chunks = []
  sock.on('data', (d) => reader.push(d, (x) => {
    if (x.type === T.STDOUT && x.id === current?.id) chunks.push(Buffer.from(x.content))
    if (x.type === T.END && x.id === current?.id) result = { status: x.content[4], stdout: Buffer.concat(chunks.splice(0)).toString('latin1') }
  }))
  try {
    for (const [k, force] of forces.entries()) {
      const req = validRequest(r, ctx, target, force)
      current = req
      result = undefined
      sock.write(serialize(req.records))
      const end = Date.now() + 20000
      while (result === undefined && Date.now() < end && !sock.destroyed) await new Promise((res) => setTimeout(res, 5))
      const body = result && result.stdout.slice(result.stdout.indexOf('\r\n\r\n') + 4)
      if (!result) failures.push(`${target} ${label} probe ${i}.${k}: no answer within 20 s`)
      else if (result.status !== 0 || body !== req.body) failures.push(`${target} ${label} probe ${i}.${k}: wrong answer ${JSON.stringify(result.stdout.slice(0, 200))}`)
      if (!result) break
    }
  } finally {
    sock.destroy()
  }
  return failures
}

function newStats() {
  return {
    connections: 0, records: 0, strict: 0, strictOk: 0, loose: 0,
    mutations: {}, closes: { destroy: 0, end: 0, wait: 0 }, connectErrors: {},
    slowestAnswer: { ms: 0 }, slowestConnection: { ms: 0 },
  }
}

async function fuzzTarget(opts, kind, seconds, maxRecords) {
  const target = new Target(kind, opts.parallel)
  const stats = newStats()
  stats.dump = opts.dump
  const failures = []
  const report = { target: kind, stats }
  await target.start()
  try {
    // Idle values: after a warm-up that starts the core worker threads.
    failures.push(...(await probe(opts.seed, kind, target.sock, 'warmup')))
    await new Promise((res) => setTimeout(res, 300))
    const idleStats = await target.stats()
    report.idle = { ...target.counts(), threads: idleStats?.stats?.threads, rss: idleStats?.rss }

    const deadline = Date.now() + seconds * 1000
    let next = opts.replay ?? 0
    const started = Date.now()
    const lane = async () => {
      while (Date.now() < deadline && (maxRecords === 0 || stats.records < maxRecords) && target.alive) {
        const index = next++
        if (opts.replay !== undefined && index !== opts.replay) return
        const t0 = Date.now()
        const res = await runConnection(opts.seed, kind, index, target.sock, stats)
        const took = Date.now() - t0
        if (took > stats.slowestConnection.ms) stats.slowestConnection = { ms: took, connection: index }
        stats.connections++
        stats.records += res.records
        for (const f of res.failures) {
          if (failures.length < 50) failures.push(f)
          if (opts.verbose) console.error(f)
        }
      }
    }
    await Promise.all(Array.from({ length: opts.replay !== undefined ? 1 : opts.connections }, lane))
    stats.seconds = (Date.now() - started) / 1000

    // After the run.
    report.alive = target.alive
    if (!target.alive) {
      const { code, signal } = await target.exited
      failures.push(`${kind}: the server process died (exit ${code}, signal ${signal}): ${target.stderr.slice(-2000)}`)
      return { report, failures }
    }
    failures.push(...(await probe(opts.seed, kind, target.sock, 'after')))
    // Back to idle: same descriptors, same threads but idle native workers.
    const settleEnd = Date.now() + opts.settle * 1000
    let now
    for (;;) {
      const s = await target.stats()
      const c = target.counts()
      now = { ...c, threads: s?.stats?.threads, idleThreads: s?.stats?.idleThreads, connections: s?.stats?.connections, running: s?.running, rss: s?.rss, inFlight: s?.inFlight }
      const nonWorkers = c.tasks - c.workers
      const idleNonWorkers = report.idle.tasks - report.idle.workers
      now.ok = c.fds === report.idle.fds && nonWorkers === idleNonWorkers && s?.stats?.threads === s?.stats?.idleThreads &&
        s?.stats?.connections === 0 && s?.running === 0 && (opts.settle < 35 || c.tasks <= report.idle.tasks)
      if (now.ok || Date.now() > settleEnd) break
      await new Promise((res) => setTimeout(res, 200))
    }
    report.after = now
    if (!now.ok) {
      failures.push(`${kind}: not back to idle after ${opts.settle} s: ${JSON.stringify(now)} (idle: ${JSON.stringify(report.idle)})`)
    }
    report.alive = target.alive
    if (!target.alive) failures.push(`${kind}: the server process died after the run: ${target.stderr.slice(-2000)}`)
  } finally {
    await target.stop()
  }
  return { report, failures }
}

// ------------------------------------------------------------ main

async function main() {
  const { values } = parseArgs({
    options: {
      seed: { type: 'string' },
      seconds: { type: 'string', default: '10' },
      connections: { type: 'string', default: '32' },
      records: { type: 'string', default: '0' },
      target: { type: 'string', default: 'both' },
      parallel: { type: 'string', default: '32' },
      settle: { type: 'string', default: '10' },
      replay: { type: 'string' },
      json: { type: 'boolean', default: false },
      dump: { type: 'boolean', default: false },
      verbose: { type: 'boolean', default: false },
    },
  })
  const opts = {
    seed: values.seed ?? String(Date.now() % 1000000),
    seconds: Number(values.seconds),
    connections: Number(values.connections),
    records: Number(values.records),
    parallel: Number(values.parallel),
    settle: Number(values.settle),
    replay: values.replay === undefined ? undefined : Number(values.replay),
    verbose: values.verbose,
    dump: values.dump,
  }
  const kinds = values.target === 'both' ? ['loop', 'http'] : [values.target]
  if (!fs.existsSync(path.join(HERE, '..', 'dist', 'index.js'))) {
    console.error('dist/ is missing: run npx tsup first')
    process.exit(2)
  }
  if (!values.json) console.log(`fuzz: seed ${opts.seed}, ${opts.seconds} s, ${opts.connections} connections, targets ${kinds.join(', ')}`)
  const results = []
  let failures = []
  for (const kind of kinds) {
    const res = await fuzzTarget(opts, kind, opts.seconds / kinds.length, Math.ceil(opts.records / kinds.length))
    results.push(res.report)
    failures = failures.concat(res.failures)
    if (!values.json) {
      const { stats, idle, after } = res.report
      console.log(`${kind}: ${stats.records} records on ${stats.connections} connections in ${stats.seconds?.toFixed(1)} s ` +
        `(${Math.round(stats.records / (stats.seconds || 1))} records/s); valid requests ${stats.strictOk}/${stats.strict} answered exactly, ` +
        `${stats.loose} mutated; crashes ${res.report.alive ? 0 : 1}`)
      console.log(`  mutations: ${JSON.stringify(stats.mutations)}; closes: ${JSON.stringify(stats.closes)}` +
        (Object.keys(stats.connectErrors).length ? `; connect errors: ${JSON.stringify(stats.connectErrors)}` : ''))
      console.log(`  slowest valid answer: ${JSON.stringify(stats.slowestAnswer)}; slowest connection: ${JSON.stringify(stats.slowestConnection)}`)
      if (idle && after) {
        console.log(`  idle: ${idle.tasks} threads (${idle.workers} native workers), ${idle.fds} fds, RSS ${(idle.rss / 1048576).toFixed(1)} MiB; ` +
          `after: ${after.tasks} threads (${after.workers} native workers, ${after.idleThreads} idle), ${after.fds} fds, ` +
          `${after.connections} connections, ${after.running} handlers running, RSS ${(after.rss / 1048576).toFixed(1)} MiB: ${after.ok ? 'back to idle' : 'NOT idle'}`)
      }
    }
  }
  const summary = { seed: opts.seed, ok: failures.length === 0, failures, results }
  if (values.json) {
    console.log(JSON.stringify(summary))
  } else {
    for (const f of failures) console.log(`FAIL ${f}`)
    console.log(failures.length === 0 ? 'all checks passed' : `${failures.length} failures (replay one with --seed ${opts.seed} --target <t> --replay <connection>)`)
  }
  process.exitCode = failures.length === 0 ? 0 : 1
}

await main()
