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
// usage: node scripts/bench-core.mjs [--peers c,loop,http,node-http,node-fastcgi] [--rounds 3]
//        [--seconds 8] [--connections 32] [--late-connections 256]
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

// The peers: each is a process serving Hello World, reached through nginx
// either by fastcgi_pass (unix socket) or by proxy_pass (node:http, TCP).
const PEERS = {
  c: { name: 'C libfcgi, threaded (256 threads), system libfcgi', via: 'fastcgi' },
  loop: { name: 'libfcgi for Node: accept loop (64 Requests)', via: 'fastcgi' },
  http: { name: 'libfcgi for Node: createServer (node:http API)', via: 'fastcgi' },
  'node-http': { name: "Node's http.createServer behind proxy_pass", via: 'proxy' },
  // node-fastcgi 2.0.0 ignores FCGI_KEEP_CONN (it closes after each request),
  // so nginx must not keep its connections.
  'node-fastcgi': { name: 'node-fastcgi 2.0.0 (pure JS, fastcgi_keep_conn off)', via: 'fastcgi', noKeepConn: true },
}
const argPeers = (() => {
  const i = args.indexOf('--peers')
  return i >= 0 ? args[i + 1].split(',') : ['c', 'loop']
})()

async function startPeer(key, cBin) {
  const sock = path.join(tmp, `${key}.sock`)
  const port = PEERS[key].via === 'proxy' ? await freePort() : undefined
  let child
  if (key === 'c') {
    child = spawn(cBin, [sock, '256'], { stdio: ['ignore', 'pipe', 'inherit'], detached: true })
    children.push(child)
    await waitFor(() => fs.existsSync(sock), 10000, 'the C app')
    return { key, ...PEERS[key], child, sock, port }
  }
  const script = key === 'loop' ? 'bench/accept-loop-app.mjs' : 'bench/hello-apps.mjs'
  const argv = key === 'loop' ? [sock, '64'] : [{ http: 'create-server', 'node-http': 'node-http', 'node-fastcgi': 'node-fastcgi' }[key], port ?? sock]
  child = spawn(process.execPath, [path.join(root, script), ...argv], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], detached: true })
  children.push(child)
  let ready = false
  const replies = []
  child.on('message', (m) => { if (m === 'ready') ready = true; else replies.push(m) })
  await waitFor(() => ready, 10000, `${key} to listen`)
  const ask = async (m) => { replies.length = 0; child.send(m); await waitFor(() => replies.length > 0, 5000, `reply to ${m}`); return replies[0] }
  return { key, ...PEERS[key], child, sock, port, ask }
}

async function main() {
  for (const k of argPeers) if (!PEERS[k]) throw new Error(`unknown peer ${k} (known: ${Object.keys(PEERS).join(', ')})`)
  need('nginx', 'nginx-light')
  need('wrk', 'wrk')
  need('gcc', 'gcc')
  if (argPeers.includes('c')) needHeader('/usr/include/fcgiapp.h', 'libfcgi-dev')
  if (!fs.existsSync(path.join(root, 'dist/index.js'))) throw new Error('dist/ is missing: run npx tsup (bash scripts/test.sh does)')

  const cBin = path.join(tmp, 'c-threaded-hello')
  if (argPeers.includes('c')) execFileSync('gcc', ['-O2', '-o', cBin, path.join(root, 'bench/c-threaded-hello.c'), '-lfcgi', '-lpthread'], { stdio: 'inherit' })
  const peers = []
  for (const k of argPeers) peers.push(await startPeer(k, cBin))

  let servers = ''
  for (const p of peers) {
    p.front = await freePort()
    p.rounds = []
    if (p.via === 'fastcgi') {
      servers += `  upstream up_${p.key.replace('-', '_')} { server unix:${p.sock}; ${p.noKeepConn ? '' : 'keepalive 32;'} }
  server { listen 127.0.0.1:${p.front}; error_log ${tmp}/error-${p.key}.log warn; location / { include /etc/nginx/fastcgi_params; fastcgi_keep_conn ${p.noKeepConn ? 'off' : 'on'}; fastcgi_pass up_${p.key.replace('-', '_')}; } }\n`
    } else {
      servers += `  upstream up_${p.key.replace('-', '_')} { server 127.0.0.1:${p.port}; keepalive 32; }
  server { listen 127.0.0.1:${p.front}; error_log ${tmp}/error-${p.key}.log warn; location / { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; proxy_pass http://up_${p.key.replace('-', '_')}; } }\n`
    }
  }
  const conf = `
daemon off; master_process on; worker_processes 1; pid ${tmp}/nginx.pid;
error_log ${tmp}/error.log warn;
${process.getuid?.() === 0 ? 'user root;' : ''}
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${tmp}/body; fastcgi_temp_path ${tmp}/fastcgi; proxy_temp_path ${tmp}/proxy;
  uwsgi_temp_path ${tmp}/uwsgi; scgi_temp_path ${tmp}/scgi;
${servers}}`
  fs.writeFileSync(path.join(tmp, 'nginx.conf'), conf)
  const nginx = spawn('nginx', ['-p', tmp, '-c', path.join(tmp, 'nginx.conf')], { stdio: 'inherit', detached: true })
  children.push(nginx)
  await waitFor(() => fs.existsSync(path.join(tmp, 'nginx.pid')), 10000, 'nginx')
  await new Promise((r) => setTimeout(r, 200))

  for (const p of peers) runWrk(p.front, CONNS, 2) // warm-up
  for (let r = 0; r < ROUNDS; r++) {
    for (const p of peers) {
      const cpu0 = procCpuMs(p.child.pid)
      const w = runWrk(p.front, CONNS, SECONDS)
      const cpu1 = procCpuMs(p.child.pid)
      w.cpuUsPerReq = ((cpu1 - cpu0) * 1000) / w.requests
      // Little's law: with every connection served, rps x mean latency ~ connections.
      w.inFlight = (w.rps * w.meanMs) / 1000
      p.rounds.push(w)
      console.error(`round ${r + 1} ${p.name}: ${w.rps.toFixed(0)} req/s, p99 ${w.p99} ms, ${w.cpuUsPerReq.toFixed(1)} us CPU/req, in flight ${w.inFlight.toFixed(1)}`)
    }
  }

  // Event-loop health under LATE_CONNS concurrent requests (the accept loop app).
  const loopPeer = peers.find((p) => p.key === 'loop')
  let late, lateRun
  if (loopPeer) {
    await loopPeer.ask('reset')
    lateRun = runWrk(loopPeer.front, LATE_CONNS, SECONDS)
    late = await loopPeer.ask('report')
  }

  const problems = []
  for (const file of fs.readdirSync(tmp).filter((f) => /^error.*\.log$/.test(f))) {
    const errors = fs.readFileSync(path.join(tmp, file), 'utf8').split('\n').filter((l) => /\[(error|crit|alert|emerg)\]/.test(l))
    if (errors.length) problems.push(`nginx ${file}: ${errors.length} errors, first:\n${errors.slice(0, 3).join('\n')}`)
  }
  for (const p of peers) {
    for (const w of p.rounds) {
      if (w.non2xx || w.socketErrors) problems.push(`${p.name}: ${w.non2xx} non-2xx, ${w.socketErrors} socket errors`)
      if (w.inFlight < CONNS * 0.5) problems.push(`${p.name}: only ~${w.inFlight.toFixed(1)} of ${CONNS} connections were being served`)
    }
  }
  if (lateRun && (lateRun.non2xx || lateRun.socketErrors)) problems.push(`lateness run: ${lateRun.non2xx} non-2xx, ${lateRun.socketErrors} socket errors`)

  const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a')
  const rows = peers.map((p) => {
    const m = (k) => median(p.rounds.map((w) => w[k]))
    return { p, rps: m('rps'), p50: m('p50'), p99: m('p99'), cpu: m('cpuUsPerReq'), rss: peakRssMiB(p.child.pid), errs: p.rounds.reduce((a, w) => a + w.non2xx + w.socketErrors, 0) }
  })
  const b = rows[0]
  console.log(`\nHello World through nginx 1.22 (fastcgi_keep_conn on unless noted / proxy_pass with HTTP/1.1 keepalive; upstream keepalive 32), wrk ${CONNS} connections, ${ROUNDS} interleaved rounds of ${SECONDS} s, medians; ${os.cpus().length} cores`)
  console.log(`| peer | req/s | ratio to ${b.p.key} | p50 ms | p99 ms | app CPU/req (us) | peak RSS MiB | errors |`)
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |')
  for (const r of rows) {
    console.log(`| ${r.p.name} | ${fmt(r.rps)} | ${fmt(r.rps / b.rps, 2)} | ${fmt(r.p50, 2)} | ${fmt(r.p99, 2)} | ${fmt(r.cpu, 1)} | ${fmt(r.rss, 1)} | ${r.errs} |`)
  }
  if (late) {
    console.log(`\nEvent loop under ${LATE_CONNS} concurrent requests (${fmt(lateRun.rps)} req/s): 1 ms interval timer late by p50 ${fmt(late.timerLateP50, 2)} ms, p99 ${fmt(late.timerLateP99, 2)} ms, max ${fmt(late.timerLateMax, 2)} ms over ${late.timerSamples} ticks; monitorEventLoopDelay p99 ${fmt(late.loopDelayP99, 2)} ms; native threads ${late.stats.threads}`)
    console.log(`verdict: timer p99 lateness ${late.timerLateP99 < 10 ? '<' : '>='} 10 ms target`)
  }
  if (problems.length) {
    console.error(`\nFAILED:\n${problems.join('\n')}`)
    process.exitCode = 1
  }
  for (const p of peers) p.child.kill('SIGTERM')
  nginx.kill('SIGQUIT')
  await new Promise((r) => setTimeout(r, 300))
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
}).finally(() => cleanup())
