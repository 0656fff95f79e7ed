// `libfcgi serve APP` (issue 5) with real processes: the supervisor
// (dist/cli.js) and its workers (dist/cli-worker.js) on a temporary unix
// socket, requests over FastCGI with the test client. Usage errors, app
// loading (ESM, CommonJS, Express, fetch apps), several workers, status and
// ping, graceful stop and --grace, reload (SIGHUP) with new code or broken
// code, crashed workers and crash loops, --max-requests.
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { defaultParams, FcgiConnection, fcgiRequest, parseCgiResponse } from '../helpers/fcgi-client.js';
import { tmpSocketPath } from '../helpers/wait.js';
import { assertDistFresh } from '../lifecycle/child.js';
import {
  alive,
  appDir,
  get,
  killAllServes,
  parseAnswer,
  removeAppDirs,
  ROOT,
  runServe,
  sleep,
  startServe,
  status,
  testApp,
  waitDead,
  waitFor,
  waitForWorkers,
  writeApp,
} from './serve-helpers.js';

beforeAll(() => assertDistFresh(['dist/cli.js', 'dist/cli-worker.js']));
afterEach(killAllServes);
afterAll(removeAppDirs);

const EXPRESS_APP = path.join(ROOT, 'examples/express/app.mjs');
const HONO_APP = path.join(ROOT, 'examples/hono/app.mjs');

/** Starts `serve app` on a fresh unix socket with status and ping pages; waits for `workers` workers. */
async function serveApp(app: string, extra: string[] = [], workers = 1) {
  const sock = tmpSocketPath('serve');
  const s = startServe([app, '--listen', sock, '--status-path', '/status', '--ping-path', '/ping', ...extra]);
  const target = { path: sock };
  const pids = await waitForWorkers(target, workers).catch((err: Error) => {
    throw new Error(`${err.message}\n${s.describe()}`);
  });
  return { s, sock, target, pids };
}

describe('usage errors: exit 2 with a message, nothing listens', () => {
  const dir = appDir();
  const app = writeApp(dir, 'ok.mjs', testApp('v1'));
  const cases: Array<[string, string[], RegExp]> = [
    ['no APP', [], /serve needs the APP module/],
    ['two APPs', [app, app], /serve takes one APP/],
    ['APP that does not exist', [path.join(dir, 'missing.mjs')], /APP .*missing\.mjs: no such file/],
    ['unknown flag', [app, '--wokers', '2'], /unknown option --wokers/],
    ['flag without its value', [app, '--workers'], /--workers needs a value/],
    ['--workers 0', [app, '--workers', '0'], /--workers: must be at least 1/],
    ['--workers abc', [app, '--workers', 'abc'], /--workers: "abc" is not a whole number/],
    ['--max-conns 0', [app, '--max-conns', '0'], /--max-conns: must be at least 1/],
    ['--max-requests -1', [app, '--max-requests=-1'], /--max-requests: "-1" is not a whole number/],
    ['--grace soon', [app, '--grace', 'soon'], /--grace: "soon" is not a duration/],
    ['--status-path without /', [app, '--status-path', 'status'], /--status-path must start with "\/"/],
    ['--socket-mode 999', [app, '--listen', '/tmp/x.sock', '--socket-mode', '999'], /--socket-mode/],
    ['--socket-owner with two colons', [app, '--listen', '/tmp/x.sock', '--socket-owner', 'a:b:c'], /--socket-owner: expected USER, USER:GROUP or :GROUP/],
    ['--socket-owner on a TCP address', [app, '--listen', '127.0.0.1:9000', '--socket-owner', 'nobody'], /--listen: --socket-owner applies to a unix socket path only/],
    ['--listen with a port out of range', [app, '--listen', '127.0.0.1:99999'], /--listen: /],
    ['--listen with a bad IPv6 address', [app, '--listen', '[not-v6]:9000'], /--listen: .*IPv6/],
    ['no --listen and fd 0 is not a socket', [app], /no --listen, and fd 0 is not a listening socket/],
  ];
  it.each(cases)('%s', async (_name, args, message) => {
    const r = await runServe(args);
    expect(r.code, `${r.stderr}`).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toMatch(/libfcgi --help/);
  });

  it('a bad value from an environment variable is reported too', async () => {
    const r = await runServe([app, '--listen', tmpSocketPath('env')], 15000, { LIBFCGI_WORKERS: 'many' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/"many" is not a whole number/);
  });

  it('--help lists every option with its environment variable; exit 0', async () => {
    const r = await runServe(['--help']);
    expect(r.code).toBe(0);
    for (const flag of ['--listen', '--socket-mode', '--socket-owner', '--workers', '--max-conns', '--max-requests', '--allowed-clients', '--grace', '--status-path', '--ping-path']) {
      expect(r.stdout).toContain(flag);
    }
    expect(r.stdout).toMatch(/LIBFCGI_WORKERS/);
    expect(r.stdout).toMatch(/SIGHUP/);
  });
});

describe('an app that cannot be served: exit 1 with a message, the socket never created', () => {
  const dir = appDir();
  const cases: Array<[string, string, string, RegExp]> = [
    ['throws at import', 'throws.mjs', `throw new Error('boom at import');\n`, /cannot load .*throws\.mjs: boom at import/],
    ['has a syntax error', 'syntax.mjs', `export default function (req, res) {\n`, /cannot load .*syntax\.mjs/],
    ['imports a package that is not installed', 'dep.mjs', `import x from 'no-such-package-xyz';\nexport default x;\n`, /cannot load .*dep\.mjs: .*no-such-package-xyz/],
    ['exports a number', 'number.mjs', `export default 42;\n`, /must export .*request listener/],
    ['exports nothing (ESM)', 'nothing.mjs', `export const x = 1;\n`, /must export/],
    ['exports an object without fetch (CommonJS)', 'object.cjs', `module.exports = { handle() {} };\n`, /must export/],
  ];
  it.each(cases)('an app that %s', async (_name, file, source, message) => {
    const app = writeApp(dir, file, source);
    const sock = tmpSocketPath('fail');
    const r = await runServe([app, '--listen', sock]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(existsSync(sock)).toBe(false);
  });
});

describe('apps', () => {
  it('an ESM module whose default export is a listener', async () => {
    const app = writeApp(appDir(), 'esm.mjs', testApp('esm'));
    const { target, pids } = await serveApp(app);
    const r = await get(target, '/anything');
    expect(r.status).toBe(200);
    expect(parseAnswer(r.body)).toEqual({ version: 'esm', pid: pids[0] });
  });

  it('a CommonJS module (module.exports = listener)', async () => {
    const app = writeApp(appDir(), 'cjs.cjs', `module.exports = (req, res) => { res.setHeader('X-Kind', 'cjs'); res.end('cjs ' + process.pid); };\n`);
    const { target } = await serveApp(app);
    const r = await get(target, '/');
    expect(r.status).toBe(200);
    expect(r.headers['x-kind']).toBe('cjs');
    expect(r.body).toMatch(/^cjs \d+$/);
  });

  it('a transpiled module (exports.default = listener, __esModule)', async () => {
    const app = writeApp(appDir(), 'ts.cjs', `Object.defineProperty(exports, '__esModule', { value: true });\nexports.default = (req, res) => res.end('transpiled');\n`);
    const { target } = await serveApp(app);
    expect((await get(target, '/')).body).toBe('transpiled');
  });

  it('an object with a fetch method (CommonJS)', async () => {
    const app = writeApp(appDir(), 'fetch.cjs', `module.exports = { fetch: (request) => new Response('fetch ' + new URL(request.url).pathname, { status: 201, headers: { 'x-kind': 'fetch' } }) };\n`);
    const { target } = await serveApp(app);
    const r = await get(target, '/some/where');
    expect(r.status).toBe(201);
    expect(r.headers['x-kind']).toBe('fetch');
    expect(r.body).toBe('fetch /some/where');
  });

  it('the Express example (examples/express/app.mjs)', async () => {
    const { target } = await serveApp(EXPRESS_APP);
    const home = await get(target, '/');
    expect(home.status).toBe(200);
    expect(home.body).toBe('Hello from Express over FastCGI\n');
    const hello = await get(target, '/hello/serve?x=1');
    expect(JSON.parse(hello.body)).toEqual({ hello: 'serve', query: { x: '1' } });
    expect((await get(target, '/error')).status).toBe(500);
  });

  it('the Hono example (examples/hono/app.mjs, an object with fetch)', async () => {
    const { target } = await serveApp(HONO_APP);
    const home = await get(target, '/');
    expect(home.status).toBe(200);
    expect(home.body).toBe('Hello from Hono over FastCGI\n');
    const hello = await get(target, '/hello/serve?x=1');
    expect(JSON.parse(hello.body)).toEqual({ hello: 'serve', query: { x: '1' } });
    expect((await get(target, '/nope')).status).toBe(404);
  });

  it('--listen 127.0.0.1:PORT (TCP) and --socket-mode on a unix socket', async () => {
    const app = writeApp(appDir(), 'tcp.mjs', testApp('tcp'));
    const { freePort } = await import('../helpers/wait.js');
    const port = await freePort();
    startServe([app, '--listen', `127.0.0.1:${port}`, '--status-path', '/status']);
    await waitForWorkers({ port }, 1);
    expect(parseAnswer((await get({ port }, '/')).body).version).toBe('tcp');

    const sock = tmpSocketPath('mode');
    startServe([app, '--listen', sock, '--socket-mode', '600', '--status-path', '/status']);
    await waitForWorkers({ path: sock }, 1);
    const { statSync } = await import('node:fs');
    expect(statSync(sock).mode & 0o777).toBe(0o600);

    // --socket-owner (root here: the suite runs as root; chown needs it).
    if (process.getuid?.() === 0) {
      const owned = tmpSocketPath('owner');
      startServe([app, '--listen', owned, '--socket-mode', '660', '--socket-owner', 'nobody:nogroup', '--status-path', '/status']);
      await waitForWorkers({ path: owned }, 1);
      const st = statSync(owned);
      expect([st.uid, st.gid, st.mode & 0o777]).toEqual([65534, 65534, 0o660]);
    }
  });
});

describe('workers, status and ping', () => {
  it('--workers 2: both workers serve requests', async () => {
    const app = writeApp(appDir(), 'two.mjs', testApp('two'));
    const { target, pids } = await serveApp(app, ['--workers', '2'], 2);
    expect(pids).toHaveLength(2);
    // Concurrent slow requests: a worker busy in its accept loop lets the
    // other one take the next connection.
    const seen = new Set<number>();
    for (let round = 0; round < 10 && seen.size < 2; round++) {
      const answers = await Promise.all(Array.from({ length: 8 }, () => get(target, '/slow?ms=100')));
      for (const a of answers) seen.add(parseAnswer(a.body).pid);
    }
    expect([...seen].sort((a, b) => a - b)).toEqual(pids);
  });

  it('ping answers pong without calling the app; status JSON counts requests per worker', async () => {
    // An app that counts its calls: ping and status must not reach it.
    const app = writeApp(appDir(), 'count.mjs', `let n = 0;\nexport default (req, res) => res.end(String(++n));\n`);
    const { target, pids } = await serveApp(app, ['--workers', '2', '--slow', '200ms'], 2);
    const ping = await get(target, '/ping');
    expect(ping.status).toBe(200);
    expect(ping.body).toBe('pong\n');
    expect(ping.headers['cache-control']).toBe('no-store');
    for (let i = 0; i < 6; i++) await get(target, `/r${i}`);

    const st = await status(target);
    expect(st.workers).toBe(2);
    expect(st.startedWorkers).toBe(2);
    expect(st.reloads).toBe(0);
    expect(st.perWorker.map((w) => w.pid).sort((a, b) => a - b)).toEqual(pids);
    // 6 app requests + ping + the status polls before: all answered requests
    // are counted (the status request itself is still active).
    expect(st.acceptedRequests).toBeGreaterThanOrEqual(7);
    expect(st.acceptedRequests).toBe(st.perWorker.reduce((n, w) => n + w.requests, 0));
    expect(st.activeRequests).toBe(1);  // this status request
    expect(st.idleSlots).toBe(2 * 256 - 1);
    expect(st.maxActiveRequests).toBeGreaterThanOrEqual(1);
    expect(st.slowRequests).toBe(0);
    expect(Date.parse(st.startTime)).toBeLessThanOrEqual(Date.now());
    expect(Date.now() - Date.parse(st.startTime)).toBeLessThan(60000);
    for (const w of st.perWorker) expect(w.idleSlots + w.active).toBe(256);
  });

  it('status counts slow requests and the most active at once', async () => {
    const app = writeApp(appDir(), 'slow.mjs', testApp('slow'));
    const { target } = await serveApp(app, ['--slow', '300ms', '--max-conns', '10']);
    await Promise.all([get(target, '/slow?ms=500'), get(target, '/slow?ms=500'), get(target, '/slow?ms=500'), get(target, '/')]);
    const st = await status(target);
    expect(st.slowRequests).toBe(3);
    expect(st.maxActiveRequests).toBeGreaterThanOrEqual(3);
    expect(st.idleSlots).toBe(9);
  });

  it('status in Prometheus text format', async () => {
    const app = writeApp(appDir(), 'prom.mjs', testApp('prom'));
    const { target, pids } = await serveApp(app, ['--workers', '2'], 2);
    for (let i = 0; i < 4; i++) await get(target, '/');
    const r = await get(target, '/status?format=prometheus');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = r.body;
    for (const name of ['libfcgi_start_time_seconds', 'libfcgi_workers', 'libfcgi_requests_total', 'libfcgi_active_requests', 'libfcgi_idle_slots', 'libfcgi_max_active_requests', 'libfcgi_slow_requests_total']) {
      expect(text).toMatch(new RegExp(`^# TYPE ${name} (gauge|counter)$`, 'm'));
      expect(text).toMatch(new RegExp(`^# HELP ${name} `, 'm'));
    }
    expect(text).toMatch(/^libfcgi_workers 2$/m);
    const start = Number(/^libfcgi_start_time_seconds (\d+)$/m.exec(text)?.[1]);
    expect(Math.abs(start - Date.now() / 1000)).toBeLessThan(120);
    let total = 0;
    for (const pid of pids) {
      const m = new RegExp(`^libfcgi_requests_total\\{worker="${pid}"\\} (\\d+)$`, 'm').exec(text);
      expect(m, text).not.toBeNull();
      total += Number(m![1]);
      expect(text).toMatch(new RegExp(`^libfcgi_idle_slots\\{worker="${pid}"\\} \\d+$`, 'm'));
    }
    expect(total).toBeGreaterThanOrEqual(4);
    // Every sample line is "name{labels} number" or "name number".
    for (const line of text.trim().split('\n')) {
      if (!line.startsWith('#')) expect(line).toMatch(/^[a-z_]+(\{worker="\d+"\})? \d+$/);
    }
  });
});

describe('stop: SIGTERM / SIGINT', () => {
  it('SIGTERM with a request in flight: it completes, exit 0 well within --grace, socket removed', async () => {
    const app = writeApp(appDir(), 'term.mjs', testApp('term'));
    const { s, target, sock, pids } = await serveApp(app, ['--workers', '2', '--grace', '20s'], 2);
    const inflight = get(target, '/slow?ms=1500', 20000);
    await waitFor(async () => (await status(target)).activeRequests >= 2, { what: 'the slow request to be active' });
    const t0 = Date.now();
    s.kill('SIGTERM');
    const r = await inflight;
    expect(r.status).toBe(200);
    expect(r.body).toMatch(/^term \d+ slow/);
    const exit = await s.waitExit(15000);
    expect(exit.code, s.describe()).toBe(0);
    expect(exit.at - t0).toBeLessThan(10000);  // the request took 1.5 s; grace is 20 s
    expect(s.stderr()).toMatch(/SIGTERM: stopping/);
    expect(existsSync(sock)).toBe(false);
    await waitDead(pids);
  });

  it('SIGINT stops an idle server at once with exit 0', async () => {
    const app = writeApp(appDir(), 'int.mjs', testApp('int'));
    const { s, pids } = await serveApp(app, ['--workers', '2'], 2);
    const t0 = Date.now();
    s.kill('SIGINT');
    const exit = await s.waitExit(10000);
    expect(exit.code, s.describe()).toBe(0);
    expect(exit.at - t0).toBeLessThan(5000);
    await waitDead(pids);
  });

  it('--grace expiry: a request that never ends is cut off after grace; exit 0 promptly', async () => {
    const app = writeApp(appDir(), 'hang.mjs', testApp('hang'));
    const { s, target, pids } = await serveApp(app, ['--grace', '1s']);
    const hung = get(target, '/hang', 20000).then(
      (r) => ({ ok: true as const, r }),
      (err: Error) => ({ ok: false as const, err }),
    );
    await waitFor(async () => (await status(target)).activeRequests >= 2, { what: 'the hanging request to be active' });
    const t0 = Date.now();
    s.kill('SIGTERM');
    const exit = await s.waitExit(10000);
    const took = exit.at - t0;
    expect(exit.code, s.describe()).toBe(0);
    expect(took).toBeGreaterThanOrEqual(900);
    expect(took).toBeLessThan(5000);
    expect(s.stderr()).toMatch(new RegExp(`worker ${pids[0]} did not finish within --grace: killed`));
    const h = await hung;
    expect(h.ok).toBe(false);  // the connection dropped without a response
    await waitDead(pids);
  });
});

describe('reload: SIGHUP', () => {
  it('replaces every worker with one running the new code; no request fails meanwhile', async () => {
    const dir = appDir();
    const app = writeApp(dir, 'reload.mjs', testApp('v1'));
    const { s, target, pids: gen1 } = await serveApp(app, ['--workers', '2'], 2);
    expect(parseAnswer((await get(target, '/')).body).version).toBe('v1');

    // A client loop during both reloads: every request must succeed.
    let stop = false;
    const failures: string[] = [];
    let served = 0;
    const loop = (async () => {
      while (!stop) {
        try {
          const r = await get(target, '/', 10000);
          if (r.status !== 200) failures.push(`status ${r.status}`);
          served++;
        } catch (err) {
          failures.push((err as Error).message);
        }
      }
    })();

    // Import caching must not keep the old code: each reload loads the file again.
    writeApp(dir, 'reload.mjs', testApp('v2'));
    s.kill('SIGHUP');
    await s.waitForLog(/reload: starting 2 fresh worker/);
    const gen2 = await waitForWorkers(target, 2, { notPids: gen1 });
    await waitDead(gen1);
    await waitFor(async () => parseAnswer((await get(target, '/')).body).version === 'v2', { what: 'v2 answers' });

    writeApp(dir, 'reload.mjs', testApp('v3'));
    s.kill('SIGHUP');
    const gen3 = await waitForWorkers(target, 2, { notPids: [...gen1, ...gen2] });
    await waitDead(gen2);
    const answer = parseAnswer((await get(target, '/')).body);
    expect(answer.version).toBe('v3');
    expect(gen3).toContain(answer.pid);

    stop = true;
    await loop;
    expect(failures).toEqual([]);
    expect(served).toBeGreaterThan(0);
    const st = await status(target);
    expect(st.reloads).toBe(2);
    expect(st.startedWorkers).toBe(6);
    expect(s.child.exitCode).toBeNull();
  });

  it('a reload whose new code fails to load: the old workers go on serving, a log line says so', async () => {
    const dir = appDir();
    const app = writeApp(dir, 'broken.mjs', testApp('good'));
    const { s, target, pids } = await serveApp(app, ['--workers', '2'], 2);
    writeApp(dir, 'broken.mjs', `throw new Error('broken on purpose');\n`);
    s.kill('SIGHUP');
    await s.waitForLog(/reload failed: a new worker exited with status 1 before it was ready; the previous workers go on serving/);
    expect(s.stderr()).toMatch(/broken on purpose/);
    // Give a wrongly retired generation time to go away, then look.
    await sleep(500);
    expect(pids.every(alive)).toBe(true);
    expect(await waitForWorkers(target, 2)).toEqual(pids);
    for (let i = 0; i < 4; i++) expect(parseAnswer((await get(target, '/')).body).version).toBe('good');
    // No crash-loop respawning of the broken generation either.
    expect(s.stderr()).not.toMatch(/starting a replacement/);

    // Fixed: the next reload works.
    writeApp(dir, 'broken.mjs', testApp('fixed'));
    s.kill('SIGHUP');
    await waitForWorkers(target, 2, { notPids: pids });
    await waitDead(pids);
    expect(parseAnswer((await get(target, '/')).body).version).toBe('fixed');
  });

  it('a second SIGHUP right after a failed one still retires the old generation', async () => {
    const dir = appDir();
    const app = writeApp(dir, 'again.mjs', testApp('one'));
    const { s, target, pids } = await serveApp(app, ['--workers', '2'], 2);
    writeApp(dir, 'again.mjs', `throw new Error('broken');\n`);
    s.kill('SIGHUP');
    await s.waitForLog(/reload failed/);
    writeApp(dir, 'again.mjs', testApp('two'));
    s.kill('SIGHUP');
    await waitForWorkers(target, 2, { notPids: pids });
    await waitDead(pids);
    expect(parseAnswer((await get(target, '/')).body).version).toBe('two');
  });
});

describe('crashed workers', () => {
  it('a worker killed with SIGKILL is replaced by a new one, with a log line', async () => {
    const app = writeApp(appDir(), 'kill.mjs', testApp('kill'));
    const { s, target, pids } = await serveApp(app, ['--workers', '2'], 2);
    const victim = pids[0]!;
    process.kill(victim, 'SIGKILL');
    await s.waitForLog(new RegExp(`worker ${victim} killed by SIGKILL; starting a replacement in \\d+ ms`));
    const now = await waitForWorkers(target, 2, { notPids: [victim] });
    expect(now).toContain(pids[1]);
    const st = await status(target);
    expect(st.startedWorkers).toBe(3);
    expect((await get(target, '/')).status).toBe(200);
  });

  it('workers have the listen socket as fd 0; one crashing and its replacement starting (each makes the socket blocking) stall no other worker', async () => {
    const app = writeApp(appDir(), 'fd0.mjs', testApp('fd0'));
    const { s, target, pids } = await serveApp(app, ['--workers', '2'], 2);
    // The FastCGI convention: what spawn-fcgi or mod_fcgid would start.
    const links = pids.map((p) => readlinkSync(`/proc/${p}/fd/0`));
    expect(links[0]).toMatch(/^socket:\[\d+\]$/);
    expect(links[1]).toBe(links[0]);
    // Kept connections, spread over the workers.
    const kept: Array<{ conn: FcgiConnection; pid: number }> = [];
    const ask = async (conn: FcgiConnection, uri: string) => {
      const r = await fcgiRequest(target, { params: defaultParams({ REQUEST_URI: uri }), connection: conn, keepConn: true, timeoutMs: 5000 });
      return parseAnswer(parseCgiResponse(r.stdout).body.toString());
    };
    try {
      for (let i = 0; i < 6; i++) {
        const conn = await FcgiConnection.connect(target);
        kept.push({ conn, pid: (await ask(conn, `/kept-${i}`)).pid });
      }
      // A worker dies of an uncaught exception: Node restores the flags it
      // found on fd 0 at start (blocking); its replacement is spawned with
      // the socket as fd 0 (libuv makes it blocking).
      const crash = await get(target, '/crash').catch(() => undefined);
      const victim = crash ? parseAnswer(crash.body).pid : (await s.waitForLog(/worker (\d+) exited/))[1];
      await s.waitForLog(/starting a replacement/);
      const now = await waitForWorkers(target, 2, { notPids: [Number(victim)] });
      // Every kept connection of the survivor, and new connections, served.
      for (const k of kept.filter((x) => now.includes(x.pid))) {
        expect((await ask(k.conn, '/after')).pid).toBe(k.pid);
      }
      const answers = await Promise.all(Array.from({ length: 8 }, () => get(target, '/')));
      for (const a of answers) expect(a.status).toBe(200);
    } finally {
      for (const k of kept) k.conn.destroy();
    }
  });

  it('a worker whose app crashes on a request is replaced; the other requests are served', async () => {
    const app = writeApp(appDir(), 'crash.mjs', testApp('crash'));
    const { s, target, pids } = await serveApp(app, ['--workers', '1']);
    await get(target, '/crash').catch(() => undefined);  // the worker dies; its response may or may not come
    await s.waitForLog(new RegExp(`worker ${pids[0]} exited with status \\d+; starting a replacement`));
    await waitForWorkers(target, 1, { notPids: pids });
    expect((await get(target, '/')).status).toBe(200);
  });

  it('a crash loop backs off instead of spinning', async () => {
    // The check only imports the module (and exits at once); a worker also
    // imports it, then dies 50 ms later: every worker crashes right after
    // its start, forever.
    const app = writeApp(appDir(), 'loop.mjs', `setTimeout(() => process.exit(3), 50);\nexport default (req, res) => res.end('never');\n`);
    const sock = tmpSocketPath('loop');
    const s = startServe([app, '--listen', sock, '--workers', '2']);
    await s.waitForLog(/serving/);
    const t0 = Date.now();
    await sleep(3000);
    const lines = s.stderr().split('\n').filter((l) => /exited with status 3; starting a replacement in \d+ ms/.test(l));
    const delays = lines.map((l) => Number(/in (\d+) ms/.exec(l)![1]));
    // 2 workers, then replacements after 100, 200, 400, 800, 1600 ms...: a
    // handful in 3 s. Without backoff it would be dozens (one per ~100-300 ms
    // per worker on a slow machine).
    expect(lines.length, s.stderr()).toBeGreaterThanOrEqual(3);
    expect(lines.length, s.stderr()).toBeLessThanOrEqual(10);
    for (let i = 1; i < delays.length; i++) expect(delays[i]).toBeGreaterThanOrEqual(delays[i - 1]!);
    expect(Math.max(...delays)).toBeGreaterThanOrEqual(800);
    // The supervisor itself idles between restarts.
    const stat = readFileSync(`/proc/${s.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    const cpuTicks = Number(stat[11]) + Number(stat[12]);  // utime + stime
    expect(cpuTicks / 100).toBeLessThan((Date.now() - t0) / 1000 / 2);
    // It still stops cleanly, and at once: a pending restart (up to 10 s
    // away) does not hold the exit back.
    const t1 = Date.now();
    s.kill('SIGTERM');
    const exit = await s.waitExit(10000);
    expect(exit.code).toBe(0);
    expect(exit.at - t1).toBeLessThan(2000);
  });
});

describe('--max-requests', () => {
  it('recycles a worker after N requests: pids change, no request fails', async () => {
    const app = writeApp(appDir(), 'recycle.mjs', testApp('rec'));
    const { s, target, pids } = await serveApp(app, ['--max-requests', '10'], 1);
    const seen = new Set<number>(pids);
    const failures: string[] = [];
    let served = 0;
    // 4 clients in parallel until 3 generations of workers answered (a
    // recycle takes a replacement's start-up time, during which the old
    // worker goes on serving), at most 15 s.
    const deadline = Date.now() + 15000;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (seen.size < 4 && Date.now() < deadline) {
          try {
            const r = await get(target, '/', 10000);
            if (r.status !== 200) failures.push(`status ${r.status}`);
            else seen.add(parseAnswer(r.body).pid);
            served++;
          } catch (err) {
            failures.push((err as Error).message);
          }
        }
      }),
    );
    expect(failures).toEqual([]);
    expect(seen.size, `${served} requests; ${s.stderr()}`).toBeGreaterThanOrEqual(4);
    const now = await waitForWorkers(target, 1);
    expect(now[0]).not.toBe(pids[0]);
    await waitDead(pids);
    // Recycling is not a crash.
    expect(s.stderr()).not.toMatch(/starting a replacement/);
  });
});
