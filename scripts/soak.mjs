#!/usr/bin/env node
// Soak test (`npm run soak`): N requests (default 1,000,000) of mixed kinds
// through nginx to a createServer() application, with the application's RSS,
// open fds and threads sampled from /proc along the way.
//
// Everything is started here: nginx (its own configuration in a temporary
// directory: one worker, access_log off, fastcgi_keep_conn on with upstream
// keepalive, fastcgi_request_buffering off so that uploads stream to the
// application), the application (this file with --app, in a child process,
// createServer from dist/), and the load:
//   - wrk (2 threads, --connections) with a Lua script cycling through
//     8 x GET /hello, 3 x GET /64k (a 64 KiB response), 1 x POST /upload
//     (256 KiB body, read whole by the application, which answers its length);
//   - an aborting client (--abort-clients connections in a loop): GET /slow
//     (answered after 20 ms) dropped after 5 ms, and POST /upload declaring
//     256 KiB that sends 64 KiB and drops the connection. nginx then closes
//     its upstream connection mid-request: the application sees the abort.
// The run stops at N requests as the application counts them (every request
// its listener saw, the aborted ones included).
//
// Samples (every --interval-ms, and printed every --print requests): requests
// served, VmRSS, open fds (/proc/PID/fd) and threads (/proc/PID/task).
// "idle" is measured after one request of each kind and a pause (the
// addon's core threads are up, nginx's upstream keepalive has expired);
// "after" once the load stopped, waiting (bounded) for nginx's kept
// connections to close and extra worker threads to exit on idleness (30 s).
// Verdict: RSS growth after the warm-up point (--warmup requests; the median
// RSS of the last tenth of the run minus that of the tenth after the warm-up
// point) below --limit-mib (10); fds and threads after <= idle; no
// non-2xx response and no socket error in wrk. Exit status 1 otherwise.
//
// Docs: with --docs (or by default for runs of >= 1,000,000 requests, unless
// --no-docs) it writes docs/soak-rss.svg (RSS over requests) and its section
// of docs/hardening.md (between the soak markers; the rest of the file is
// left alone).
//
// usage: node scripts/soak.mjs [--requests 1000000] [--connections 32] [--warmup N]
//          [--limit-mib 10] [--abort-clients 2] [--print N] [--interval-ms 500]
//          [--docs | --no-docs]
// The machine is shared and has 2 cores: expect 5-10k req/s (1M: 2-4 minutes).
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { esc, freePort, niceMax, options, parseWrk, sleep, waitFor, withTimeout } from './lib/script-util.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const args = process.argv.slice(2)
const { flag, optNum } = options(args)

const BODY_64K = Buffer.alloc(64 * 1024, 'k')
const UPLOAD_SIZE = 256 * 1024

// ---------------------------------------------------------------- the application (--app)

// (Dispatched at the end of the file, once every helper below is defined.)
async function appMain() {
  const where = args[args.indexOf('--app') + 1]
  const { createServer } = await import('../dist/index.js')
  let requests = 0
  let aborted = 0
  const server = createServer({ maxConns: 64 }, (req, res) => {
    requests++
    res.on('close', () => { if (!res.writableFinished) aborted++ })
    switch (req.url) {
      case '/hello':
        res.writeHead(200, { 'Content-Type': 'text/plain' })
        res.end('Hello World\n')
        break
      case '/64k':
        res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': BODY_64K.length })
        res.end(BODY_64K)
        break
      case '/upload': {
        let len = 0
        req.on('data', (chunk) => { len += chunk.length })
        req.on('end', () => {
          res.writeHead(200, { 'Content-Type': 'text/plain' })
          res.end(`${len}\n`)
        })
        req.on('error', () => {}) // aborted mid-body: 'close' above counts it
        break
      }
      case '/slow': {
        const t = setTimeout(() => { res.writeHead(200, { 'Content-Type': 'text/plain' }); res.end('slow\n') }, 20)
        res.on('close', () => clearTimeout(t))
        break
      }
      default:
        res.writeHead(404, { 'Content-Type': 'text/plain' })
        res.end('not found\n')
    }
  })
  process.on('message', (m) => { if (m === 'count') process.send({ requests, aborted }) })
  process.on('SIGTERM', () => server.close(() => process.exit(0)))
  server.listen({ path: where }, () => process.send('ready'))
}

// ---------------------------------------------------------------- the driver

async function main() {
  const N = optNum('requests', 1_000_000)
  const CONNS = optNum('connections', 32)
  const WARMUP = optNum('warmup', Math.min(100_000, Math.round(N / 10)))
  const LIMIT_MIB = optNum('limit-mib', 10)
  const ABORT_CLIENTS = optNum('abort-clients', 2)
  const PRINT_EVERY = optNum('print', Math.max(1000, Math.round(N / 20)))
  const INTERVAL = optNum('interval-ms', 500)
  const WRITE_DOCS = flag('docs') || (N >= 1_000_000 && !flag('no-docs'))
  const DOCS = path.join(root, 'docs')

  for (const [cmd, pkg] of [['nginx', 'nginx-light'], ['wrk', 'wrk']]) {
    if (spawnSync('sh', ['-c', `command -v ${cmd}`]).status !== 0) fail(`${cmd} is missing (apt-get install ${pkg})`)
  }
  if (!fs.existsSync(path.join(root, 'dist/index.js'))) fail('dist/ is missing: npx tsup')

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libfcgi-soak-'))
  const children = []
  const cleanup = () => {
    // nginx's workers outlive a killed master: each child has its own process group.
    for (const c of children) { try { process.kill(-c.pid, 'SIGKILL') } catch {} }
    try { fs.rmSync(tmp, { recursive: true, force: true }) } catch {}
  }
  process.on('exit', cleanup)
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { cleanup(); process.exit(130) })

  // ---- the application
  const sock = path.join(tmp, 'app.sock')
  const app = spawn(process.execPath, [fileURLToPath(import.meta.url), '--app', sock], {
    cwd: root, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], detached: true,
  })
  children.push(app)
  await withTimeout(new Promise((resolve, reject) => {
    app.once('message', (m) => (m === 'ready' ? resolve() : reject(new Error(`app said ${m}`))))
    app.once('exit', (code) => reject(new Error(`the app exited (${code})`)))
  }), 15000, 'the app to listen')
  // The app's count of requests its listener saw (and of responses cut short).
  const count = () => {
    const p = withTimeout(new Promise((resolve) => app.once('message', resolve)), 10000, 'the app to answer count')
    app.send('count')
    return p
  }

  // ---- nginx
  const port = await freePort()
  const conf = `
daemon off; master_process on; worker_processes 1; pid ${tmp}/nginx.pid;
error_log ${tmp}/error.log warn;
${process.getuid?.() === 0 ? 'user root;' : ''}
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path ${tmp}/body; fastcgi_temp_path ${tmp}/fastcgi; proxy_temp_path ${tmp}/proxy;
  uwsgi_temp_path ${tmp}/uwsgi; scgi_temp_path ${tmp}/scgi;
  client_max_body_size 1m; client_body_buffer_size 512k;
  fastcgi_buffer_size 64k; fastcgi_buffers 16 64k; fastcgi_max_temp_file_size 0;
  upstream app { server unix:${sock}; keepalive 32; keepalive_requests 1000000; keepalive_timeout 2s; }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / {
      include /etc/nginx/fastcgi_params;
      fastcgi_keep_conn on;
      fastcgi_request_buffering off;
      fastcgi_pass app;
    }
  }
}`
  fs.writeFileSync(path.join(tmp, 'nginx.conf'), conf)
  const nginx = spawn('nginx', ['-p', tmp, '-c', path.join(tmp, 'nginx.conf')], { stdio: 'inherit', detached: true })
  children.push(nginx)
  await waitFor(() => fs.existsSync(path.join(tmp, 'nginx.pid')) || nginx.exitCode !== null, 10000, 'nginx')
  if (nginx.exitCode !== null) fail(`nginx exited (${nginx.exitCode}); configuration:\n${conf}`)

  // ---- one request of each kind, checked; then the idle figures
  const base = `http://127.0.0.1:${port}`
  const upload = Buffer.alloc(UPLOAD_SIZE, 'u')
  const checks = [
    ['GET', '/hello', undefined, (b) => b.toString() === 'Hello World\n'],
    ['GET', '/64k', undefined, (b) => b.equals(BODY_64K)],
    ['POST', '/upload', upload, (b) => b.toString() === `${UPLOAD_SIZE}\n`],
    ['GET', '/slow', undefined, (b) => b.toString() === 'slow\n'],
  ]
  for (const [method, p, body, ok] of checks) {
    const r = await httpRequest(base + p, method, body)
    if (r.status !== 200 || !ok(r.body)) fail(`${method} ${p} through nginx: status ${r.status}, ${r.body.length} bytes`)
  }
  // nginx's kept upstream connections expire after 2 s.
  await sleep(3000)
  const pid = app.pid
  const idle = { ...proc(pid), requests: 0, before: (await count()).requests }
  console.log(`soak: ${N.toLocaleString('en')} requests, wrk ${CONNS} connections + ${ABORT_CLIENTS} aborting client(s); warm-up ${WARMUP.toLocaleString('en')} requests; app pid ${pid}`)
  console.log(`soak: idle: RSS ${mib(idle.rss)} MiB, ${idle.fds} fds, ${idle.threads} threads`)

  // ---- the load
  const lua = path.join(tmp, 'mix.lua')
  fs.writeFileSync(lua, `-- 8 x hello, 3 x 64 KiB, 1 x 256 KiB upload, in rotation
local body = string.rep("u", ${UPLOAD_SIZE})
local reqs = {}
local i = 0
init = function(args)
  for k = 1, 8 do reqs[#reqs + 1] = wrk.format("GET", "/hello") end
  for k = 1, 3 do reqs[#reqs + 1] = wrk.format("GET", "/64k") end
  reqs[#reqs + 1] = wrk.format("POST", "/upload", { ["Content-Type"] = "application/octet-stream" }, body)
end
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
`)
  const wrk = spawn('wrk', ['-t2', `-c${CONNS}`, '-d3600s', '--timeout', '10s', '-s', lua, `${base}/`], { stdio: ['ignore', 'pipe', 'inherit'], detached: true })
  children.push(wrk)
  let wrkOut = ''
  wrk.stdout.on('data', (d) => (wrkOut += d))
  const wrkExit = new Promise((resolve) => wrk.once('exit', resolve))

  let loadOn = true
  const abortStats = { slow: 0, upload: 0 }
  const aborters = Array.from({ length: ABORT_CLIENTS }, async (_, k) => {
    for (let n = 0; loadOn; n++) {
      if ((n + k) % 2 === 0) { await abortSlow(port); abortStats.slow++ } else { await abortUpload(port); abortStats.upload++ }
    }
  })

  const samples = [{ ...idle, t: 0 }]
  const t0 = Date.now()
  let nextPrint = PRINT_EVERY
  const printRow = (s) => console.log(`  ${String(s.requests.toLocaleString('en')).padStart(11)}  ${mib(s.rss).padStart(8)}  ${String(s.fds).padStart(5)}  ${String(s.threads).padStart(7)}  ${(s.t / 1000).toFixed(0).padStart(5)}`)
  console.log(`     requests  RSS MiB    fds  threads      s`)
  printRow(samples[0])
  const deadline = t0 + Math.max(600_000, N * 2) // 2 ms a request at worst (500 req/s)
  for (;;) {
    await sleep(INTERVAL)
    const c = await count()
    const s = { ...proc(pid), requests: c.requests - idle.before, aborted: c.aborted, t: Date.now() - t0 }
    samples.push(s)
    if (s.requests >= nextPrint || s.requests >= N) {
      printRow(s)
      while (nextPrint <= s.requests) nextPrint += PRINT_EVERY
    }
    if (s.requests >= N) break
    if (wrk.exitCode !== null) fail(`wrk exited early (${wrk.exitCode}):\n${wrkOut}`)
    if (app.exitCode !== null || app.signalCode !== null) fail(`the app exited (${app.exitCode ?? app.signalCode})`)
    if (Date.now() > deadline) fail(`${N} requests not reached after ${((Date.now() - t0) / 1000).toFixed(0)} s (${s.requests} served)`)
  }
  const loadEnd = samples.at(-1)
  // SIGINT: wrk stops and prints its summary.
  loadOn = false
  wrk.kill('SIGINT')
  await withTimeout(wrkExit, 15000, 'wrk to stop')
  await withTimeout(Promise.all(aborters), 15000, 'the aborting clients to stop')
  const elapsed = (Date.now() - t0) / 1000
  const final = await count()
  const w = parseWrk(wrkOut)

  // ---- back to idle?
  const settleEnd = Date.now() + 60_000 // nginx keepalive 2 s; extra worker threads exit after 30 s idle
  let after = proc(pid)
  while ((after.fds > idle.fds || after.threads > idle.threads) && Date.now() < settleEnd) {
    await sleep(500)
    after = proc(pid)
  }
  const settled = ((Date.now() - (t0 + elapsed * 1000)) / 1000).toFixed(1)

  // ---- verdict
  const warm = samples.find((s) => s.requests >= WARMUP) ?? samples[1]
  const afterWarm = samples.filter((s) => s.requests >= warm.requests)
  const peak = afterWarm.reduce((m, s) => (s.rss > m.rss ? s : m))
  // One sample is at the mercy of where V8's heap is in its GC sawtooth
  // (several MiB): the growth compares medians of two windows of a tenth of
  // the run each, just after the warm-up point and at the end of the load.
  const span = Math.max(1, Math.round(N / 10))
  const median = (xs) => { const v = xs.map((q) => q.rss).sort((a, b) => a - b); return v[Math.floor(v.length / 2)] }
  const startWin = afterWarm.filter((q) => q.requests <= warm.requests + span)
  const endWin = afterWarm.filter((q) => q.requests >= loadEnd.requests - span)
  const growth = median(endWin) - median(startWin)
  const at = (n) => samples.find((s) => s.requests >= n)
  const at100k = at(100_000)
  const errorLog = fs.existsSync(path.join(tmp, 'error.log')) ? fs.readFileSync(path.join(tmp, 'error.log'), 'utf8').split('\n').filter(Boolean) : []
  const checksList = [
    [`RSS growth after warm-up < ${LIMIT_MIB} MiB (median RSS of requests ${loadEnd.requests - span > warm.requests ? (loadEnd.requests - span).toLocaleString('en') : warm.requests.toLocaleString('en')}..${loadEnd.requests.toLocaleString('en')} minus that of ${warm.requests.toLocaleString('en')}..${(warm.requests + span).toLocaleString('en')})`, growth < LIMIT_MIB * 1024 * 1024, `${signedMib(growth)} MiB (single samples: ${signedMib(loadEnd.rss - warm.rss)} MiB from ${mib(warm.rss)} to ${mib(loadEnd.rss)}; peak after warm-up ${mib(peak.rss)} MiB at ${peak.requests.toLocaleString('en')})`],
    [`fds back to idle (${idle.fds})`, after.fds <= idle.fds, `${after.fds}`],
    [`threads back to idle (${idle.threads})`, after.threads <= idle.threads, `${after.threads}`],
    ['wrk: no non-2xx response, no socket error', w.non2xx === 0 && w.socketErrors === 0, `non-2xx ${w.non2xx}, socket errors ${w.socketErrors}${w.socketErrorText ? ` (${w.socketErrorText})` : ''}`],
  ]
  const pass = checksList.every(([, ok]) => ok)
  console.log(`\nsoak: ${final.requests - idle.before} requests in ${elapsed.toFixed(0)} s (${((final.requests - idle.before) / elapsed).toFixed(0)} req/s): wrk ${w.requests} (${w.rps} req/s), aborting clients ${abortStats.slow} dropped /slow + ${abortStats.upload} dropped uploads; the app saw ${final.aborted} responses cut short`)
  console.log(`soak: RSS idle ${mib(idle.rss)} MiB, at warm-up ${mib(warm.rss)} MiB, at 100k ${at100k ? mib(at100k.rss) : '-'} MiB, at the end (${loadEnd.requests.toLocaleString('en')}) ${mib(loadEnd.rss)} MiB, after ${mib(after.rss)} MiB`)
  console.log(`soak: fds idle ${idle.fds}, under load max ${Math.max(...samples.map((s) => s.fds))}, after ${after.fds}; threads idle ${idle.threads}, under load max ${Math.max(...samples.map((s) => s.threads))}, after ${after.threads} (settled ${settled} s after the load)`)
  console.log(`soak: nginx error log: ${errorLog.length} line(s)${errorLog.length ? `, first: ${errorLog[0]}` : ''}`)
  for (const [what, ok, value] of checksList) console.log(`  ${ok ? 'PASS' : 'FAIL'}  ${what}: ${value}`)
  console.log(pass ? 'soak: PASS' : 'soak: FAIL')

  if (WRITE_DOCS) {
    const report = { N, CONNS, ABORT_CLIENTS, LIMIT_MIB, elapsed, idle, warm, at100k, loadEnd, after, peak, growth, w, abortStats, final, samples, pass, checksList }
    fs.writeFileSync(path.join(DOCS, 'soak-rss.svg'), rssSvg(report))
    writeHardening(path.join(DOCS, 'hardening.md'), report)
    console.log(`soak: wrote docs/soak-rss.svg and the soak section of docs/hardening.md`)
  }

  app.kill('SIGTERM')
  nginx.kill('SIGQUIT')
  await waitFor(() => (app.exitCode !== null || app.signalCode !== null) && (nginx.exitCode !== null || nginx.signalCode !== null), 10000, 'the app and nginx to exit').catch((e) => console.error(`soak: ${e.message}; killing them`))
  process.exit(pass ? 0 : 1)
}

// ---------------------------------------------------------------- helpers

function fail(msg) {
  console.error(`soak: ${msg}`)
  process.exit(1)
}
const mib = (bytes) => (bytes / 1048576).toFixed(1)
const signedMib = (bytes) => `${bytes >= 0 ? '+' : ''}${mib(bytes)}`

// VmRSS, open fds and threads of a process.
function proc(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) * 1024
  return { rss, fds: fs.readdirSync(`/proc/${pid}/fd`).length, threads: fs.readdirSync(`/proc/${pid}/task`).length }
}

function httpRequest(url, method, body) {
  return withTimeout(new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent: false, headers: body ? { 'Content-Length': body.length } : {} }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  }), 10000, `${method} ${url}`)
}

// GET /slow (answered after 20 ms), the connection dropped after 5 ms.
function abortSlow(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.write('GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n')
      setTimeout(() => s.destroy(), 5)
    })
    s.on('error', () => {})
    s.on('close', resolve)
  })
}
// POST /upload declaring 256 KiB, 64 KiB sent, the connection dropped.
function abortUpload(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.write(`POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: ${UPLOAD_SIZE}\r\n\r\n`)
      s.write(Buffer.alloc(64 * 1024, 'a'), () => setTimeout(() => s.destroy(), 5))
    })
    s.on('error', () => {})
    s.on('close', resolve)
  })
}


// ---------------------------------------------------------------- docs

function shortCount(v) { return v >= 1e6 ? `${+(v / 1e6).toFixed(2)}M` : v >= 1e3 ? `${+(v / 1e3).toFixed(0)}k` : String(v) }

// RSS (MiB) over requests served: a line, the warm-up point, and the band
// warm-up RSS + limit that the rest of the run must stay under at its end.
function rssSvg(r) {
  const W = 820, H = 420, L = 70, R = 30, T = 66, B = 60
  const pw = W - L - R, ph = H - T - B
  const pts = r.samples.map((s) => [s.requests, s.rss / 1048576])
  const maxX = niceMax(Math.max(r.N, ...pts.map(([x]) => x)))
  const maxY = niceMax(Math.max(...pts.map(([, y]) => y), r.warm.rss / 1048576 + r.LIMIT_MIB) * 1.05)
  const x = (v) => L + (v / maxX) * pw
  const y = (v) => T + ph - (v / maxY) * ph
  const o = []
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="13">`)
  o.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`)
  o.push(`<text x="${L}" y="26" font-size="16" font-weight="bold">${esc(`Soak: application RSS over ${r.loadEnd.requests.toLocaleString('en')} requests through nginx`)}</text>`)
  o.push(`<text x="${L}" y="46" font-size="12" fill="#555555">${esc(`createServer, mixed hello / 64 KiB / 256 KiB upload / aborted; ${r.pass ? 'PASS' : 'FAIL'}: growth after warm-up ${signedMib(r.growth)} MiB (limit ${r.LIMIT_MIB} MiB)`)}</text>`)
  const ticks = 5
  for (let k = 0; k <= ticks; k++) {
    const v = (maxY * k) / ticks
    o.push(`<line x1="${L}" y1="${y(v).toFixed(1)}" x2="${L + pw}" y2="${y(v).toFixed(1)}" stroke="${k === 0 ? '#000000' : '#dddddd'}" stroke-width="1"/>`)
    o.push(`<text x="${L - 8}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${+v.toFixed(1)}</text>`)
  }
  for (let k = 0; k <= 5; k++) {
    const v = (maxX * k) / 5
    o.push(`<line x1="${x(v).toFixed(1)}" y1="${T + ph}" x2="${x(v).toFixed(1)}" y2="${T + ph + 5}" stroke="#000000"/>`)
    o.push(`<text x="${x(v).toFixed(1)}" y="${T + ph + 20}" text-anchor="middle">${shortCount(v)}</text>`)
  }
  o.push(`<line x1="${L}" y1="${T}" x2="${L}" y2="${T + ph}" stroke="#000000" stroke-width="1"/>`)
  o.push(`<text x="${L + pw / 2}" y="${H - 16}" text-anchor="middle">requests served</text>`)
  o.push(`<text transform="translate(20 ${T + ph / 2}) rotate(-90)" text-anchor="middle">RSS (MiB)</text>`)
  // The limit band: from the warm-up point, warm-up RSS + limit.
  const limitY = r.warm.rss / 1048576 + r.LIMIT_MIB
  o.push(`<rect x="${x(r.warm.requests).toFixed(1)}" y="${y(limitY).toFixed(1)}" width="${(x(maxX) - x(r.warm.requests)).toFixed(1)}" height="${(y(r.warm.rss / 1048576) - y(limitY)).toFixed(1)}" fill="#2ca02c" fill-opacity="0.08"/>`)
  o.push(`<line x1="${x(r.warm.requests).toFixed(1)}" y1="${y(limitY).toFixed(1)}" x2="${x(maxX).toFixed(1)}" y2="${y(limitY).toFixed(1)}" stroke="#d62728" stroke-dasharray="6 4" stroke-width="1.5"/>`)
  o.push(`<text x="${(x(maxX) - 4).toFixed(1)}" y="${(y(limitY) - 6).toFixed(1)}" text-anchor="end" fill="#d62728" font-size="12">${esc(`warm-up RSS + ${r.LIMIT_MIB} MiB`)}</text>`)
  o.push(`<line x1="${x(r.warm.requests).toFixed(1)}" y1="${T}" x2="${x(r.warm.requests).toFixed(1)}" y2="${T + ph}" stroke="#888888" stroke-dasharray="3 3"/>`)
  o.push(`<text x="${(x(r.warm.requests) + 4).toFixed(1)}" y="${T + 14}" font-size="12" fill="#555555">warm-up</text>`)
  o.push(`<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="${pts.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ')}"/>`)
  o.push('</svg>')
  return o.join('\n') + '\n'
}

const BEGIN = '<!-- soak:begin (scripts/soak.mjs writes this section) -->'
const END = '<!-- soak:end -->'
function writeHardening(file, r) {
  const n = (v) => v.toLocaleString('en')
  const rows = []
  const step = Math.max(1, Math.round(r.N / 10))
  for (let k = 0; k <= 10; k++) {
    const s = k === 0 ? r.samples[0] : r.samples.find((q) => q.requests >= k * step)
    if (s && !rows.includes(s)) rows.push(s)
  }
  const section = `${BEGIN}
## Soak: ${n(r.loadEnd.requests)} requests through nginx

Generated by \`node scripts/soak.mjs --requests ${r.N}\` on ${new Date().toISOString()} (${os.cpus().length} cores, shared; Node ${process.version}). **${r.pass ? 'PASS' : 'FAIL'}.**

nginx (one worker, \`fastcgi_keep_conn on\`, upstream keepalive, \`fastcgi_request_buffering off\`) in front of a \`createServer()\` application; wrk with ${r.CONNS} connections cycling through 8 × \`GET /hello\`, 3 × \`GET /64k\` (64 KiB response), 1 × \`POST /upload\` (256 KiB body read whole), plus ${r.ABORT_CLIENTS} clients that drop their connection mid-request (\`GET /slow\` dropped after 5 ms, uploads of 256 KiB dropped after 64 KiB), so that nginx aborts the upstream request. The application's VmRSS, open fds (\`/proc/PID/fd\`) and threads (\`/proc/PID/task\`) are sampled every 500 ms.

| | requests | RSS (MiB) | fds | threads |
| --- | ---: | ---: | ---: | ---: |
| idle (before the load) | 0 | ${mib(r.idle.rss)} | ${r.idle.fds} | ${r.idle.threads} |
| warm-up point | ${n(r.warm.requests)} | ${mib(r.warm.rss)} | ${r.warm.fds} | ${r.warm.threads} |
${r.at100k ? `| at 100k | ${n(r.at100k.requests)} | ${mib(r.at100k.rss)} | ${r.at100k.fds} | ${r.at100k.threads} |\n` : ''}| end of the load | ${n(r.loadEnd.requests)} | ${mib(r.loadEnd.rss)} | ${r.loadEnd.fds} | ${r.loadEnd.threads} |
| after (load stopped, settled) | | ${mib(r.after.rss)} | ${r.after.fds} | ${r.after.threads} |

- ${n(r.final.requests - r.idle.before)} requests in ${r.elapsed.toFixed(0)} s; wrk ${n(r.w.requests)} responses (${r.w.rps} req/s), non-2xx ${r.w.non2xx}, socket errors ${r.w.socketErrors}; aborting clients: ${n(r.abortStats.slow)} dropped \`/slow\`, ${n(r.abortStats.upload)} dropped uploads; the application saw ${n(r.final.aborted)} responses cut short.
- RSS growth after warm-up: ${signedMib(r.growth)} MiB (limit ${r.LIMIT_MIB} MiB), the median RSS of the last tenth of the run minus that of the tenth after the warm-up point (a single sample moves by several MiB with V8's garbage collection); peak after warm-up ${mib(r.peak.rss)} MiB.
${r.checksList.map(([what, ok, value]) => `- ${ok ? 'PASS' : 'FAIL'}: ${what}: ${value}`).join('\n')}

![RSS over requests](soak-rss.svg)

<details><summary>The series</summary>

| requests | RSS (MiB) | fds | threads | s |
| ---: | ---: | ---: | ---: | ---: |
${rows.map((s) => `| ${n(s.requests)} | ${mib(s.rss)} | ${s.fds} | ${s.threads} | ${(s.t / 1000).toFixed(0)} |`).join('\n')}

</details>
${END}`
  let text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '# Hardening\n\nHow the package was checked beyond the test suite.\n'
  const b = text.indexOf(BEGIN)
  const e = text.indexOf(END)
  if (b >= 0 && e > b) text = text.slice(0, b) + section + text.slice(e + END.length)
  else text = `${text.trimEnd()}\n\n${section}\n`
  fs.writeFileSync(file, text)
}

if (flag('app')) await appMain()
else await main()
