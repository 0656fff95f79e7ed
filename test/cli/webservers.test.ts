// Started by a web server (issue 5): examples/express/app.mjs run by
// `libfcgi serve APP` and by an app file calling createServer(app).listen()
// with no address, each started by spawn-fcgi (-F 2), by Apache's mod_fcgid
// and by lighttpd's bin-path, all of which pass the listen socket as fd 0;
// and started as a plain CGI program (lighttpd's mod_cgi, and a direct spawn
// with the CGI environment and stdin), where it answers the one request.
// docs/deployment.md prints the configurations these tests run.
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { defaultParams, fcgiRequest, type FcgiTarget, parseCgiResponse } from '../helpers/fcgi-client.js';
import { MOD_FCGID, startFcgid, stopAllFcgid } from '../helpers/fcgid.js';
import { httpRequest } from '../helpers/http-client.js';
import { lighttpdInstalled, lq, startLighttpd, stopAllLighttpd } from '../helpers/lighttpd.js';
import { spawnFcgi } from '../helpers/spawn-fcgi.js';
import { freePort, tmpSocketPath, waitFor, withTimeout } from '../helpers/wait.js';
import { assertDistFresh } from '../lifecycle/child.js';
import { CLI, killAllServes, ROOT, startServe } from './serve-helpers.js';

const APP = path.join(ROOT, 'examples/express/app.mjs');
const LISTEN_APP = path.join(ROOT, 'test/cli/fixtures/express-listen.mjs');
const NODE = process.execPath;

/** The two ways an app is started: the command, and an app file of one's own. */
const STARTERS: Array<[string, string[]]> = [
  ['libfcgi serve app.mjs', [NODE, CLI, 'serve', APP]],
  ['createServer(app).listen()', [NODE, LISTEN_APP]],
];

beforeAll(() => {
  assertDistFresh(['dist/index.js', 'dist/cli.js', 'dist/cli-worker.js']);
  for (const need of ['/usr/bin/spawn-fcgi', MOD_FCGID]) if (!existsSync(need)) throw new Error(`${need} is missing: bash scripts/setup.sh --test`);
  if (!lighttpdInstalled()) throw new Error('lighttpd is missing: bash scripts/setup.sh --test');
});
afterEach(async () => {
  await Promise.all([stopAllLighttpd(), stopAllFcgid()]);
});

/**
 * What the example app answers, through whatever is in front of it: a GET
 * with a query, a POST with a JSON body, and 6 requests at once (with
 * several processes behind one socket: none may stall).
 */
async function expectExampleApp(get: (uri: string) => Promise<{ status: number; body: string }>, post: (uri: string, json: string) => Promise<{ status: number; body: string }>): Promise<number[]> {
  const hello = await get('/hello/web?x=1');
  expect(hello.status).toBe(200);
  expect(JSON.parse(hello.body)).toEqual({ hello: 'web', query: { x: '1' } });
  const echo = await post('/echo', '{"n":42}');
  expect(echo.status).toBe(201);
  expect(JSON.parse(echo.body)).toEqual({ received: { n: 42 } });
  const times = await Promise.all(Array.from({ length: 6 }, async (_, i) => {
    const t0 = Date.now();
    const r = await get(`/hello/n${i}`);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).hello).toBe(`n${i}`);
    return Date.now() - t0;
  }));
  return times;
}

function viaHttp(base: string) {
  return {
    get: async (uri: string) => {
      const r = await httpRequest(base + uri, { timeoutMs: 15000 });
      return { status: r.status, body: r.body.toString() };
    },
    post: async (uri: string, json: string) => {
      const r = await httpRequest(base + uri, { method: 'POST', headers: { 'content-type': 'application/json' }, body: json, timeoutMs: 15000 });
      return { status: r.status, body: r.body.toString() };
    },
  };
}

function viaFcgi(target: FcgiTarget) {
  const run = async (params: Record<string, string>, stdin?: string) => {
    const r = parseCgiResponse((await fcgiRequest(target, { params, ...(stdin !== undefined ? { stdin } : {}), timeoutMs: 15000 })).stdout);
    return { status: r.status, body: r.body.toString() };
  };
  return {
    get: (uri: string) => run(defaultParams({ REQUEST_URI: uri })),
    post: (uri: string, json: string) => run(defaultParams({ REQUEST_URI: uri, CONTENT_TYPE: 'application/json' }, json), json),
  };
}

describe.each(STARTERS)('%s', (_name, command) => {
  it('spawn-fcgi -F 2: two processes on the socket it passes as fd 0', async () => {
    const sock = tmpSocketPath('sf');
    const app = await spawnFcgi(['-s', sock], 2, command);
    try {
      // spawn-fcgi returns once it forked: wait until the app accepts.
      const c = viaFcgi({ path: sock });
      await withTimeout((async () => { for (;;) { try { return await c.get('/'); } catch { await new Promise((r) => setTimeout(r, 100)); } } })(), 15000, 'the app under spawn-fcgi to answer');
      const times = await expectExampleApp(c.get, c.post);
      console.log(`spawn-fcgi -F 2 (${_name}): 6 parallel requests took ${times.join(', ')} ms`);
    } finally {
      await app.stop();
    }
  });

  it('lighttpd bin-path (max-procs 2) starts it with the socket as fd 0', async () => {
    const lighttpd = await startLighttpd({
      config: (dir) => [
        'server.modules += ("mod_fastcgi")',
        'fastcgi.server = ( "/" => ((',
        `    "socket" => ${lq(path.join(dir, 'app.sock'))},`,
        `    "bin-path" => ${lq(command.join(' '))},`,
        '    "max-procs" => 2,',
        '    "check-local" => "disable",',
        ')))',
      ].join('\n'),
    });
    const c = viaHttp(lighttpd.url);
    const times = await expectExampleApp(c.get, c.post);
    console.log(`lighttpd bin-path (${_name}): 6 parallel requests took ${times.join(', ')} ms`);
    const req = JSON.parse((await c.get('/request?a=b')).body);
    expect(req).toMatchObject({ method: 'GET', url: '/request?a=b', cgi: { REQUEST_URI: '/request?a=b', SERVER_SOFTWARE: expect.stringMatching(/^lighttpd/) } });
  });

  it('Apache mod_fcgid starts it (wrapper script, the app mounted at /app)', async () => {
    const apache = await startFcgid({
      script: `exec ${command.join(' ')}`,
      prefix: '/app',
      env: { APP_PREFIX: '/app' },
      maxProcesses: 2,
    });
    const c = viaHttp(`${apache.url}/app`);
    const times = await expectExampleApp(c.get, c.post);
    console.log(`mod_fcgid (${_name}): 6 parallel requests took ${times.join(', ')} ms`);
    const req = JSON.parse((await c.get('/request')).body);
    expect(req).toMatchObject({ originalUrl: '/app/request', baseUrl: '/app', cgi: { SCRIPT_NAME: '/app', PATH_INFO: '/request', SERVER_SOFTWARE: expect.stringMatching(/mod_fcgid/) } });
    expect(apache.errorLogProblems()).toEqual([]);
  });

  it('systemd socket activation (systemd-socket-activate: LISTEN_FDS=1, LISTEN_PID, the socket as fd 3)', async () => {
    const sock = tmpSocketPath('sd');
    // systemd's own tool for the protocol: it binds, waits for the first
    // connection, then execs the command (same pid) with the socket as fd 3.
    const child = spawn('/usr/bin/systemd-socket-activate', ['-l', sock, ...command], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      const c = viaFcgi({ path: sock });
      await withTimeout((async () => { for (;;) { try { return await c.get('/'); } catch { await new Promise((r) => setTimeout(r, 100)); } } })(), 15000, 'the socket-activated app to answer');
      await expectExampleApp(c.get, c.post);
      if (command.includes('serve')) expect(stderr).toMatch(/serving .* on fd 3 /);
      child.kill('SIGTERM');
      await withTimeout(exited, 10000, 'the socket-activated app to stop on SIGTERM');
    } finally {
      try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ }
    }
  });

  describe('started as a CGI program', () => {
    /** Runs the command once as CGI: env, stdin; resolves with its exit and stdout. */
    function runCgi(env: Record<string, string>, stdin = ''): Promise<{ code: number | null; stdout: string; stderr: string }> {
      return withTimeout(new Promise((resolve, reject) => {
        const child = spawn(command[0]!, command.slice(1), { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.setEncoding('latin1').on('data', (d: string) => (stdout += d));
        child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
        child.on('error', reject);
        child.on('close', (code) => resolve({ code, stdout, stderr }));
        child.stdin.end(stdin);
      }), 15000, `${command.join(' ')} as CGI`);
    }
    const cgiEnv = (method: string, uri: string, extra: Record<string, string> = {}): Record<string, string> => ({
      GATEWAY_INTERFACE: 'CGI/1.1', SERVER_PROTOCOL: 'HTTP/1.1', REQUEST_METHOD: method, REQUEST_URI: uri,
      SCRIPT_NAME: uri.split('?')[0]!, QUERY_STRING: uri.split('?')[1] ?? '', REMOTE_ADDR: '192.0.2.7', HTTP_HOST: 'example.org', ...extra,
    });

    it('direct spawn: GET, POST with CONTENT_LENGTH bytes of stdin (not more), HEAD, a 404; exit 0', async () => {
      const get = await runCgi(cgiEnv('GET', '/hello/cgi?x=1'));
      expect(get.code, get.stderr).toBe(0);
      expect(get.stdout).toMatch(/^Status: 200 OK\r\n/);
      expect(get.stdout).toMatch(/\r\nContent-Type: application\/json; charset=utf-8\r\n/);
      expect(JSON.parse(get.stdout.split('\r\n\r\n')[1]!)).toEqual({ hello: 'cgi', query: { x: '1' } });

      const json = '{"n":7}';
      const post = await runCgi(cgiEnv('POST', '/echo', { CONTENT_TYPE: 'application/json', CONTENT_LENGTH: String(json.length) }), `${json}TRAILING-BYTES`);
      expect(post.code, post.stderr).toBe(0);
      expect(post.stdout).toMatch(/^Status: 201 Created\r\n/);
      expect(JSON.parse(post.stdout.split('\r\n\r\n')[1]!)).toEqual({ received: { n: 7 } });

      const head = await runCgi(cgiEnv('HEAD', '/'));
      expect(head.code, head.stderr).toBe(0);
      expect(head.stdout).toMatch(/^Status: 200 OK\r\n/);
      expect(head.stdout.endsWith('\r\n\r\n')).toBe(true);  // no body

      const missing = await runCgi(cgiEnv('GET', '/nope'));
      expect(missing.stdout).toMatch(/^Status: 404 Not Found\r\n/);
      const req = JSON.parse((await runCgi(cgiEnv('GET', '/request'))).stdout.split('\r\n\r\n')[1]!);
      expect(req).toMatchObject({ ip: '192.0.2.7', host: 'example.org', url: '/request' });
    });

    it('without GATEWAY_INTERFACE (started by hand): the clear error, nothing answered', async () => {
      const r = await runCgi({ REQUEST_METHOD: 'GET', REQUEST_URI: '/' });
      expect(r.code).not.toBe(0);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/fd 0 is not a listening socket/);
    });

    it('lighttpd mod_cgi runs it as a CGI script', async () => {
      const lighttpd = await startLighttpd({
        config: (dir) => {
          writeFileSync(path.join(dir, 'htdocs/app.cgi'), `#!/bin/sh\nAPP_PREFIX=/app.cgi exec ${command.join(' ')}\n`, { mode: 0o755 });
          return 'server.modules += ("mod_cgi")\ncgi.assign = ( ".cgi" => "" )';
        },
      });
      const c = viaHttp(`${lighttpd.url}/app.cgi`);
      const hello = await c.get('/hello/cgi?x=2');
      expect(hello.status).toBe(200);
      expect(JSON.parse(hello.body)).toEqual({ hello: 'cgi', query: { x: '2' } });
      const echo = await c.post('/echo', '{"n":9}');
      expect(echo.status).toBe(201);
      expect(JSON.parse(echo.body)).toEqual({ received: { n: 9 } });
      const head = await httpRequest(`${lighttpd.url}/app.cgi/`, { method: 'HEAD', timeoutMs: 15000 });
      expect(head.status).toBe(200);
      expect(head.body.length).toBe(0);
      expect((await c.get('/missing')).status).toBe(404);
    });
  });
});

describe('CGI mode, a response cut short', () => {
  it('libfcgi serve exits 1 (the web server logs a failure) after what was sent', async () => {
    const r = await withTimeout(new Promise<{ code: number | null; stdout: string }>((resolve, reject) => {
      const child = spawn(NODE, [CLI, 'serve', path.join(ROOT, 'test/cli/fixtures/cgi-cut.mjs')], {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', GATEWAY_INTERFACE: 'CGI/1.1', REQUEST_METHOD: 'GET', REQUEST_URI: '/' },
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      let stdout = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout }));
    }), 15000, 'the CGI run');
    expect(r.stdout).toMatch(/^Status: 200 OK\r\n/);
    expect(r.stdout.endsWith('\r\n\r\npart of it\n')).toBe(true);
    expect(r.code).toBe(1);
  });
});

// docs/deployment.md's container: the app as the container's command, the
// health check as its HEALTHCHECK, both from the same LIBFCGI_* variables.
describe('container: libfcgi serve as CMD, libfcgi request as HEALTHCHECK', () => {
  it('the check exits 0 while the app answers /ping, 3 once it is gone', async () => {
    const port = await freePort();
    const env = { LIBFCGI_LISTEN: `0.0.0.0:${port}`, LIBFCGI_ALLOWED_CLIENTS: '127.0.0.1' };
    // CMD ["libfcgi", "serve", "app.mjs", "--workers", "2", "--ping-path", "/ping"]
    const serve = startServe([APP, '--workers', '2', '--ping-path', '/ping'], { env });
    // HEALTHCHECK CMD ["libfcgi", "request", "-s", "-m", "4s", "/ping"]
    const check = () => runCli(['request', '-s', '-m', '4s', '/ping'], env);
    try {
      await serve.waitForLog(/serving .* with 2 worker/);
      const ok = await waitFor(async () => ((await check()).code === 0 ? true : undefined), { timeoutMs: 15000, intervalMs: 200, what: 'the health check to pass' });
      expect(ok).toBe(true);
      serve.kill('SIGTERM');
      expect((await serve.waitExit(15000)).code).toBe(0);
      const down = await check();
      expect(down.code).toBe(3);
      expect(down.stdout).toBe('');
    } finally {
      await killAllServes();
    }
  });
});

function runCli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return withTimeout(new Promise((resolve, reject) => {
    const child = spawn(NODE, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  }), 15000, `libfcgi ${args.join(' ')}`);
}

afterAll(async () => {
  await Promise.all([stopAllLighttpd(), stopAllFcgid()]);
});
