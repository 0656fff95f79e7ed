/**
 * The server under test of test/hardening in a child process
 * (scripts/fuzz-target.mjs): the accept loop or createServer, echoing a
 * per-request token and the sha1 of the body. A crash is its exit; threads
 * and descriptors are counted from /proc/PID; native stats, handlers still
 * running and RSS come over IPC. Also: valid requests checked byte for byte,
 * and "bystanders" (kept connections doing valid requests in a loop while a
 * fault is injected), whose every answer must be exact.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'

import type { NativeStats } from '../../src/native.js'
import { encodeBeginRequest, encodeParams, encodeStream, FCGI_RESPONDER, FCGI_STDIN, FcgiConnection } from './fcgi-client.js'
import { sleep, tmpSocketPath } from './wait.js'

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..')
const TARGET = path.join(ROOT, 'scripts/fuzz-target.mjs')

export interface TargetStats {
  stats: NativeStats | null
  rss: number
  /** Handlers that have not ended (http: responses not closed). */
  running: number
  served: number
  requestErrors: number
  inFlight: unknown[]
}

export interface ProcCounts {
  tasks: number
  /** Threads named fcgi-worker (the native pool). */
  workers: number
  fds: number
}

export interface Baseline extends ProcCounts {
  rss: number
}

export interface StartOptions {
  parallel?: number
  env?: Record<string, string>
  /** `ulimit -n` of the child (set by a shell before exec). */
  fdLimit?: number
}

export class FaultTarget {
  readonly path: string
  readonly kind: 'loop' | 'http'
  readonly child: ChildProcess
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  stderr = ''
  #messages: unknown[] = []
  #waiters: Array<(m: unknown) => void> = []

  private constructor(kind: 'loop' | 'http', opts: StartOptions) {
    this.kind = kind
    this.path = tmpSocketPath(`fault-${kind}`)
    const args = [TARGET, kind, this.path, String(opts.parallel ?? 32)]
    const env = { ...process.env, ...opts.env }
    this.child = opts.fdLimit
      ? spawn('/bin/sh', ['-c', `ulimit -n ${opts.fdLimit} && exec "$0" "$@"`, process.execPath, ...args], { env, stdio: ['ignore', 'inherit', 'pipe', 'ipc'] })
      : spawn(process.execPath, args, { env, stdio: ['ignore', 'inherit', 'pipe', 'ipc'] })
    this.child.stderr!.on('data', (d) => { this.stderr = (this.stderr + String(d)).slice(-8000) })
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })))
    this.child.on('message', (m) => {
      const w = this.#waiters.shift()
      if (w) w(m)
      else this.#messages.push(m)
    })
  }

  static async start(kind: 'loop' | 'http', opts: StartOptions = {}): Promise<FaultTarget> {
    const t = new FaultTarget(kind, opts)
    const ready = (await t.#message(15000)) as { ready?: boolean } | undefined
    if (!ready?.ready) {
      await t.stop()
      throw new Error(`the ${kind} target did not start: ${t.stderr}`)
    }
    return t
  }

  #message(ms: number): Promise<unknown> {
    if (this.#messages.length > 0) return Promise.resolve(this.#messages.shift())
    return new Promise((resolve) => {
      const done = (m: unknown) => { clearTimeout(timer); resolve(m) }
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(done), 1)
        resolve(undefined)
      }, ms)
      this.#waiters.push(done)
    })
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  async stats(): Promise<TargetStats> {
    if (!this.alive) throw new Error(`the target died: ${this.stderr}`)
    this.child.send('stats')
    const m = (await this.#message(5000)) as TargetStats | undefined
    if (!m) throw new Error('the target did not answer stats')
    return m
  }

  counts(): ProcCounts {
    const pid = this.child.pid!
    let tasks = 0
    let workers = 0
    for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
      tasks++
      try {
        if (fs.readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim() === 'fcgi-worker') workers++
      } catch { /* exited meanwhile */ }
    }
    return { tasks, workers, fds: fs.readdirSync(`/proc/${pid}/fd`).length }
  }

  /** Warms up (valid requests in parallel start the core workers), then the idle values. */
  async baseline(): Promise<Baseline> {
    await Promise.all(Array.from({ length: 8 }, (_, i) => exchange(this, { stdin: randomBytes(i * 5000) })))
    await sleep(200)
    const s = await this.stats()
    return { ...this.counts(), rss: s.rss }
  }

  /**
   * Waits (bounded) until the process is back to idle: the same descriptors,
   * the same threads but native workers, every worker idle, no connection
   * and no handler left; RSS no more than `rssGrowth` above the baseline.
   */
  async expectIdle(base: Baseline, opts: { timeoutMs?: number; rssGrowth?: number } = {}): Promise<void> {
    const end = Date.now() + (opts.timeoutMs ?? 10000)
    let last = ''
    for (;;) {
      const s = await this.stats()
      const c = this.counts()
      const ok = c.fds === base.fds && c.tasks - c.workers === base.tasks - base.workers &&
        s.stats !== null && s.stats.threads === s.stats.idleThreads && s.stats.connections === 0 && s.running === 0
      last = JSON.stringify({ now: { ...c, rss: s.rss, stats: s.stats, running: s.running, inFlight: s.inFlight }, base })
      if (ok) {
        const growth = s.rss - base.rss
        // Under AddressSanitizer (scripts/test-asan.sh), freed memory waits in
        // its quarantine (16 MiB there) and its allocator keeps per-thread
        // caches: the same run holds about twice the memory.
        const limit = opts.rssGrowth === undefined ? undefined : opts.rssGrowth * (process.env.ASAN_OPTIONS ? 2 : 1)
        if (limit !== undefined && growth > limit) {
          throw new Error(`RSS grew by ${(growth / 1048576).toFixed(1)} MiB (at most ${(limit / 1048576).toFixed(1)}): ${last}`)
        }
        return
      }
      if (Date.now() > end) throw new Error(`not back to idle: ${last}`)
      await sleep(100)
    }
  }

  async stop(): Promise<void> {
    if (this.alive) {
      this.child.kill('SIGTERM')
      const t = setTimeout(() => this.child.kill('SIGKILL'), 6000)
      await this.exited
      clearTimeout(t)
    }
  }
}

let tokenSeq = 0

export interface RequestSpec {
  id?: number
  keep?: boolean
  stdin?: Buffer
  /** Extra FUZZ_* params (FUZZ_DELAY, FUZZ_STREAM, FUZZ_BIG, FUZZ_FAULT), also sent as X-Fuzz-* headers. */
  fuzz?: Record<string, string>
  /** More params (e.g. HTTP_X_FUZZ_FAULT). */
  params?: Record<string, string>
}

export interface BuiltRequest {
  id: number
  token: string
  bytes: Buffer
  /** What the echo app answers (after the CGI head), FUZZ_STREAM not included. */
  body: string
  head: Buffer
}

/** The records of a valid request to the echo app, and its exact answer. */
export function buildRequest(spec: RequestSpec = {}): BuiltRequest {
  const id = spec.id ?? 1
  const token = `f${process.pid}x${tokenSeq++}x${randomBytes(4).toString('hex')}`
  const stdin = spec.stdin ?? Buffer.alloc(0)
  const params: Record<string, string> = {
    GATEWAY_INTERFACE: 'CGI/1.1', SERVER_PROTOCOL: 'HTTP/1.1', REQUEST_METHOD: stdin.length > 0 ? 'POST' : 'GET',
    REQUEST_URI: `/fault/${token}`, SCRIPT_NAME: '/fault', QUERY_STRING: '', SERVER_NAME: 'localhost', SERVER_PORT: '80',
    REMOTE_ADDR: '127.0.0.1', HTTP_HOST: 'localhost', CONTENT_LENGTH: String(stdin.length),
    FUZZ_TOKEN: token, HTTP_X_FUZZ_TOKEN: token, HTTP_X_FUZZ_ID: String(id),
    ...(stdin.length > 0 ? { CONTENT_TYPE: 'application/octet-stream' } : {}),
    ...spec.params,
  }
  for (const [k, v] of Object.entries(spec.fuzz ?? {})) {
    params[`FUZZ_${k}`] = v
    params[`HTTP_X_FUZZ_${k}`] = v
  }
  const head = Buffer.concat([encodeBeginRequest(id, FCGI_RESPONDER, spec.keep ?? false), encodeParams(id, params)])
  const bytes = Buffer.concat([head, encodeStream(FCGI_STDIN, id, stdin)])
  const big = Number(spec.fuzz?.BIG ?? 0)
  let body = `token=${token}\nid=${id}\nstdin=${stdin.length}:${createHash('sha1').update(stdin).digest('hex')}\n`
  if (big > 0) body += pattern(token, 0, big)
  return { id, token, bytes, body, head }
}

/** Bytes [from, to) of the token repeated, as the echo app writes them. */
export function pattern(token: string, from: number, to: number): string {
  const unit = `${token};`
  const start = from - (from % unit.length)
  return unit.repeat(Math.ceil((to - start) / unit.length)).slice(from - start, to - start)
}

/** The body of a CGI response (after the blank line). */
export function cgiBody(stdout: Buffer): string {
  const s = stdout.toString('latin1')
  const at = s.indexOf('\r\n\r\n')
  return at < 0 ? '' : s.slice(at + 4)
}

/** One valid request on a new (or given) connection; throws unless answered exactly. */
export async function exchange(target: { path: string }, spec: RequestSpec = {}, conn?: FcgiConnection, timeoutMs = 15000): Promise<void> {
  const own = conn === undefined
  const c = conn ?? (await FcgiConnection.connect({ path: target.path }, timeoutMs))
  try {
    const req = buildRequest(spec)
    void c.write(req.bytes).catch(() => {})
    const res = await c.readUntilEnd(req.id, timeoutMs)
    const body = cgiBody(res.stdout)
    if (res.protocolStatus !== 0 || body !== req.body) {
      throw new Error(`wrong answer to ${req.token}: ${JSON.stringify(res.stdout.toString('latin1').slice(0, 300))}`)
    }
  } finally {
    if (own) c.destroy()
  }
}

export interface Bystanders {
  /** Requests answered exactly so far. */
  readonly completed: number
  /** The slowest answer so far (ms). */
  readonly slowest: number
  /** Stops after the requests in flight; resolves with every failure seen. */
  stop(): Promise<string[]>
}

/**
 * `n` kept connections doing valid requests (bodies up to 20 KiB) one after
 * another until stopped; each answer checked byte for byte.
 */
export function startBystanders(target: { path: string }, n: number): Bystanders {
  let stopping = false
  let completed = 0
  let slowest = 0
  const failures: string[] = []
  const lanes = Array.from({ length: n }, async (_, lane) => {
    let conn: FcgiConnection | undefined
    try {
      conn = await FcgiConnection.connect({ path: target.path }, 10000)
      for (let i = 0; !stopping; i++) {
        const t0 = Date.now()
        await exchange(target, { id: 1 + ((lane * 7 + i) % 65535), keep: true, stdin: randomBytes((i * 997) % 20000) }, conn, 20000)
        slowest = Math.max(slowest, Date.now() - t0)
        completed++
      }
    } catch (err) {
      failures.push(`bystander ${lane}: ${(err as Error).message}`)
    } finally {
      conn?.destroy()
    }
  })
  return {
    get completed() { return completed },
    get slowest() { return slowest },
    async stop() {
      stopping = true
      await Promise.all(lanes)
      return failures
    },
  }
}
