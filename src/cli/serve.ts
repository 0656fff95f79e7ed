// `libfcgi serve APP`: the supervisor. It checks the flags and that the app
// loads, opens the listen socket once, and runs N worker processes that
// share it as their fd 0, the FastCGI convention (src/cli/worker.ts), and
// an even share of the connections (a share block, see #spawn). A worker
// that dies is replaced (with a growing delay when it keeps dying); SIGHUP
// replaces every worker by a fresh one (new code) without failing a
// request; SIGTERM/SIGINT stop accepting, let the requests in flight finish
// within --grace, exit 0.
import { type ChildProcess, spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { parseListenAddress, parseMode } from '../address.js'
import { isCgiInvocation } from '../http/cgi-mode.js'
import { createServer } from '../http/server.js'
import { systemdListenFd } from '../listen-fds.js'
import { isCGI, openListenSocket, removeSocketFile, type SocketFile } from '../socket.js'
import { native } from '../native.js'
import { loadApp } from './load-app.js'
import { type FlagSpec, flagsHelp, parseArgs, parseCount, parseDuration, UsageError } from './args.js'
import type { StatusData, WorkerStats } from './status.js'
import type { WorkerConfig } from './worker.js'

const FLAGS: FlagSpec[] = [
  { name: 'listen', short: 'l', env: 'LIBFCGI_LISTEN', value: 'ADDR', help: 'port, host:port, [ipv6]:port or unix socket path; default: the socket systemd passed (LISTEN_FDS) or a web server passed as fd 0, else (started as CGI) the one CGI request' },
  { name: 'socket-mode', env: 'LIBFCGI_SOCKET_MODE', value: 'MODE', help: 'permissions of a unix socket, octal (e.g. 660)' },
  { name: 'socket-owner', env: 'LIBFCGI_SOCKET_OWNER', value: 'USER[:GROUP]', help: 'owner (and group) of a unix socket, names or ids (e.g. www-data:www-data; usually needs root)' },
  { name: 'workers', short: 'w', env: 'LIBFCGI_WORKERS', value: 'N', help: 'worker processes (default 1)' },
  { name: 'max-conns', env: 'LIBFCGI_MAX_CONNS', value: 'N', help: 'requests a worker serves at once (default 256)' },
  { name: 'max-requests', env: 'LIBFCGI_MAX_REQUESTS', value: 'N', help: 'replace a worker after N requests (default 0: never)' },
  { name: 'allowed-clients', env: 'LIBFCGI_ALLOWED_CLIENTS', value: 'LIST', help: 'comma-separated IPs allowed to connect over TCP (default: FCGI_WEB_SERVER_ADDRS, else anyone)' },
  { name: 'grace', env: 'LIBFCGI_GRACE', value: 'TIME', help: 'time allowed for requests in flight at stop or reload (default 30s)' },
  { name: 'backlog', env: 'LIBFCGI_BACKLOG', value: 'N', help: 'listen backlog (default 511)' },
  { name: 'status-path', env: 'LIBFCGI_STATUS_PATH', value: 'PATH', help: 'serve the status page here (JSON; ?format=prometheus for Prometheus text)' },
  { name: 'ping-path', env: 'LIBFCGI_PING_PATH', value: 'PATH', help: 'answer "pong" here, without calling the app' },
  { name: 'slow', env: 'LIBFCGI_SLOW', value: 'TIME', help: 'requests taking this long count as slow on the status page (default 5s)' },
  { name: 'help', short: 'h', boolean: true, help: 'show this help' },
]

const HELP = `usage: libfcgi serve APP [options]

Runs APP as a FastCGI server behind a web server (nginx, Apache, lighttpd, ...).
APP is a module (ESM or CommonJS) whose default export (or module.exports) is
a node:http request listener (an Express app is one) or an object with a
fetch(request) method (a Hono app).

options:
${flagsHelp(FLAGS)}

signals: SIGTERM/SIGINT stop gracefully (within --grace), SIGHUP reloads
(fresh workers with the app loaded again; the old ones finish their requests).
exit status: 0 after a graceful stop, 1 if the app fails to load or the
server cannot start, 2 for a usage error.`

interface Config {
  app: string
  listen: string | undefined
  mode: number | undefined
  owner: string | undefined
  group: string | undefined
  workers: number
  backlog: number
  grace: number
  worker: WorkerConfig
}

function configFrom(argv: string[]): Config | undefined {
  const { flags, positionals } = parseArgs(argv, FLAGS)
  if (flags.has('help')) return undefined
  if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'serve needs the APP module to run' : `serve takes one APP, got ${positionals.join(' ')}`)
  const str = (name: string): string | undefined => flags.get(name) as string | undefined
  const app = path.resolve(positionals[0]!)
  if (!fs.existsSync(app)) throw new UsageError(`APP ${positionals[0]}: no such file`)
  let mode: number | undefined
  if (str('socket-mode') !== undefined) {
    try {
      mode = parseMode(str('socket-mode'))
    } catch (err) {
      throw new UsageError(`--socket-mode: ${(err as Error).message}`)
    }
  }
  let owner: string | undefined
  let group: string | undefined
  const ownerFlag = str('socket-owner')
  if (ownerFlag !== undefined) {
    const m = /^([^:\s]*)(?::([^:\s]+))?$/.exec(ownerFlag)
    if (!m || (m[1] === '' && m[2] === undefined)) throw new UsageError(`--socket-owner: expected USER, USER:GROUP or :GROUP, got ${JSON.stringify(ownerFlag)}`)
    owner = m[1] === '' ? undefined : m[1]
    group = m[2]
  }
  const paths = ['status-path', 'ping-path'].map((n) => {
    const p = str(n)
    if (p !== undefined && !p.startsWith('/')) throw new UsageError(`--${n} must start with "/"`)
    return p
  })
  const maxConns = str('max-conns') === undefined ? 256 : parseCount(str('max-conns')!, '--max-conns', 1)
  return {
    app,
    listen: str('listen'),
    mode,
    owner,
    group,
    workers: str('workers') === undefined ? 1 : parseCount(str('workers')!, '--workers', 1),
    backlog: str('backlog') === undefined ? 511 : parseCount(str('backlog')!, '--backlog', 1),
    grace: str('grace') === undefined ? 30000 : parseDuration(str('grace')!, '--grace'),
    worker: {
      app,
      maxConns,
      maxRequests: str('max-requests') === undefined ? 0 : parseCount(str('max-requests')!, '--max-requests'),
      ...(str('allowed-clients') !== undefined ? { allowedClients: str('allowed-clients') } : {}),
      ...(paths[0] !== undefined ? { statusPath: paths[0] } : {}),
      ...(paths[1] !== undefined ? { pingPath: paths[1] } : {}),
      slowMs: str('slow') === undefined ? 5000 : parseDuration(str('slow')!, '--slow'),
    },
  }
}

const here = path.dirname(fileURLToPath(import.meta.url))
const WORKER_SCRIPT = path.join(here, 'cli-worker.js')
/** The fd of the share block in a worker (stdio[3] of the spawn); the listen socket is its fd 0. */
const WORKER_SHARE_FD = 3

function log(message: string): void {
  process.stderr.write(`libfcgi serve[${process.pid}]: ${message}\n`)
}

/** Loads the app in a short-lived process: errors show before anything listens. */
function checkApp(app: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...process.execArgv, WORKER_SCRIPT, '--check', app], { stdio: ['ignore', 'inherit', 'pipe'] })
    let stderr = ''
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
    child.on('error', reject)
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(stderr.trim() || `the app check exited with status ${code}`))))
  })
}

interface Worker {
  child: ChildProcess
  generation: number
  state: 'starting' | 'ready' | 'stopping'
  stopTimer?: NodeJS.Timeout
}

class Supervisor {
  readonly #config: Config
  readonly #fd: number
  readonly #socketFile: SocketFile | undefined
  readonly #workers = new Set<Worker>()
  /**
   * The block where the workers publish how many connections each holds (for
   * an even share, see ShareEntry in native/server.h), -1 if it could not be
   * made; and the entries in use.
   */
  readonly #shareFd: number
  readonly #shareUsed = new Set<number>()
  readonly #startedAt = Date.now()
  #generation = 0
  #startedWorkers = 0
  #reloads = 0
  #stopping = false
  #crashes: number[] = []
  /** Replacements waiting for their backoff delay; cancelled at stop. */
  readonly #respawnTimers = new Set<NodeJS.Timeout>()
  #statusRequests = new Map<string, { pending: Set<number>; stats: WorkerStats[]; reply: (data: StatusData) => void }>()
  #done!: (code: number) => void
  readonly finished = new Promise<number>((resolve) => { this.#done = resolve })

  constructor(config: Config, fd: number, socketFile: SocketFile | undefined) {
    this.#config = config
    this.#fd = fd
    this.#socketFile = socketFile
    const share = native.shareCreate()
    this.#shareFd = 'fd' in share ? share.fd : -1
    if (!('fd' in share)) log(`no even share between the workers: ${share.syscall} failed (errno ${share.errno})`)
  }

  start(): void {
    this.#generation++
    for (let i = 0; i < this.#config.workers; i++) this.#spawn(this.#generation)
    process.on('SIGTERM', () => this.stop('SIGTERM'))
    process.on('SIGINT', () => this.stop('SIGINT'))
    process.on('SIGHUP', () => this.reload())
  }

  #spawn(generation: number): Worker {
    // The listen socket is the worker's fd 0. libuv makes a child's fds 0-2
    // blocking, and O_NONBLOCK belongs to the open file description every
    // worker shares (Node also restores it at a worker's exit): the native
    // server sets it again and bounds an accept that finds it gone, so the
    // running workers do not care (test/native/shared-listen.test.ts).
    let shareIndex = -1
    if (this.#shareFd >= 0) {
      for (let i = 0; i < native.shareEntries; i++) {
        if (!this.#shareUsed.has(i)) {
          shareIndex = i
          break
        }
      }
    }
    const shared = shareIndex >= 0
    if (shared) this.#shareUsed.add(shareIndex)
    const worker: WorkerConfig = { ...this.#config.worker, ...(shared ? { share: { fd: WORKER_SHARE_FD, index: shareIndex } } : {}) }
    const child = spawn(process.execPath, [...process.execArgv, WORKER_SCRIPT], {
      stdio: [this.#fd, 'inherit', 'inherit', shared ? this.#shareFd : 'ignore', 'ipc'],
      env: { ...process.env, LIBFCGI_WORKER_CONFIG: JSON.stringify(worker) },
    })
    if (shared) {
      // Its entry stays counted until it is gone, then is free again.
      child.once('exit', () => {
        native.shareClear(this.#shareFd, shareIndex)
        this.#shareUsed.delete(shareIndex)
      })
    }
    this.#startedWorkers++
    const w: Worker = { child, generation, state: 'starting' }
    this.#workers.add(w)
    child.on('message', (msg: { type: string; id?: number; stats?: WorkerStats }) => this.#onMessage(w, msg))
    child.on('exit', (code, signal) => this.#onExit(w, code, signal))
    child.on('error', (err) => log(`worker: ${err.message}`))
    return w
  }

  #onMessage(w: Worker, msg: { type: string; id?: number; stats?: WorkerStats }): void {
    switch (msg.type) {
      case 'ready':
        if (w.state === 'starting') w.state = 'ready'
        if (w.generation === this.#generation) this.#retireOldGenerations()
        return
      case 'recycle':
        // --max-requests: a replacement first, then the old one stops.
        if (w.state === 'ready' && !this.#stopping) {
          const fresh = this.#spawn(this.#generation)
          w.state = 'stopping'
          const retire = (): void => this.#retire(w)
          fresh.child.once('message', (m: { type: string }) => { if (m.type === 'ready') retire() })
          fresh.child.once('exit', retire)
        }
        return
      case 'status-request':
        this.#collectStatus((data) => w.child.connected && w.child.send({ type: 'status', id: msg.id, data }))
        return
      case 'stats': {
        const req = this.#statusRequests.get(String(msg.id))
        if (req && req.pending.delete(w.child.pid!)) {
          req.stats.push(msg.stats!)
          if (req.pending.size === 0) this.#finishStatus(String(msg.id))
        }
        return
      }
    }
  }

  #nextStatusId = 1
  #collectStatus(reply: (data: StatusData) => void): void {
    const id = String(this.#nextStatusId++)
    const live = [...this.#workers].filter((w) => w.state !== 'stopping' && w.child.connected)
    const entry = { pending: new Set(live.map((w) => w.child.pid!)), stats: [] as WorkerStats[], reply }
    this.#statusRequests.set(id, entry)
    for (const w of live) w.child.send({ type: 'stats-request', id: Number(id) })
    setTimeout(() => this.#finishStatus(id), 1000).unref()
    if (entry.pending.size === 0) this.#finishStatus(id)
  }

  #finishStatus(id: string): void {
    const entry = this.#statusRequests.get(id)
    if (!entry) return
    this.#statusRequests.delete(id)
    entry.stats.sort((a, b) => a.pid - b.pid)
    entry.reply({ startedAt: this.#startedAt, startedWorkers: this.#startedWorkers, reloads: this.#reloads, workers: entry.stats })
  }

  /** Once every worker of the newest generation is ready, the older ones stop. */
  #retireOldGenerations(): void {
    const current = [...this.#workers].filter((w) => w.generation === this.#generation)
    if (current.some((w) => w.state !== 'ready')) return
    for (const w of this.#workers) if (w.generation < this.#generation && w.state !== 'stopping') this.#retire(w)
  }

  #retire(w: Worker): void {
    if (w.stopTimer) return
    w.state = 'stopping'
    if (w.child.connected) w.child.send({ type: 'stop' })
    else w.child.kill('SIGTERM')
    w.stopTimer = setTimeout(() => {
      log(`worker ${w.child.pid} did not finish within --grace: killed`)
      w.child.kill('SIGKILL')
    }, this.#config.grace)
  }

  #onExit(w: Worker, code: number | null, signal: NodeJS.Signals | null): void {
    this.#workers.delete(w)
    if (w.stopTimer) clearTimeout(w.stopTimer)
    if (this.#stopping) {
      if (this.#workers.size === 0) this.#finish()
      return
    }
    if (w.state === 'stopping') return  // retired (reload, recycle)
    const how = signal ? `killed by ${signal}` : `exited with status ${code}`
    if (w.state === 'starting' && w.generation === this.#generation && w.generation > 1 && this.#reloadFailed(w)) {
      log(`reload failed: a new worker ${how} before it was ready; the previous workers go on serving`)
      return
    }
    // A crash: replace it, waiting longer the more crashes there were lately.
    const now = Date.now()
    this.#crashes = this.#crashes.filter((t) => now - t < 60000)
    this.#crashes.push(now)
    const delay = Math.min(10000, 100 * 2 ** Math.max(0, this.#crashes.length - 1))
    log(`worker ${w.child.pid} ${how}; starting a replacement in ${delay} ms`)
    const timer = setTimeout(() => {
      this.#respawnTimers.delete(timer)
      if (!this.#stopping) this.#spawn(this.#generation)
    }, delay)
    this.#respawnTimers.add(timer)
  }

  /** A new generation that cannot start: drop it and keep the previous one. */
  #reloadFailed(_w: Worker): boolean {
    const older = [...this.#workers].some((o) => o.generation < this.#generation && o.state === 'ready')
    if (!older) return false
    for (const o of this.#workers) {
      if (o.generation === this.#generation) {
        o.state = 'stopping'
        o.child.kill('SIGTERM')
      }
    }
    this.#generation--
    return true
  }

  reload(): void {
    if (this.#stopping) return
    this.#reloads++
    this.#generation++
    log(`reload: starting ${this.#config.workers} fresh worker(s)`)
    for (let i = 0; i < this.#config.workers; i++) this.#spawn(this.#generation)
  }

  stop(signal: string): void {
    if (this.#stopping) return
    this.#stopping = true
    log(`${signal}: stopping (grace ${this.#config.grace} ms)`)
    // A pending replacement (crash backoff, up to 10 s) would hold the exit back.
    for (const t of this.#respawnTimers) clearTimeout(t)
    this.#respawnTimers.clear()
    if (this.#workers.size === 0) {
      this.#finish()
      return
    }
    for (const w of this.#workers) this.#retire(w)
  }

  #finish(): void {
    native.closeFd(this.#fd)
    if (this.#shareFd >= 0) native.closeFd(this.#shareFd)
    removeSocketFile(this.#socketFile)
    this.#done(0)
  }
}

/**
 * CGI mode: the app answers the request of this CGI invocation (environment,
 * stdin, stdout) through createServer().listen(), which sees the CGI
 * environment itself; then the process exits (0, or 1 for a response cut
 * short), whatever the app left running.
 */
async function serveCgiRequest(config: Config): Promise<number> {
  let listener
  try {
    listener = await loadApp(config.app)
  } catch (err) {
    // The web server answers 500 and logs this (stderr goes to its error log).
    log((err as Error).message)
    return 1
  }
  const server = createServer({ maxConns: 1 }, listener)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.once('close', resolve)
    server.listen()
  })
  const code = typeof process.exitCode === 'number' ? process.exitCode : 0
  // The app may hold timers or connections (a database pool): the web
  // server waits for the end of stdout, so the process ends here.
  process.exit(code)
}

export async function main(argv: string[]): Promise<number> {
  const config = configFrom(argv)
  if (config === undefined) {
    process.stdout.write(`${HELP}\n`)
    return 0
  }
  let target
  if (config.listen !== undefined) {
    try {
      target = parseListenAddress(config.listen, config.mode)
      if (target.kind === 'unix') {
        if (config.owner !== undefined) target.owner = /^\d+$/.test(config.owner) ? Number(config.owner) : config.owner
        if (config.group !== undefined) target.group = /^\d+$/.test(config.group) ? Number(config.group) : config.group
      } else if (config.owner !== undefined || config.group !== undefined) {
        throw new Error('--socket-owner applies to a unix socket path only')
      }
    } catch (err) {
      throw new UsageError(`--listen: ${(err as Error).message}`)
    }
  } else if (systemdListenFd() !== undefined) {
    target = parseListenAddress({ fd: systemdListenFd()! })
  } else if (!isCGI()) {
    target = parseListenAddress({ fd: 0 })
  } else if (isCgiInvocation()) {
    // Started as a plain CGI program (mod_cgi, lighttpd's mod_cgi): answer
    // the one request in this process, no workers.
    return serveCgiRequest(config)
  } else {
    throw new UsageError('no --listen, and fd 0 is not a listening socket (nor is this a CGI request: GATEWAY_INTERFACE is unset): give --listen ADDR, or let a web server (spawn-fcgi, mod_fcgid, lighttpd) start it')
  }
  try {
    await checkApp(config.app)
  } catch (err) {
    log((err as Error).message)
    return 1
  }
  let opened
  try {
    opened = openListenSocket(target, config.backlog)
  } catch (err) {
    log(`cannot listen on ${config.listen ?? `fd ${target.kind === 'fd' ? target.fd : 0}`}: ${(err as Error).message}`)
    return 1
  }
  const supervisor = new Supervisor(config, opened.fd, opened.socketFile)
  supervisor.start()
  log(`serving ${path.relative(process.cwd(), config.app) || config.app} on ${config.listen ?? `fd ${target.kind === 'fd' ? target.fd : 0}`} with ${config.workers} worker(s) (${os.cpus().length} cpus)`)
  return supervisor.finished
}
