// `libfcgi serve` behind a real nginx (fastcgi_keep_conn on, upstream
// keepalive) under wrk load: the issue's "done when" checks. Ten SIGHUP
// reloads with zero failed requests; with --workers 2 each worker serves at
// least a quarter (the status page shows it); a worker SIGKILLed mid-load costs only what it held in
// flight; SIGTERM under load stops within --grace. Figures are printed
// (console.log) for the record; nothing asserts on speed.
import { spawn } from 'node:child_process';
import path from 'node:path';

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { startNginx, stopAllNginx, type NginxInstance } from '../helpers/nginx.js';
import { sleep, tmpSocketPath, withTimeout } from '../helpers/wait.js';
import { assertDistFresh } from '../lifecycle/child.js';
import { killAllServes, removeAppDirs, ROOT, startServe, status, waitForWorkers, type Serve } from './serve-helpers.js';

beforeAll(() => assertDistFresh(['dist/cli.js', 'dist/cli-worker.js']));
afterEach(async () => {
  await killAllServes();
  await stopAllNginx();
});
afterAll(removeAppDirs);

const EXPRESS_APP = path.join(ROOT, 'examples/express/app.mjs');
const CONNECTIONS = 16;

interface WrkResult {
  requests: number;
  non2xx: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  failures: number;
  output: string;
}

interface WrkRun {
  /** Stops a run early (wrk prints its figures on SIGINT). */
  stop(): void;
  result: Promise<WrkResult>;
}

function parseWrk(output: string): WrkResult {
  const requests = Number(/(\d+) requests in /.exec(output)?.[1] ?? NaN);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(output)?.[1] ?? 0);
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const socketErrors = se
    ? { connect: Number(se[1]), read: Number(se[2]), write: Number(se[3]), timeout: Number(se[4]) }
    : { connect: 0, read: 0, write: 0, timeout: 0 };
  const failures = non2xx + socketErrors.connect + socketErrors.read + socketErrors.write + socketErrors.timeout;
  if (!Number.isFinite(requests)) throw new Error(`cannot read wrk's output:\n${output}`);
  return { requests, non2xx, socketErrors, failures, output };
}

/** wrk for `seconds` (or until stop()) on `url` with CONNECTIONS connections. */
function wrk(url: string, seconds: number): WrkRun {
  const child = spawn('wrk', ['-t2', `-c${CONNECTIONS}`, `-d${seconds}s`, '--timeout', '10s', url], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr.setEncoding('utf8').on('data', (d: string) => { out += d; });
  const done = new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', () => resolve());
  });
  const result = withTimeout(done, (seconds + 20) * 1000, `wrk (${seconds} s)`)
    .then(() => parseWrk(out))
    .finally(() => child.kill('SIGKILL'));
  return { stop: () => child.kill('SIGINT'), result };
}

/** serve the Express example with 2 workers on a unix socket, nginx in front. */
async function setup(extra: string[] = []): Promise<{ s: Serve; target: { path: string }; pids: number[]; nginx: NginxInstance }> {
  const sock = tmpSocketPath('nginx-serve');
  const s = startServe([EXPRESS_APP, '--listen', sock, '--workers', '2', '--status-path', '/status', ...extra]);
  const target = { path: sock };
  const pids = await waitForWorkers(target, 2);
  const nginx = await startNginx({ upstream: { path: sock }, keepConn: true, keepalive: 32 });
  const warm = await fetch(`${nginx.url}/`);
  expect(warm.status).toBe(200);
  expect(await warm.text()).toBe('Hello from Express over FastCGI\n');
  return { s, target, pids, nginx };
}

describe('libfcgi serve behind nginx under wrk load', () => {
  it('ten SIGHUP reloads during load: zero non-2xx, zero socket errors, every nginx upstream error retried', async () => {
    const { s, target, pids, nginx } = await setup();
    const run = wrk(`${nginx.url}/`, 60);
    await sleep(500);
    const t0 = Date.now();
    let previous = pids;
    for (let i = 1; i <= 10; i++) {
      s.kill('SIGHUP');
      // Next reload once the new generation is the one serving.
      previous = await waitForWorkers(target, 2, { notPids: previous, timeoutMs: 20000 });
    }
    const reloadSeconds = (Date.now() - t0) / 1000;
    await sleep(500);
    run.stop();
    const r = await run.result;
    const st = await status(target);
    console.log(`10 reloads in ${reloadSeconds.toFixed(1)} s under wrk: ${r.requests} requests, ${r.non2xx} non-2xx, socket errors ${JSON.stringify(r.socketErrors)}; startedWorkers ${st.startedWorkers}`);
    expect(r.requests).toBeGreaterThan(0);
    expect(r.non2xx, r.output).toBe(0);
    expect(r.socketErrors, r.output).toEqual({ connect: 0, read: 0, write: 0, timeout: 0 });
    // nginx logs an [error] each time a request it wrote on a kept
    // connection meets the retiring worker closing that connection
    // ("upstream prematurely closed connection while reading response header
    // from upstream", "recv() failed (104: Connection reset by peer)"); it
    // then retries on a fresh connection, so the client still gets its 200
    // (the access log and wrk agree). Any close of a kept connection by the
    // server races with its reuse; the native Close() makes the race rare
    // (recently used connections serve one more request, their FIN right
    // behind its end records: 5-58 lines here, median ~30, from 51-84,
    // median 58, when idle kept connections were closed at once). So: only
    // those kinds of line, and none that reached a client.
    const problems = nginx.errorLogProblems();
    console.log(`nginx error.log: ${problems.length} upstream error line(s) (retried), e.g.\n${problems.slice(0, 2).join('\n')}`);
    const retried = /(recv\(\) failed \(104: Connection reset by peer\)|writev?\(\) failed \(32: Broken pipe\)|upstream prematurely closed (FastCGI stdout|connection)) while (reading response header from|sending request to) upstream/;
    expect(problems.filter((l) => !retried.test(l))).toEqual([]);
    const statuses = nginx.accessLog().split('\n').filter(Boolean).map((l) => / HTTP\/1\.1" (\d{3}) /.exec(l)?.[1]);
    // 499: wrk closed its connections at the end of its run with requests in
    // flight (nginx's "client closed request"); wrk's own counts are above.
    expect(statuses.filter((x) => x !== '200' && x !== '499')).toEqual([]);
    expect(st.reloads).toBe(10);
    expect(st.startedWorkers).toBe(22);
    expect(s.stderr()).not.toMatch(/starting a replacement|did not finish|reload failed/);
  }, 90000);

  it('--workers 2 under load: each worker serves at least a quarter of the requests (status page)', async () => {
    // Every worker's poller is woken for each new connection on the shared
    // socket; nginx opens its keepalive connections in a burst, and the
    // first poller to run used to take most of them (55/45 up to 6/94). A
    // worker holding more connections than its sibling now steps aside for a
    // moment (native/server.h, ShareEntry). Two rounds of load (the counts
    // are cumulative): the second one runs on nginx's kept connections and
    // whatever it opens more, so the share must hold over time too.
    const { target, pids, nginx } = await setup();
    for (let round = 0; round < 2; round++) {
      const r = await wrk(`${nginx.url}/`, 5).result;
      expect(r.failures, r.output).toBe(0);
      const st = await status(target);
      expect(st.perWorker.map((w) => w.pid).sort((a, b) => a - b)).toEqual(pids);
      const counts = st.perWorker.map((w) => w.requests);
      const total = counts.reduce((a, b) => a + b, 0);
      console.log(`round ${round + 1}: ${total} requests, per worker ${counts.join(' / ')} (${counts.map((c) => `${Math.round((100 * c) / total)}%`).join(' / ')})`);
      expect(total).toBeGreaterThan(1000);
      for (const c of counts) expect(c / total, `per worker ${counts.join(' / ')}`).toBeGreaterThanOrEqual(0.25);
    }
  }, 90000);

  it('SIGTERM under load stops within --grace with exit 0', async () => {
    const { s, nginx } = await setup(['--grace', '5s']);
    const load = wrk(`${nginx.url}/`, 4);
    await sleep(1000);
    const t0 = Date.now();
    s.kill('SIGTERM');
    const exit = await s.waitExit(15000);
    console.log(`SIGTERM under load: exit ${exit.code} after ${exit.at - t0} ms (grace 5000 ms)`);
    expect(exit.code, s.describe()).toBe(0);
    expect(exit.at - t0).toBeLessThan(5000 + 2000);
    expect(s.stderr()).not.toMatch(/did not finish within --grace/);
    load.stop();
    await load.result;
  }, 60000);

  it('SIGKILL of one worker mid-load: failures bounded by the requests it held; a replacement starts', async () => {
    const { s, target, pids, nginx } = await setup();
    const run = wrk(`${nginx.url}/`, 4);
    await sleep(1500);
    // The busier worker: it surely holds kept connections and requests in
    // flight.
    const st = await status(target);
    const victim = [...st.perWorker].sort((a, b) => b.requests - a.requests)[0]!.pid;
    const other = pids.find((p) => p !== victim)!;
    process.kill(victim, 'SIGKILL');
    await s.waitForLog(new RegExp(`worker ${victim} killed by SIGKILL; starting a replacement`));
    const r = await run.result;
    const now = await waitForWorkers(target, 2, { notPids: [victim] });
    console.log(`SIGKILL of a worker under wrk (${CONNECTIONS} connections): ${r.requests} requests, ${r.failures} failed (${r.non2xx} non-2xx, socket errors ${JSON.stringify(r.socketErrors)}); nginx errors: ${nginx.errorLogProblems().length}`);
    // A worker holds at most one request per nginx connection in flight,
    // and nginx opens at most one upstream connection per client connection
    // here: at most CONNECTIONS requests can be lost.
    expect(r.failures, r.output).toBeLessThanOrEqual(CONNECTIONS);
    expect(r.requests).toBeGreaterThan(r.failures);
    expect(now).toContain(other);
    // Served again afterwards, through nginx.
    expect((await fetch(`${nginx.url}/`)).status).toBe(200);
  }, 60000);
});
