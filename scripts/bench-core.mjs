#!/usr/bin/env node
// Benchmark of the native core (issue: "the accept loop next to C libfcgi").
//
// Starts nginx, a C libfcgi threaded hello world (bench/c-threaded-hello.c,
// built against the system libfcgi) and our accept-loop app
// (bench/accept-loop-app.mjs), then runs wrk through nginx against each in
// interleaved rounds (C, ours, C, ours, ...), and prints medians and ratios:
// req/s, p50/p99 latency, app CPU per request, peak RSS, errors. Then it
// measures the lateness of a 1 ms interval timer in our app under 256
// concurrent requests. Any non-2xx response, socket error or upstream error in
// nginx's log fails the run, and so does a run where wrk's figures show that
// not every connection was being served.
//
// usage: node scripts/bench-core.mjs [--rounds 3] [--seconds 8] [--connections 32]
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? Number(args[i + 1]) : dflt
}
const ROUNDS = opt('rounds', 3)
const SECONDS = opt('seconds', 8)
const CONNS = opt('connections', 32)
const LATE_CONNS = opt('late-connections', 256)

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

function need(cmd, pkg) {
  if (spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0) return
  if (process.getuid?.() !== 0) throw new Error(`${cmd} is missing: sudo apt-get install -y ${pkg}`)
  console.error(`bench: installing ${pkg}`)
  execFileSync('apt-get', ['install', '-y', '-qq', pkg], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
}
function needHeader(header, pkg) {
  if (fs.existsSync(header)) return
  if (process.getuid?.() !== 0) throw new Error(`${header} is missing: sudo apt-get install -y ${pkg}`)
  console.error(`bench: installing ${pkg}`)
  execFileSync('apt-get', ['install', '-y', '-qq', pkg], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
}

function waitFor(cond, ms, what) {
  const end = Date.now() + ms
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (cond()) return resolve()
      if (Date.now() > end) return reject(new Error(`timed out waiting for ${what}`))
      setTimeout(tick, 20)
    }
    tick()
  })
}

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

function procCpuMs(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(fields[11]) + Number(fields[12]) // utime + stime
  return (ticks * 1000) / 100 // USER_HZ is 100 on Linux
}
function peakRssMiB(pid) {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) / 1024 : NaN
}

function parseWrk(out) {
  const num = (re) => { const m = re.exec(out); return m ? m[1] : undefined }
  const dur = (s) => {
    if (!s) return NaN
    const m = /([\d.]+)(us|ms|s)/.exec(s)
    return m ? Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1) : NaN
  }
  const requests = Number(num(/(\d+) requests in/))
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)
  return {
    rps: Number(num(/Requests\/sec:\s+([\d.]+)/)),
    requests,
    meanMs: dur(num(/Latency\s+(\S+)/)),
    p50: dur(num(/50%\s+(\S+)/)),
    p99: dur(num(/99%\s+(\S+)/)),
    non2xx: Number(num(/Non-2xx or 3xx responses: (\d+)/) ?? 0),
    socketErrors: socketErrors ? socketErrors.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
  }
}

function runWrk(port, conns, seconds) {
  const out = execFileSync('wrk', ['-t2', `-c${conns}`, `-d${seconds}s`, '--latency', `http://127.0.0.1:${port}/`], {
    encoding: 'utf8', timeout: (seconds + 30) * 1000,
  })
  return parseWrk(out)
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }

async function main() {
  need('nginx', 'nginx-light')
  need('wrk', 'wrk')
  need('gcc', 'gcc')
  needHeader('/usr/include/fcgiapp.h', 'libfcgi-dev')
  if (!fs.existsSync(path.join(root, 'dist/index.js'))) throw new Error('dist/ is missing: run npx tsup (bash scripts/test.sh does)')

  const cBin = path.join(tmp, 'c-threaded-hello')
  execFileSync('gcc', ['-O2', '-o', cBin, path.join(root, 'bench/c-threaded-hello.c'), '-lfcgi', '-lpthread'], { stdio: 'inherit' })

  const cSock = path.join(tmp, 'c.sock')
  const nodeSock = path.join(tmp, 'node.sock')
  const c = spawn(cBin, [cSock, '256'], { stdio: ['ignore', 'pipe', 'inherit'], detached: true })
  children.push(c)
  const app = spawn(process.execPath, [path.join(root, 'bench/accept-loop-app.mjs'), nodeSock, '64'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], detached: true })
  children.push(app)
  let appReady = false
  const appReplies = []
  app.on('message', (m) => { if (m === 'ready') appReady = true; else appReplies.push(m) })
  await waitFor(() => fs.existsSync(cSock) && appReady, 10000, 'the apps to listen')
  const ask = async (m) => { appReplies.length = 0; app.send(m); await waitFor(() => appReplies.length > 0, 5000, `app reply to ${m}`); return appReplies[0] }

  const [cPort, nodePort] = [await freePort(), await freePort()]
  const conf = `
daemon off; master_process on; worker_processes 1; pid ${tmp}/nginx.pid;
error_log ${tmp}/error.log warn;
${process.getuid?.() === 0 ? 'user root;' : ''}
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${tmp}/body; fastcgi_temp_path ${tmp}/fastcgi; proxy_temp_path ${tmp}/proxy;
  uwsgi_temp_path ${tmp}/uwsgi; scgi_temp_path ${tmp}/scgi;
  upstream c_app { server unix:${cSock}; keepalive 32; }
  upstream node_app { server unix:${nodeSock}; keepalive 32; }
  server { listen 127.0.0.1:${cPort}; location / { include /etc/nginx/fastcgi_params; fastcgi_keep_conn on; fastcgi_pass c_app; } }
  server { listen 127.0.0.1:${nodePort}; location / { include /etc/nginx/fastcgi_params; fastcgi_keep_conn on; fastcgi_pass node_app; } }
}`
  fs.writeFileSync(path.join(tmp, 'nginx.conf'), conf)
  const nginx = spawn('nginx', ['-p', tmp, '-c', path.join(tmp, 'nginx.conf')], { stdio: 'inherit', detached: true })
  children.push(nginx)
  await waitFor(() => fs.existsSync(path.join(tmp, 'nginx.pid')), 10000, 'nginx')
  await new Promise((r) => setTimeout(r, 200))

  const peers = [
    { name: 'C libfcgi, threaded (256 threads), system libfcgi', port: cPort, pid: c.pid, rounds: [] },
    { name: 'libfcgi for Node: accept loop, 64 Requests', port: nodePort, pid: app.pid, rounds: [] },
  ]
  // warm-up
  for (const p of peers) runWrk(p.port, CONNS, 2)

  for (let r = 0; r < ROUNDS; r++) {
    for (const p of peers) {
      const cpu0 = procCpuMs(p.pid)
      const w = runWrk(p.port, CONNS, SECONDS)
      const cpu1 = procCpuMs(p.pid)
      w.cpuUsPerReq = ((cpu1 - cpu0) * 1000) / w.requests
      // Little's law: with every connection served, rps x mean latency ~ connections.
      w.inFlight = (w.rps * w.meanMs) / 1000
      p.rounds.push(w)
      console.error(`round ${r + 1} ${p.name}: ${w.rps.toFixed(0)} req/s, p99 ${w.p99} ms, ${w.cpuUsPerReq.toFixed(1)} us CPU/req, in flight ${w.inFlight.toFixed(1)}`)
    }
  }

  // Event-loop health under LATE_CONNS concurrent requests.
  await ask('reset')
  const lateRun = runWrk(nodePort, LATE_CONNS, SECONDS)
  const late = await ask('report')

  const errors = fs.readFileSync(path.join(tmp, 'error.log'), 'utf8').split('\n').filter((l) => /\[(error|crit|alert|emerg)\]/.test(l))
  const problems = []
  for (const p of peers) {
    for (const w of p.rounds) {
      if (w.non2xx || w.socketErrors) problems.push(`${p.name}: ${w.non2xx} non-2xx, ${w.socketErrors} socket errors`)
      if (w.inFlight < CONNS * 0.5) problems.push(`${p.name}: only ~${w.inFlight.toFixed(1)} of ${CONNS} connections were being served`)
    }
  }
  if (lateRun.non2xx || lateRun.socketErrors) problems.push(`lateness run: ${lateRun.non2xx} non-2xx, ${lateRun.socketErrors} socket errors`)
  if (errors.length) problems.push(`nginx error log:\n${errors.slice(0, 10).join('\n')}`)

  const base = peers[0]
  const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a')
  const rows = peers.map((p) => {
    const m = (k) => median(p.rounds.map((w) => w[k]))
    return { p, rps: m('rps'), p50: m('p50'), p99: m('p99'), cpu: m('cpuUsPerReq'), rss: peakRssMiB(p.pid), errs: p.rounds.reduce((a, w) => a + w.non2xx + w.socketErrors, 0) }
  })
  const b = rows[0]
  console.log(`\nHello World through nginx 1.22 (fastcgi_keep_conn on, upstream keepalive 32, unix socket), wrk ${CONNS} connections, ${ROUNDS} interleaved rounds of ${SECONDS} s, medians; ${os.cpus().length} cores`)
  console.log('| peer | req/s | ratio to C | p50 ms | p99 ms | app CPU/req (us) | peak RSS MiB | errors |')
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |')
  for (const r of rows) {
    console.log(`| ${r.p.name} | ${fmt(r.rps)} | ${fmt(r.rps / b.rps, 2)} | ${fmt(r.p50, 2)} | ${fmt(r.p99, 2)} | ${fmt(r.cpu, 1)} | ${fmt(r.rss, 1)} | ${r.errs} |`)
  }
  console.log(`\nEvent loop under ${LATE_CONNS} concurrent requests (${fmt(lateRun.rps)} req/s): 1 ms interval timer late by p50 ${fmt(late.timerLateP50, 2)} ms, p99 ${fmt(late.timerLateP99, 2)} ms, max ${fmt(late.timerLateMax, 2)} ms over ${late.timerSamples} ticks; monitorEventLoopDelay p99 ${fmt(late.loopDelayP99, 2)} ms; native threads ${late.stats.threads}`)
  console.log(`verdict: timer p99 lateness ${late.timerLateP99 < 10 ? '<' : '>='} 10 ms target`)
  void base
  if (problems.length) {
    console.error(`\nFAILED:\n${problems.join('\n')}`)
    process.exitCode = 1
  }
  app.kill('SIGTERM')
  nginx.kill('SIGQUIT')
  c.kill('SIGTERM')
  await new Promise((r) => setTimeout(r, 300))
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
}).finally(() => cleanup())
