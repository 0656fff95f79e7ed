#!/usr/bin/env node
// The demo (run it with `bash scripts/demo.sh`, which builds everything first):
// examples/accept-loop.mjs on a temporary unix socket, a real nginx in front
// of it configured by examples/nginx.conf (own temporary prefix, a free port
// on 127.0.0.1), a few HTTP requests through nginx, then everything stopped.
// Without nginx it asks the application directly with `libfcgi request`
// (dist/cli.js), the package's FastCGI client.
//
//   node scripts/demo.mjs [--no-nginx] [--keep]
//
// --no-nginx  skip nginx even if it is installed
// --keep      leave nginx and the application running after the requests,
//             for your own curl or browser, until Ctrl-C
//
// Every step has a time limit; Ctrl-C stops everything it started.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';


const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const EXAMPLE_CONF = path.join(REPO, 'examples', 'nginx.conf');
const APP = path.join(REPO, 'examples', 'accept-loop.mjs');
const URIS = ['/hello', '/hello?name=nginx', '/hello/again'];
const TOTAL_MS = 60_000;
const STEP_MS = 10_000;

const say = (msg) => console.log(`demo: ${msg}`);
const indent = (text, prefix = '      ') => text.replace(/\n$/, '').split('\n').map((l) => prefix + l).join('\n');

class DemoError extends Error {}

// ---------------------------------------------------------------- processes

/** A child process we started, with its exit as a promise. */
function track(name, child) {
  const t = { name, child, exited: false, code: null, signal: null, output: '' };
  t.exit = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      Object.assign(t, { exited: true, code, signal });
      resolve();
    });
    child.on('error', (err) => {
      t.output += `\n${err.message}`;
      Object.assign(t, { exited: true });
      resolve();
    });
  });
  return t;
}

/** Resolves `value` after `ms` without keeping the process alive. */
function after(ms, value) {
  return new Promise((resolve) => setTimeout(resolve, ms, value).unref());
}

function waitExit(t, ms) {
  if (t.exited) return Promise.resolve(true);
  return Promise.race([t.exit.then(() => true), after(ms, false)]);
}

function signal(pidOrGroup, sig) {
  try {
    process.kill(pidOrGroup, sig);
  } catch {
    // already gone
  }
}

// ---------------------------------------------------------------- state and cleanup

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libfcgi-demo-'));
const socketPath = path.join(tmp, 'app.sock');
let app = null;
let nginx = null;
let stopping = null;

async function stopNginx() {
  if (!nginx) return;
  if (!nginx.exited) {
    signal(nginx.child.pid, 'SIGQUIT'); // graceful: workers finish, then exit
    if (!(await waitExit(nginx, 5000))) {
      signal(-nginx.child.pid, 'SIGKILL');
      await waitExit(nginx, 2000);
    }
  }
  // Workers of nginx's process group that would outlive their master.
  signal(-nginx.child.pid, 'SIGKILL');
}

async function stopApp() {
  if (!app || app.exited) return;
  signal(app.child.pid, 'SIGINT'); // the example closes its socket and exits
  if (!(await waitExit(app, 5000))) {
    say('the application did not stop within 5 s of SIGINT; killing it');
    signal(app.child.pid, 'SIGKILL');
    await waitExit(app, 2000);
  }
}

/** nginx first (it holds kept connections to the app), then the app; bounded. */
function stopAll() {
  stopping ??= (async () => {
    await stopNginx();
    await stopApp();
    fs.rmSync(tmp, { recursive: true, force: true });
    watchdog?.stdin.end('done\n');
  })();
  return stopping;
}

// Should this process die without cleaning up (SIGKILL), a small shell it
// started sees its input end and kills what we started: the application and
// nginx's process group ("+PID" / "+-PGID" lines); "done" dismisses it.
const watchdog = (() => {
  const script = 't=""; while read -r l; do case "$l" in done) exit 0;; +*) t="$t ${l#+}";; esac; done; ' +
    '[ -n "$t" ] && kill -9 $t 2>/dev/null; rm -rf "$0"';
  try {
    const wd = spawn('/bin/sh', ['-c', script, tmp], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
    wd.on('error', () => {});
    wd.stdin.on('error', () => {});
    wd.unref();
    wd.stdin.unref?.();
    return wd;
  } catch {
    return null;
  }
})();

function watch(target) {
  watchdog?.stdin.write(`+${target}\n`);
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    if (interrupted) return;
    interrupted = true;
    say(`${sig}: stopping`);
    stopAll().finally(() => process.exit(128 + os.constants.signals[sig]));
  });
}

const overall = setTimeout(() => {
  interrupted = true;
  say(`did not finish within ${TOTAL_MS / 1000} s; stopping`);
  stopAll().finally(() => process.exit(1));
}, TOTAL_MS);

/** Once stopping has begun (signal, time limit), start nothing new. */
function checkNotStopping() {
  if (interrupted || stopping) throw new DemoError('stopping');
}

// ---------------------------------------------------------------- the application

async function startApp() {
  say(`starting the application: node examples/accept-loop.mjs ${socketPath}`);
  checkNotStopping();
  const child = spawn(process.execPath, [APP, socketPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  app = track('app', child);
  if (child.pid) watch(child.pid);
  say(`application pid ${child.pid}`);
  let ready;
  const listening = new Promise((resolve) => (ready = resolve));
  const onData = (d) => {
    const text = d.toString();
    app.output += text;
    process.stdout.write(indent(text, '  app | ') + '\n');
    if (/listening on/.test(app.output)) ready(true);
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const ok = await Promise.race([
    listening,
    app.exit.then(() => false),
    after(STEP_MS, false),
  ]);
  if (!ok) {
    throw new DemoError(app.exited
      ? `the application exited (code ${app.code}, signal ${app.signal}) before listening` +
        (/Cannot find module .*dist/.test(app.output) ? '; build it first: bash scripts/setup.sh' : '')
      : `the application did not report listening within ${STEP_MS / 1000} s`);
  }
}

// ---------------------------------------------------------------- nginx

function findNginx() {
  for (const p of ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx']) {
    if (fs.existsSync(p)) return p;
  }
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const p = path.join(dir, 'nginx');
    if (dir && fs.existsSync(p)) return p;
  }
  return null;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen({ port: 0, host: '127.0.0.1' }, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    const done = (ok) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** examples/nginx.conf with this run's port and socket (and `user root` as root). */
function demoConfig(nginxBin, port) {
  let conf = fs.readFileSync(EXAMPLE_CONF, 'utf8');
  const swap = (from, to) => {
    if (!conf.includes(from)) throw new DemoError(`examples/nginx.conf no longer contains "${from}"; update scripts/demo.mjs`);
    conf = conf.replace(from, to);
  };
  swap('listen 127.0.0.1:8080;', `listen 127.0.0.1:${port};`);
  swap('server unix:/tmp/libfcgi-demo.sock;', `server unix:${socketPath};`);
  const include = 'include /etc/nginx/fastcgi_params;';
  if (!fs.existsSync('/etc/nginx/fastcgi_params')) {
    // An nginx that is not Debian's: its own fastcgi_params beside its nginx.conf.
    const v = spawnSync(nginxBin, ['-V'], { encoding: 'utf8' });
    const confPath = /--conf-path=(\S+)/.exec(`${v.stdout}${v.stderr}`)?.[1];
    const params = confPath && path.join(path.dirname(confPath), 'fastcgi_params');
    if (params && fs.existsSync(params)) swap(include, `include ${params};`);
    else {
      swap(include, ['QUERY_STRING $query_string', 'REQUEST_METHOD $request_method', 'CONTENT_TYPE $content_type',
        'CONTENT_LENGTH $content_length', 'SCRIPT_NAME $fastcgi_script_name', 'REQUEST_URI $request_uri',
        'DOCUMENT_URI $document_uri', 'SERVER_PROTOCOL $server_protocol', 'GATEWAY_INTERFACE CGI/1.1',
        'REMOTE_ADDR $remote_addr', 'SERVER_NAME $server_name', 'SERVER_PORT $server_port']
        .map((p) => `fastcgi_param ${p};`).join('\n            '));
    }
  }
  if (process.getuid?.() === 0) {
    // Started as root, nginx's workers would run as "nobody" and could not
    // enter this run's private (0700) temporary directory.
    conf = `user root;  # added by scripts/demo.mjs: running as root\n${conf}`;
  }
  return conf;
}

async function startNginx(bin) {
  const prefix = path.join(tmp, 'nginx');
  fs.mkdirSync(prefix);
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const conf = demoConfig(bin, port);
    const confPath = path.join(prefix, 'nginx.conf');
    fs.writeFileSync(confPath, conf);
    say(`starting nginx (${bin}) on http://127.0.0.1:${port}/ with examples/nginx.conf ` +
      `(listen and upstream socket changed; prefix ${prefix}/)`);
    // Its own process group: stopped as a whole, and a terminal's Ctrl-C
    // reaches us, who stop it gracefully.
    checkNotStopping();
    const child = spawn(bin, ['-p', `${prefix}/`, '-c', confPath], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    nginx = track('nginx', child);
    child.stdout.on('data', (d) => (nginx.output += d));
    child.stderr.on('data', (d) => (nginx.output += d));
    if (child.pid) watch(-child.pid);
    say(`nginx master pid ${child.pid}`);

    const deadline = Date.now() + STEP_MS;
    while (!nginx.exited && Date.now() < deadline) {
      if (fs.existsSync(path.join(prefix, 'nginx.pid')) && (await canConnect(port))) return port;
      await after(50);
    }
    const output = nginx.output.trim();
    await stopNginx();
    if (nginx.exited && /Address already in use/.test(output) && attempt < 3) {
      fs.rmSync(prefix, { recursive: true, force: true });
      fs.mkdirSync(prefix);
      continue;
    }
    throw new DemoError(`nginx did not start (${nginx.exited ? `exit code ${nginx.code}` : `no answer on port ${port} within ${STEP_MS / 1000} s`}):\n` +
      indent(output.split('\n').filter((l) => !/\[notice\]/.test(l)).join('\n') || '(no output)', '  nginx | '));
  }
}

function httpGet(url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: 5000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, statusText: res.statusMessage, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no response from ${url} within 5 s`)));
    req.on('error', reject);
  });
}

// ---------------------------------------------------------------- main

async function viaNginx(bin) {
  const port = await startNginx(bin);
  for (const uri of URIS) {
    const url = `http://127.0.0.1:${port}${uri}`;
    const res = await httpGet(url);
    say(`GET ${url} -> ${res.status} ${res.statusText} (server: ${res.headers.server ?? '?'})`);
    console.log(indent(res.body));
    if (res.status !== 200 || !res.body.includes('Hello World')) throw new DemoError(`unexpected response from ${url}`);
  }
  if (KEEP) await keep(`try: curl http://127.0.0.1:${port}/anything`);
}

const CLI = path.join(REPO, 'dist', 'cli.js');

async function direct() {
  for (const uri of URIS) {
    const args = [CLI, 'request', '--connect', socketPath, '--include', '--max-time', '5s', uri];
    const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: STEP_MS });
    say(`libfcgi request --connect ${socketPath} --include ${uri} ->`);
    console.log(indent(r.stdout ?? ''));
    if (r.status !== 0 || !r.stdout.includes('Hello World')) throw new DemoError(`unexpected response for ${uri}: exit ${r.status} ${r.stderr ?? ''}`);
  }
  if (KEEP) await keep(`try: node dist/cli.js request --connect ${socketPath} -i /anything`);
}

/** --keep: wait for Ctrl-C (the signal handler stops everything and exits). */
async function keep(what) {
  clearTimeout(overall);
  say(`--keep: ${what}; press Ctrl-C to stop`);
  await new Promise(() => {
    setInterval(() => {}, 1 << 30); // the signal handler ends the process
  });
}

const KEEP = process.argv.includes('--keep');
let exitCode = 0;
try {
  await startApp();
  const bin = process.argv.includes('--no-nginx') ? null : findNginx();
  if (bin) {
    try {
      await viaNginx(bin);
    } catch (err) {
      if (!(err instanceof DemoError) || interrupted) throw err;
      say(err.message);
      say('showing the application\'s answer without nginx instead:');
      exitCode = 1;
      await direct();
    }
  } else {
    say(process.argv.includes('--no-nginx')
      ? 'without nginx (--no-nginx): talking FastCGI to the application with libfcgi request'
      : 'nginx is not installed (bash scripts/setup.sh --test installs it), so the demo talks FastCGI ' +
        'to the application itself with libfcgi request');
    await direct();
  }
} catch (err) {
  if (!interrupted) say(err instanceof DemoError ? `error: ${err.message}` : `error: ${err?.stack ?? err}`);
  exitCode = 1;
}
if (!interrupted) {
  say('stopping nginx and the application');
  await stopAll();
  clearTimeout(overall);
  if (app?.exited && app.code !== 0 && app.code !== null) {
    say(`the application exited with code ${app.code}`);
    exitCode = 1;
  }
  say(exitCode === 0 ? 'done' : 'failed');
  // Everything we started has been waited for; don't let a stray handle hold us.
  process.exit(exitCode);
}
