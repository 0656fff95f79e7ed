#!/usr/bin/env node
// The benchmark (`npm run bench`): libfcgi for Node next to a C libfcgi app,
// node:http and node-fastcgi, all behind nginx.
//
// It builds and starts everything itself: nginx (its own configuration in a
// temporary directory), and each peer: a threaded C libfcgi app
// (bench/c-threaded-hello.c, built against the system libfcgi; libfcgi-dev is
// installed with apt when missing), our accept loop
// (bench/accept-loop-app.mjs), our createServer, node:http behind
// proxy_pass and node-fastcgi (bench/hello-apps.mjs). Every app serves the
// same four workloads by URL (bench/bodies.mjs): /hello, /64k, /1m and /echo
// (a 1 MiB POST echoed back); each is checked once with curl through nginx
// (status, size and bytes) before the measurements.
//
// The matrix (see MATRIX below, and docs/benchmarks.md): Hello World at 1,
// 32, 256 and 1024 connections; the 64 KiB, 1 MiB and echo workloads at 32;
// Hello World at 32 with keep_conn off, and over TCP (unix socket and
// keep_conn on otherwise). The full cross product (4 workloads x 4
// concurrencies x keep_conn x transport x 5 peers) would take hours. wrk runs each cell
// against each peer in interleaved rounds (all peers of a cell, then the next
// cell, ..., then the next round), and the tables show medians: req/s, ratio
// to the C peer, p50/p99, app CPU per request (/proc/PID/stat), peak RSS
// (VmHWM, reset before each run through /proc/PID/clear_refs), errors. Then
// the lateness of a 1 ms timer in the accept-loop app under 256 connections,
// and the issue's targets (missed targets are reported, they do not fail).
//
// The run fails (exit status 1, no docs written) on any non-2xx response,
// socket error, nginx error, short response, or a run where wrk's figures
// show that not every connection was being served (Little's law). On success
// it writes docs/benchmarks.md and docs/benchmarks-concurrency.svg.
//
// The full run: `npm run bench` (= node scripts/bench-core.mjs): 9 cells, 44
// runs per round, 3 rounds of 5 s, 29 warm-ups of 1 s: about 13 minutes on 2
// cores (the estimate is printed at start).
//
// usage: node scripts/bench-core.mjs [--quick] [--rounds 3] [--seconds 5] [--warmup 1]
//          [--peers c,loop,http,node-http,node-fastcgi] [--groups scaling,workloads,keepoff,tcp]
//          [--late-connections 256] [--docs DIR | --no-docs] [--estimate]
//   --estimate: print the matrix and the estimated duration, run nothing.
// env BENCH_NODE_ARGS: extra node flags for the Node apps (--trace-gc, --cpu-prof, ...).
//   --quick: 1 round of 2 s per cell, no warm-up, a reduced matrix (hello at 32
//            and 1024 connections, the other groups as usual); its docs go to a
//            temporary directory unless --docs is given.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { BODY_1M, BODY_64K, SIZE_1M, SIZE_64K } from '../bench/bodies.mjs'
import { cellTitle, concurrencySvg, fmt, headlineTable, resultsMarkdown, targetsTable } from './bench-report.mjs'
import { freePort, options, parseWrk, waitFor } from './lib/script-util.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const args = process.argv.slice(2)
const { flag, optStr, optNum } = options(args)
const QUICK = flag('quick')
const ROUNDS = optNum('rounds', QUICK ? 1 : 3)
const SECONDS = optNum('seconds', QUICK ? 2 : 5)
const WARMUP = optNum('warmup', QUICK ? 0 : 1)
const LATE_CONNS = optNum('late-connections', 256)
const PEER_KEYS = optStr('peers', 'c,loop,http,node-http,node-fastcgi').split(',')
const GROUP_KEYS = optStr('groups', 'scaling,workloads,keepoff,tcp').split(',')
const WRITE_DOCS = !flag('no-docs')
const DOCS_DIR = path.resolve(optStr('docs', QUICK ? path.join(os.tmpdir(), 'libfcgi-bench-quick-docs') : path.join(root, 'docs')))
// Seconds a wrk run costs beyond its duration (start, connections, exit),
// for the estimate printed at start.
const RUN_OVERHEAD = 0.4
// Extra node flags for the Node apps (e.g. BENCH_NODE_ARGS='--trace-gc' or '--cpu-prof').
const NODE_APP_ARGS = (process.env.BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean)

// ---- the matrix

const SIZES = { hello: 12, '64k': SIZE_64K, '1m': SIZE_1M, echo: SIZE_1M }
const MATRIX = {
  // req/s and RSS by concurrency: the scaling table and the chart.
  scaling: (QUICK ? [32, 1024] : [1, 32, 256, 1024]).map((conns) => ({ workload: 'hello', conns, keep: true, transport: 'unix' })),
  // Bigger bodies, at 32 connections.
  workloads: ['64k', '1m', 'echo'].map((workload) => ({ workload, conns: 32, keep: true, transport: 'unix' })),
  // A new upstream connection per request.
  keepoff: [{ workload: 'hello', conns: 32, keep: false, transport: 'unix' }],
  // TCP on 127.0.0.1 instead of a unix socket.
  tcp: [{ workload: 'hello', conns: 32, keep: true, transport: 'tcp' }],
}

// Each peer runs as up to three processes: Hello World over the unix socket
// (scaling, keep_conn off, and the event-loop run), the bigger bodies over
// the unix socket, and TCP. So the memory that 1 MiB bodies leave behind
// does not show in the Hello World RSS, nor their heap in its event loop.
const instanceKind = (cell) => (cell.transport === 'tcp' ? 'tcp' : cell.workload === 'hello' ? 'unix' : 'unix-bodies')

// The peers. `via`: nginx reaches it by fastcgi_pass or proxy_pass.
const PEERS = {
  c: { name: 'C libfcgi, threaded (256 threads), system libfcgi', via: 'fastcgi' },
  loop: { name: 'libfcgi for Node: accept loop (64 Requests)', via: 'fastcgi' },
  http: { name: 'libfcgi for Node: createServer (node:http API)', via: 'fastcgi' },
  'node-http': { name: "Node's http.createServer behind proxy_pass", via: 'proxy' },
  // node-fastcgi 2.0.0 ignores FCGI_KEEP_CONN (it closes the connection after
  // each request), so nginx must not keep its connections: always off.
  'node-fastcgi': { name: 'node-fastcgi 2.0.0 (pure JS)', via: 'fastcgi', noKeepConn: true },
}

const children = []
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libfcgi-bench-'))
function cleanup() {
  // nginx's workers outlive a SIGKILLed master: each child runs in its own
  // process group (detached) and the whole group is killed.
  for (const c of children) { try { process.kill(-c.pid, 'SIGKILL') } catch {} }
  try { fs.rmSync(tmp, { recursive: true, force: true }) } catch {}
}
process.on('exit', cleanup)
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { cleanup(); process.exit(130) })

// ---- set-up helpers

function aptInstall(pkg, what) {
  if (process.getuid?.() !== 0) throw new Error(`${what} is missing: sudo apt-get install -y ${pkg}`)
  console.error(`bench: installing ${pkg}`)
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  if (spawnSync('apt-get', ['install', '-y', '-qq', pkg], { stdio: 'inherit', env }).status !== 0) {
    execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env })
    execFileSync('apt-get', ['install', '-y', '-qq', pkg], { stdio: 'inherit', env })
  }
}
const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0
function need(cmd, pkg) { if (!have(cmd)) aptInstall(pkg, cmd) }
function needFile(file, pkg) { if (!fs.existsSync(file)) aptInstall(pkg, file) }

// The open-files limit for wrk, nginx and the C app (1024 connections need
// more than the usual 1024): 65535, or the hard limit when it cannot be
// raised (not root, or no CAP_SYS_RESOURCE).
function nofileLimit() {
  if (spawnSync('sh', ['-c', 'ulimit -n 65535'], { stdio: 'ignore' }).status === 0) return 65535
  const hard = spawnSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).stdout.trim()
  return hard === 'unlimited' ? 65535 : Math.min(65535, Number(hard) || 1024)
}
const NOFILE = nofileLimit()
const withNofile = (cmd, argv) => ['sh', ['-c', `ulimit -n ${NOFILE}; exec "$0" "$@"`, cmd, ...argv]]

function procCpuMs(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(fields[11]) + Number(fields[12]) // utime + stime, all threads
  return (ticks * 1000) / 100 // USER_HZ is 100 on Linux
}
// CPU time (ms) per kind of thread: the JS thread (tid == pid), our native
// threads (named fcgi-poller / fcgi-worker by the addon), everything else
// (V8's GC and compiler threads, libuv). Threads that came and went between
// two samples are missed; ours live as long as the server.
function threadCpuMs(pid) {
  const out = { js: 0, poller: 0, workers: 0, other: 0 }
  let tids
  try { tids = fs.readdirSync(`/proc/${pid}/task`) } catch { return out }
  for (const tid of tids) {
    let stat
    try { stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8') } catch { continue }
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ms = ((Number(fields[11]) + Number(fields[12])) * 1000) / 100
    const kind = tid === String(pid) ? 'js' : comm === 'fcgi-poller' ? 'poller' : comm === 'fcgi-worker' ? 'workers' : 'other'
    out[kind] += ms
  }
  return out
}
function peakRssMiB(pid) {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) / 1024 : NaN
}
// Resets VmHWM to the current RSS (Linux >= 4.0), so that the peak is the
// peak of the next run only.
let canResetPeak = true
function resetPeakRss(pid) {
  try { fs.writeFileSync(`/proc/${pid}/clear_refs`, '5') } catch { canResetPeak = false }
}

// ---- wrk

let postScript
function runWrk(front, cell, seconds) {
  const url = `http://127.0.0.1:${front}/${cell.workload}`
  const wrkArgs = [`-t${Math.min(2, cell.conns)}`, `-c${cell.conns}`, `-d${seconds}s`, '--timeout', '10s', '--latency']
  if (cell.workload === 'echo') wrkArgs.push('-s', postScript)
  const [cmd, argv] = withNofile('wrk', [...wrkArgs, url])
  const out = execFileSync(cmd, argv, { encoding: 'utf8', timeout: (seconds + 60) * 1000 })
  const w = parseWrk(out)
  if (!Number.isFinite(w.rps) || !(w.requests > 0)) throw new Error(`wrk ${wrkArgs.join(' ')} ${url} gave no figures:\n${out}`)
  return w
}

const median = (xs) => { const s = xs.filter(Number.isFinite).sort((a, b) => a - b); return s.length ? s[Math.floor(s.length / 2)] : NaN }

// ---- peers

async function startInstance(key, kind, cBin) {
  const transport = kind === 'tcp' ? 'tcp' : 'unix'
  const sock = path.join(tmp, `${key}-${kind}.sock`)
  const address = transport === 'tcp' ? `127.0.0.1:${await freePort()}` : sock
  const backlog = '4096'
  let child
  if (key === 'c') {
    const [cmd, argv] = withNofile(cBin, [address, '256', backlog])
    child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'inherit'], detached: true })
    children.push(child)
    let out = ''
    child.stdout.on('data', (d) => { out += d })
    await waitFor(() => out.includes('ready') || child.exitCode !== null, 10000, `the C app on ${address}`)
    if (child.exitCode !== null) throw new Error(`the C app exited (${child.exitCode})`)
    return { key, kind, transport, child, pid: child.pid, address }
  }
  const [script, argv] = key === 'loop'
    ? ['bench/accept-loop-app.mjs', [address, '64', backlog]]
    : ['bench/hello-apps.mjs', [{ http: 'create-server', 'node-http': 'node-http', 'node-fastcgi': 'node-fastcgi' }[key], address, backlog]]
  child = spawn(process.execPath, [...NODE_APP_ARGS, path.join(root, script), ...argv], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], detached: true })
  children.push(child)
  let ready = false
  const replies = []
  child.on('message', (m) => { if (m === 'ready') ready = true; else replies.push(m) })
  await waitFor(() => ready || child.exitCode !== null, 10000, `${key} to listen on ${address}`)
  if (child.exitCode !== null) throw new Error(`${key} exited (${child.exitCode})`)
  const ask = async (m) => { replies.length = 0; child.send(m); await waitFor(() => replies.length > 0, 5000, `reply to ${m}`); return replies[0] }
  return { key, kind, transport, child, pid: child.pid, address, ask }
}

// ---- machine and versions, for the docs

function machine() {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8')
  const model = /model name\s*:\s*(.+)/.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown'
  const sh = (cmd) => spawnSync('sh', ['-c', cmd], { encoding: 'utf8' })
  const firstLine = (r) => `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0]
  return {
    cpu: model,
    cores: os.cpus().length,
    memory: `${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB`,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    nginx: firstLine(sh('nginx -v')).replace(/^nginx version:\s*/, ''),
    wrk: firstLine(sh('wrk -v')).replace(/\s+Copyright.*$/, ''),
    libfcgi: sh("dpkg-query -W -f '${Version}' libfcgi-dev 2>/dev/null").stdout?.trim() || 'unknown',
    commit: spawnSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout?.trim() || 'unknown',
    dirty: (spawnSync('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).stdout ?? '').trim() !== '',
  }
}

function commandLine() {
  if (process.env.npm_lifecycle_event === 'bench') return `npm run bench${args.length ? ` -- ${args.join(' ')}` : ''}`
  return ['node', 'scripts/bench-core.mjs', ...args].join(' ')
}

// ---- main

async function main() {
  const started = Date.now()
  for (const k of PEER_KEYS) if (!PEERS[k]) throw new Error(`unknown peer ${k} (known: ${Object.keys(PEERS).join(', ')})`)
  for (const g of GROUP_KEYS) if (!MATRIX[g]) throw new Error(`unknown group ${g} (known: ${Object.keys(MATRIX).join(', ')})`)
  const peerList = PEER_KEYS.map((key) => ({ key, ...PEERS[key] }))
  const baseKey = PEER_KEYS.includes('c') ? 'c' : PEER_KEYS[0]

  // The cells, each with the peers that run it: a peer that cannot turn
  // keep_conn on runs the keep_conn-off cell only once (as its "on" cells).
  const cells = GROUP_KEYS.flatMap((g) => MATRIX[g].map((c) => ({ ...c, group: g, size: c.workload === 'hello' ? 0 : SIZES[c.workload] })))
  for (const cell of cells) {
    cell.id = `${cell.workload}-${cell.conns}-${cell.transport}-${cell.keep ? 'on' : 'off'}`
    cell.instance = instanceKind(cell)
    cell.peers = peerList.filter((p) => !(p.noKeepConn && !cell.keep && cells.some((o) => o !== cell && o.workload === cell.workload && o.conns === cell.conns && o.transport === cell.transport && o.keep)))
  }
  const runs = cells.reduce((n, c) => n + c.peers.length, 0)
  // Warm-up: each (peer, upstream, workload) once at 32 connections.
  const warmups = new Map()
  for (const cell of cells) for (const p of cell.peers) warmups.set(`${p.key}|${cell.instance}|${cell.keep || p.noKeepConn ? 'on' : 'off'}|${cell.workload}`, { p, cell: { ...cell, conns: 32 } })
  const estimate = 10 + ROUNDS * runs * (SECONDS + RUN_OVERHEAD) + (WARMUP > 0 ? warmups.size * (WARMUP + RUN_OVERHEAD) : 0) + (PEER_KEYS.includes('loop') ? SECONDS + RUN_OVERHEAD : 0)
  console.error(`bench: ${cells.length} cells x ${peerList.length} peers = ${runs} runs per round, ${ROUNDS} round(s) of ${SECONDS} s` +
    `${WARMUP > 0 ? `, ${warmups.size} warm-ups of ${WARMUP} s` : ''}; estimated duration ${Math.floor(estimate / 60)} min ${Math.round(estimate % 60)} s`)
  if (flag('estimate')) {
    for (const c of cells) console.log(`${c.group}: ${c.id} x ${c.peers.map((p) => p.key).join(',')}`)
    return
  }

  need('nginx', 'nginx-light')
  need('wrk', 'wrk')
  need('curl', 'curl')
  if (PEER_KEYS.includes('c')) { need('gcc', 'gcc'); needFile('/usr/include/fcgiapp.h', 'libfcgi-dev') }
  const distFile = path.join(root, 'dist/index.js')
  const newestSrc = Math.max(...fs.readdirSync(path.join(root, 'src'), { recursive: true }).filter((f) => f.endsWith('.ts')).map((f) => fs.statSync(path.join(root, 'src', f)).mtimeMs))
  if (!fs.existsSync(distFile) || fs.statSync(distFile).mtimeMs < newestSrc) {
    console.error('bench: dist/ is missing or older than src/: building it (npx tsup)')
    execFileSync('npx', ['tsup'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] })
  }

  const cBin = path.join(tmp, 'c-threaded-hello')
  if (PEER_KEYS.includes('c')) execFileSync('gcc', ['-O2', '-Wall', '-o', cBin, path.join(root, 'bench/c-threaded-hello.c'), '-lfcgi', '-lpthread'], { stdio: 'inherit' })
  postScript = path.join(tmp, 'post-1m.lua')
  fs.writeFileSync(postScript, `-- wrk: every request is a POST of 1 MiB\nwrk.method = "POST"\nwrk.body = string.rep("x", ${SIZE_1M})\nwrk.headers["Content-Type"] = "application/octet-stream"\n`)

  // App processes per peer: see instanceKind(); keep_conn on and off share one.
  const instances = new Map()
  const kinds = [...new Set(cells.map((c) => c.instance))]
  for (const p of peerList) for (const k of kinds) instances.set(`${p.key}|${k}`, await startInstance(p.key, k, cBin))

  // One nginx server (port) per (peer, app process, keep_conn).
  const fronts = new Map()
  let servers = ''
  const serverFor = (p, cell) => `${p.key}|${cell.instance}|${cell.keep && !p.noKeepConn ? 'on' : 'off'}`
  for (const cell of cells) {
    for (const p of cell.peers) {
      const id = serverFor(p, cell)
      if (fronts.has(id)) continue
      const front = await freePort()
      fronts.set(id, front)
      const inst = instances.get(`${p.key}|${cell.instance}`)
      const keep = id.endsWith('|on')
      const name = `up_${id.replace(/[^a-z0-9]/gi, '_')}`
      const upstream = inst.address.startsWith('/') ? `unix:${inst.address}` : inst.address
      const log = `${tmp}/error-${id.replace(/[^a-z0-9]/gi, '-')}.log`
      servers += `  upstream ${name} { server ${upstream};${keep ? ' keepalive 32; keepalive_requests 100000;' : ''} }\n`
      if (p.via === 'fastcgi') {
        servers += `  server { listen 127.0.0.1:${front} backlog=4096; error_log ${log} warn;
    location / { include /etc/nginx/fastcgi_params; fastcgi_keep_conn ${keep ? 'on' : 'off'}; fastcgi_pass ${name}; } }\n`
      } else {
        servers += `  server { listen 127.0.0.1:${front} backlog=4096; error_log ${log} warn;
    location / { ${keep ? 'proxy_http_version 1.1; proxy_set_header Connection "";' : ''} proxy_set_header Host $host; proxy_pass http://${name}; } }\n`
      }
    }
  }
  const conf = `
daemon off; master_process on; worker_processes 1; pid ${tmp}/nginx.pid;
worker_rlimit_nofile ${NOFILE};
error_log ${tmp}/error.log warn;
${process.getuid?.() === 0 ? 'user root;' : ''}
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 100000;
  client_body_temp_path ${tmp}/body; fastcgi_temp_path ${tmp}/fastcgi; proxy_temp_path ${tmp}/proxy;
  uwsgi_temp_path ${tmp}/uwsgi; scgi_temp_path ${tmp}/scgi;
  # 1 MiB bodies stay in memory, both ways.
  client_max_body_size 2m; client_body_buffer_size 2m;
  fastcgi_buffer_size 64k; fastcgi_buffers 16 64k; fastcgi_max_temp_file_size 0;
  proxy_buffer_size 64k; proxy_buffers 16 64k; proxy_max_temp_file_size 0;
${servers}}`
  fs.writeFileSync(path.join(tmp, 'nginx.conf'), conf)
  const [ncmd, nargv] = withNofile('nginx', ['-p', tmp, '-c', path.join(tmp, 'nginx.conf')])
  const nginx = spawn(ncmd, nargv, { stdio: 'inherit', detached: true })
  children.push(nginx)
  await waitFor(() => fs.existsSync(path.join(tmp, 'nginx.pid')) || nginx.exitCode !== null, 10000, 'nginx')
  if (nginx.exitCode !== null) throw new Error(`nginx exited (${nginx.exitCode}); configuration in ${tmp}/nginx.conf:\n${conf}`)
  await new Promise((r) => setTimeout(r, 200))

  // Every peer serves every workload, through every nginx server: status,
  // size and bytes, with curl.
  const echoIn = path.join(tmp, 'echo-in.bin')
  const echoBody = Buffer.alloc(SIZE_1M)
  for (let i = 0; i < SIZE_1M; i++) echoBody[i] = (i * 7 + (i >> 10)) & 0xff
  fs.writeFileSync(echoIn, echoBody)
  const expected = { hello: Buffer.from('Hello World\n'), '64k': BODY_64K, '1m': BODY_1M, echo: echoBody }
  const checkOut = path.join(tmp, 'check.bin')
  const wrong = []
  for (const [id, front] of fronts) {
    for (const w of ['hello', '64k', '1m', 'echo']) {
      const curlArgs = ['-sS', '--max-time', '20', '-o', checkOut, '-w', '%{http_code} %{size_download}', ...(w === 'echo' ? ['--data-binary', `@${echoIn}`, '-H', 'Content-Type: application/octet-stream'] : []), `http://127.0.0.1:${front}/${w}`]
      const res = spawnSync('curl', curlArgs, { encoding: 'utf8' })
      const body = fs.existsSync(checkOut) ? fs.readFileSync(checkOut) : Buffer.alloc(0)
      fs.rmSync(checkOut, { force: true })
      if (res.status !== 0 || !res.stdout.startsWith('200 ') || !body.equals(expected[w])) {
        wrong.push(`${id} /${w}: curl got "${res.stdout}" ${res.stderr.trim()} (${body.length} bytes, expected 200 and ${expected[w].length} bytes${body.length === expected[w].length ? ', other bytes' : ''})`)
      }
    }
  }
  if (wrong.length) throw new Error(`wrong responses through nginx:\n${wrong.join('\n')}`)
  console.error(`bench: curl through nginx: ${fronts.size} servers x 4 workloads answered with the right bytes`)

  const problems = []
  const runCell = (p, cell, seconds, label) => {
    const inst = instances.get(`${p.key}|${cell.instance}`)
    const front = fronts.get(serverFor(p, cell))
    resetPeakRss(inst.pid)
    const cpu0 = procCpuMs(inst.pid)
    const threads0 = threadCpuMs(inst.pid)
    const w = runWrk(front, cell, seconds)
    const cpu1 = procCpuMs(inst.pid)
    const threads1 = threadCpuMs(inst.pid)
    w.cpuUsPerReq = ((cpu1 - cpu0) * 1000) / w.requests
    // us per request on each kind of thread (Node peers; the C peer is all 'other')
    w.threads = Object.fromEntries(Object.keys(threads1).map((k) => [k, ((threads1[k] - threads0[k]) * 1000) / w.requests]))
    w.rss = peakRssMiB(inst.pid)
    // Little's law: with every connection served, rps x mean latency ~ connections.
    w.inFlight = (w.rps * w.meanMs) / 1000
    const what = `${label} ${cell.id} ${p.key}`
    if (w.non2xx || w.socketErrors) problems.push(`${what}: ${w.non2xx} non-2xx; ${w.socketErrorText || '0 socket errors'}`)
    if (w.inFlight < cell.conns * 0.5) problems.push(`${what}: only ~${w.inFlight.toFixed(1)} of ${cell.conns} connections were being served`)
    if (cell.size && !(w.bytesRead / w.requests >= cell.size * 0.99)) problems.push(`${what}: ${fmt(w.bytesRead / w.requests)} bytes read per response, expected over ${cell.size}`)
    return w
  }

  if (WARMUP > 0) for (const { p, cell } of warmups.values()) runCell(p, cell, WARMUP, 'warm-up')
  const results = new Map(cells.map((c) => [c.id, Object.fromEntries(c.peers.map((p) => [p.key, []]))]))
  for (let r = 0; r < ROUNDS; r++) {
    for (const cell of cells) {
      for (const p of cell.peers) {
        const w = runCell(p, cell, SECONDS, `round ${r + 1}`)
        results.get(cell.id)[p.key].push(w)
        console.error(`round ${r + 1}/${ROUNDS} ${cell.id} ${p.key}: ${fmt(w.rps)} req/s, p99 ${fmt(w.p99, 2)} ms, ${fmt(w.cpuUsPerReq, 1)} us CPU/req${p.key === 'loop' || p.key === 'http' ? ` (JS ${fmt(w.threads.js, 1)}, poller ${fmt(w.threads.poller, 1)}, workers ${fmt(w.threads.workers, 1)}, other ${fmt(w.threads.other, 1)})` : ''}, RSS ${fmt(w.rss, 1)} MiB, in flight ${fmt(w.inFlight, 1)}`)
      }
    }
  }

  // Event-loop health under LATE_CONNS concurrent requests (the accept loop app).
  const loopInst = instances.get('loop|unix')
  let late, lateRun
  if (loopInst && fronts.has('loop|unix|on')) {
    await loopInst.ask('reset')
    const cell = { workload: 'hello', conns: LATE_CONNS, keep: true, transport: 'unix', instance: 'unix', id: `lateness-${LATE_CONNS}`, size: 0 }
    lateRun = runCell({ key: 'loop', ...PEERS.loop }, cell, SECONDS, 'lateness')
    late = await loopInst.ask('report')
  }

  // Stop everything, then read nginx's logs.
  for (const inst of instances.values()) inst.child.kill('SIGTERM')
  nginx.kill('SIGQUIT')
  await waitFor(() => [...instances.values()].every((i) => i.child.exitCode !== null || i.child.signalCode !== null) && (nginx.exitCode !== null || nginx.signalCode !== null), 5000, 'the apps and nginx to exit').catch((err) => console.error(`bench: ${err.message}; killing them`))
  for (const file of fs.readdirSync(tmp).filter((f) => /^error.*\.log$/.test(f))) {
    const errors = fs.readFileSync(path.join(tmp, file), 'utf8').split('\n').filter((l) => /\[(error|crit|alert|emerg)\]/.test(l))
    if (errors.length) problems.push(`nginx ${file}: ${errors.length} errors, first:\n${errors.slice(0, 3).join('\n')}`)
  }
  if (!canResetPeak) console.error('bench: /proc/PID/clear_refs is not writable: peak RSS is the peak since the app started')

  // ---- summaries
  const report = { peers: peerList, baseKey, results: [], late, lateRun, lateConns: LATE_CONNS }
  const summary = {}
  for (const cell of cells) {
    const rows = {}
    for (const p of cell.peers) {
      const ws = results.get(cell.id)[p.key]
      const rps = median(ws.map((w) => w.rps))
      rows[p.key] = {
        rps, p50: median(ws.map((w) => w.p50)), p99: median(ws.map((w) => w.p99)), cpu: median(ws.map((w) => w.cpuUsPerReq)),
        rss: Math.max(...ws.map((w) => w.rss)), errors: ws.reduce((a, w) => a + w.non2xx + w.socketErrors, 0),
        mibps: cell.size ? (rps * cell.size) / 1024 ** 2 : NaN,
        note: p.noKeepConn ? 'keep_conn off: it ignores FCGI_KEEP_CONN' : p.via === 'proxy' ? (cell.keep ? 'upstream HTTP/1.1 keepalive' : 'no upstream keepalive') : undefined,
      }
    }
    // A peer without keep_conn runs the keep_conn-off cell as its "on" cell.
    const footnote = cell.peers.length < peerList.length
      ? `${peerList.filter((p) => !cell.peers.includes(p)).map((p) => p.name).join(', ')}: always keep_conn off, see the keep_conn-on table of the same cell.`
      : undefined
    report.results.push({ cell, rows, footnote })
    summary[cell.id] = rows
  }
  const scalingCells = cells.filter((c) => c.group === 'scaling')
  if (scalingCells.length) {
    const byPeer = {}
    for (const p of peerList) {
      byPeer[p.key] = {}
      for (const c of scalingCells) if (summary[c.id][p.key]) byPeer[p.key][c.conns] = summary[c.id][p.key]
    }
    report.scaling = { conns: scalingCells.map((c) => c.conns), byPeer }
  }

  // ---- the issue's targets (hello world, 32 connections, unix, keep_conn on unless stated)
  const get = (id, key) => summary[id]?.[key]
  const h32 = 'hello-32-unix-on'
  const targets = []
  const target = (name, measure) => {
    try {
      const [measured, met] = measure()
      targets.push({ name, measured, met })
    } catch { targets.push({ name, measured: 'n/a', met: null }) }
  }
  const must = (x) => { if (!x || !Number.isFinite(x.rps)) throw new Error('missing'); return x }
  target('accept loop CPU/req <= 1.25x C (hello, 32)', () => {
    const l = must(get(h32, 'loop')), c = must(get(h32, 'c'))
    return [`${fmt(l.cpu, 1)} vs ${fmt(c.cpu, 1)} us (${fmt(l.cpu / c.cpu, 2)}x)`, l.cpu <= 1.25 * c.cpu]
  })
  target('accept loop req/s >= 0.9x C (hello, 32)', () => {
    const l = must(get(h32, 'loop')), c = must(get(h32, 'c'))
    return [`${fmt(l.rps)} vs ${fmt(c.rps)} (${fmt(l.rps / c.rps, 2)}x)`, l.rps >= 0.9 * c.rps]
  })
  target("createServer CPU/req <= node:http's (hello, 32)", () => {
    const h = must(get(h32, 'http')), n = must(get(h32, 'node-http'))
    return [`${fmt(h.cpu, 1)} vs ${fmt(n.cpu, 1)} us (${fmt(h.cpu / n.cpu, 2)}x)`, h.cpu <= n.cpu]
  })
  target("createServer req/s >= 5x node-fastcgi's (hello, 32)", () => {
    const h = must(get(h32, 'http')), n = must(get(h32, 'node-fastcgi'))
    return [`${fmt(h.rps)} vs ${fmt(n.rps)} (${fmt(h.rps / n.rps, 2)}x)`, h.rps >= 5 * n.rps]
  })
  for (const [id, label] of [['1m-32-unix-on', '1 MiB download'], ['echo-32-unix-on', '1 MiB echo']]) {
    for (const key of ['loop', 'http']) {
      target(`${key === 'loop' ? 'accept loop' : 'createServer'} ${label} throughput >= 0.8x C (32)`, () => {
        const o = must(get(id, key)), c = must(get(id, 'c'))
        return [`${fmt(o.mibps)} vs ${fmt(c.mibps)} MiB/s (${fmt(o.mibps / c.mibps, 2)}x)`, o.mibps >= 0.8 * c.mibps]
      })
    }
  }
  target(`event loop: 1 ms timer lateness p99 < 10 ms (accept loop, ${LATE_CONNS} connections)`, () => {
    if (!late) throw new Error('missing')
    return [`${fmt(late.timerLateP99, 2)} ms`, late.timerLateP99 < 10]
  })
  target('accept loop peak RSS at 1024 connections < 150 MiB', () => {
    const l = must(get('hello-1024-unix-on', 'loop'))
    return [`${fmt(l.rss, 1)} MiB`, l.rss < 150]
  })
  report.targets = targets

  const elapsed = (Date.now() - started) / 1000
  const tables = resultsMarkdown(report)
  console.log(`\nnginx ${machine().nginx}, wrk through nginx; ${ROUNDS} interleaved round(s) of ${SECONDS} s per cell, medians; ${os.cpus().length} cores; took ${Math.floor(elapsed / 60)} min ${Math.round(elapsed % 60)} s\n`)
  console.log(tables)
  const missed = targets.filter((t) => t.met === false).length
  console.log(`\ntargets: ${targets.filter((t) => t.met).length} met, ${missed} missed, ${targets.filter((t) => t.met === null).length} not measured`)

  if (problems.length) {
    console.error(`\nFAILED (no docs written):\n${problems.join('\n')}`)
    process.exitCode = 1
    return
  }
  console.error('\nbench: passed (no errors)')
  if (WRITE_DOCS) {
    fs.mkdirSync(DOCS_DIR, { recursive: true })
    const svgName = 'benchmarks-concurrency.svg'
    if (report.scaling) {
      fs.writeFileSync(path.join(DOCS_DIR, svgName), concurrencySvg(report.scaling, peerList, 'Hello World through nginx: req/s by concurrency',
        `unix socket, fastcgi_keep_conn on (node-fastcgi: off); medians of ${ROUNDS} round(s) of ${SECONDS} s; ${os.cpus().length} cores, ${new Date().toISOString().slice(0, 10)}`))
    }
    fs.writeFileSync(path.join(DOCS_DIR, 'benchmarks.md'), docsMarkdown({ report, tables, cells, runs, elapsed, estimate, svgName: report.scaling ? svgName : undefined }))
    console.error(`bench: wrote ${path.join(DOCS_DIR, 'benchmarks.md')}${report.scaling ? ` and ${path.join(DOCS_DIR, svgName)}` : ''}`)
    // The README's headline table, between its markers, when the docs are
    // the repository's own (not --quick's temporary ones).
    const headline = headlineTable(report, peerList)
    const readme = path.join(root, 'README.md')
    if (headline && DOCS_DIR === path.join(root, 'docs') && fs.existsSync(readme)) {
      const text = fs.readFileSync(readme, 'utf8')
      const start = '<!-- bench:headline:start -->'
      const end = '<!-- bench:headline:end -->'
      const a = text.indexOf(start)
      const b = text.indexOf(end)
      if (a >= 0 && b > a) {
        fs.writeFileSync(readme, `${text.slice(0, a + start.length)}\n${headline}\n${text.slice(b)}`)
        console.error(`bench: updated the headline table in ${readme}`)
      }
    }
  }
}

function docsMarkdown({ report, tables, cells, runs, elapsed, estimate, svgName }) {
  const m = machine()
  const reduced = QUICK || WARMUP < 1 || ROUNDS < 3 || SECONDS < 5 || Object.keys(PEERS).some((k) => !PEER_KEYS.includes(k)) || Object.keys(MATRIX).some((g) => !GROUP_KEYS.includes(g))
  const groupsText = {
    scaling: `Hello World at ${MATRIX.scaling.map((c) => c.conns).join(', ')} connections (unix socket, keep_conn on): the scaling table and the chart`,
    workloads: '64 KiB response, 1 MiB download and 1 MiB POST echoed back, at 32 connections (unix socket, keep_conn on)',
    keepoff: 'Hello World at 32 connections with fastcgi_keep_conn off (for node:http: no upstream keepalive), unix socket',
    tcp: 'Hello World at 32 connections over TCP on 127.0.0.1 (keep_conn on)',
  }
  return `# Benchmarks

${reduced ? `> **Reduced run** (${QUICK ? '--quick: ' : ''}${ROUNDS} round(s) of ${SECONDS} s${optStr('peers', null) ? `, peers ${PEER_KEYS.join(',')}` : ''}${optStr('groups', null) ? `, groups ${GROUP_KEYS.join(',')}` : ''}): a smoke test, not representative figures. \`npm run bench\` runs the full suite.\n\n` : ''}Generated by \`${commandLine()}\` (scripts/bench-core.mjs) on ${new Date().toISOString()}, in ${Math.floor(elapsed / 60)} min ${Math.round(elapsed % 60)} s (estimated ${Math.floor(estimate / 60)} min ${Math.round(estimate % 60)} s). The run passed: no non-2xx response, no socket error, no nginx error, no short response, every connection served.

## Machine

| | |
| --- | --- |
| CPU | ${m.cpu} |
| cores | ${m.cores} |
| memory | ${m.memory} |
| kernel | ${m.kernel} |
| Node.js | ${m.node} |
| nginx | ${m.nginx} |
| wrk | ${m.wrk} |
| system libfcgi (C peer) | ${m.libfcgi} |
| libfcgi for Node | commit ${m.commit}${m.dirty ? ' (with uncommitted changes)' : ''} |

wrk, nginx and the apps share these cores: the figures compare the peers with each other on one machine, not with other machines.

## Method

- Everything goes through nginx (one worker process, \`access_log off\`): wrk (2 threads, \`--latency\`) -> nginx -> the app. FastCGI peers by \`fastcgi_pass\`; node:http by \`proxy_pass\`.
- Upstream connections: \`keepalive 32\` (and \`keepalive_requests 100000\`) in the upstream block with \`fastcgi_keep_conn on\` (node:http: HTTP/1.1 keepalive), unless the cell says keep_conn off. node-fastcgi 2.0.0 ignores FCGI_KEEP_CONN (it closes each connection), so it always runs with keep_conn off.
- Each peer runs as three processes, all started before the first run and kept to the end: one for Hello World over the unix socket (the scaling cells, keep_conn off, the event-loop run), one for the 64 KiB, 1 MiB and echo workloads, one for TCP. So the memory that 1 MiB bodies leave behind does not show in the Hello World figures.
- For 1024 connections: wrk, nginx and the C app run with an open-files limit of ${NOFILE} (\`ulimit -n\`: 65535 where it can be raised, else the hard limit), nginx with \`worker_connections 16384\` and \`worker_rlimit_nofile\`, every listening socket with a backlog of 4096. The C app has 256 threads, our accept loop 64 \`Request\`s, createServer 256 requests in parallel.
- nginx keeps 1 MiB bodies in memory both ways (\`client_body_buffer_size 2m\`, \`fastcgi_buffers 16 64k\`, \`proxy_buffers 16 64k\`, no temporary files).
- The peers: ${report.peers.map((p) => p.name).join('; ')}. The C app is [bench/c-threaded-hello.c](../bench/c-threaded-hello.c); ours are [bench/accept-loop-app.mjs](../bench/accept-loop-app.mjs) and [bench/hello-apps.mjs](../bench/hello-apps.mjs) (also node:http and node-fastcgi), all serving [the same workloads](../bench/bodies.mjs): \`/hello\`, \`/64k\`, \`/1m\`, \`/echo\` (wrk posts 1 MiB with a Lua script). Each is checked once with curl through nginx (status and bytes) before measuring.
- Matrix (${cells.length} cells, ${runs} runs per round):
${GROUP_KEYS.map((g) => `  - ${groupsText[g]}`).join('\n')}
- ${ROUNDS} interleaved round(s): each cell runs against every peer in turn, then the next cell, and so on, then the next round${WARMUP > 0 ? `; a ${WARMUP} s warm-up per peer, upstream and workload first` : ''}. ${SECONDS} s per run. Tables show medians over the rounds.
- app CPU/req: the app process's user + system CPU time (/proc/PID/stat, all threads) over the run, divided by the requests served. It leaves out nginx and wrk.
- peak RSS: the app's VmHWM during the run (reset before each run through /proc/PID/clear_refs), highest of the rounds.
- MiB/s: req/s x body size (the echo moves that much each way). Every echo app reads the whole body before it answers: nginx stops sending the request body to the upstream once it has passed the response header on to the client, so an echo that streams stalls as soon as the body outgrows the socket buffers (unix sockets: ~200 KiB).
- Event loop: after the matrix, the accept-loop app (unix socket, keep_conn on) serves Hello World to ${LATE_CONNS} connections for ${SECONDS} s while a 1 ms interval timer records how late it fires (and \`monitorEventLoopDelay\` runs); the timer runs only then.
- Any non-2xx response, socket error (wrk: connect, read, write, timeout), error in nginx's logs, response shorter than its body, or a run where rps x mean latency is under half the connections (not every connection served) fails the run, and then this file is not written.

## Results

${svgName ? `![req/s by concurrency](${svgName})\n\n` : ''}${tables}
`
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
}).finally(() => cleanup())
