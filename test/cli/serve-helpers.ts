/**
 * Helpers for the `libfcgi serve` tests: they run the built command
 * (dist/cli.js, dist/cli-worker.js) as real processes.
 *
 * Each supervisor is started in its own process group (detached), so its
 * workers are in that group too: killAllServes() (afterEach) and the exit
 * cleanup SIGKILL the whole group, and no worker outlives a test even when
 * the supervisor misbehaves.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { defaultParams, fcgiRequest, type FcgiTarget, parseCgiResponse } from '../helpers/fcgi-client.js';
import { alive, registerExitCleanup, sleep, waitFor, withTimeout } from '../helpers/wait.js';
import { ROOT } from '../lifecycle/child.js';

export { ROOT };
export const CLI = path.join(ROOT, 'dist/cli.js');

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Serve {
  child: ChildProcess;
  pid: number;
  stdout(): string;
  stderr(): string;
  /** Resolves when the supervisor exits (with how it exited and when). */
  exited: Promise<Exit & { at: number }>;
  /** Waits (bounded) for a line of stderr matching `re`; returns the match. */
  waitForLog(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  waitExit(timeoutMs?: number): Promise<Exit & { at: number }>;
  kill(signal: NodeJS.Signals): void;
  describe(): string;
}

const running = new Set<Serve>();

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // gone already
  }
}

let cleanupRegistered = false;

/** `node dist/cli.js serve ...args`. */
export function startServe(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Serve {
  if (!cleanupRegistered) {
    cleanupRegistered = true;
    registerExitCleanup(() => {
      for (const s of running) killGroup(s.pid);
    });
  }
  const child = spawn(process.execPath, [CLI, 'serve', ...args], {
    cwd: opts.cwd ?? ROOT,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const exited = new Promise<Exit & { at: number }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() }));
  });
  const s: Serve = {
    child,
    pid: child.pid!,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitForLog: (re, timeoutMs = 10000) =>
      waitFor(() => err.match(re), { timeoutMs, what: `${re} in the stderr of libfcgi serve:\n${err}` }),
    waitExit: (timeoutMs = 10000) =>
      withTimeout(exited, timeoutMs, 'libfcgi serve to exit').catch((e: Error) => {
        throw new Error(`${e.message}; stderr:\n${err}`);
      }),
    kill: (signal) => child.kill(signal),
    describe: () => `libfcgi serve ${args.join(' ')}\n--- stdout ---\n${out}\n--- stderr ---\n${err}`,
  };
  running.add(s);
  void exited.then(() => {
    // The supervisor is gone; its group may still hold workers (a supervisor
    // killed by SIGKILL): they stop on 'disconnect', but kill them to be sure.
    killGroup(s.pid);
    running.delete(s);
  });
  return s;
}

/** afterEach: SIGKILL every supervisor still running, and its workers. */
export async function killAllServes(): Promise<void> {
  const all = [...running];
  for (const s of all) killGroup(s.pid);
  await Promise.all(all.map((s) => withTimeout(s.exited, 5000, `libfcgi serve ${s.pid} to die`).catch(() => {})));
}

/** Runs `libfcgi serve ...args` expecting it to exit by itself (usage error, app that fails to load). */
export async function runServe(args: string[], timeoutMs = 15000, env?: NodeJS.ProcessEnv): Promise<Exit & { stdout: string; stderr: string }> {
  const s = startServe(args, env ? { env } : {});
  const exit = await s.waitExit(timeoutMs);
  return { code: exit.code, signal: exit.signal, stdout: s.stdout(), stderr: s.stderr() };
}

export interface Response {
  status: number;
  headers: Record<string, string | string[]>;
  body: string;
}

/** One GET (or a request with a body) over FastCGI, the response parsed. */
export async function get(target: FcgiTarget, uri: string, timeoutMs = 10000): Promise<Response> {
  const r = await fcgiRequest(target, { params: defaultParams({ REQUEST_URI: uri }), timeoutMs });
  const res = parseCgiResponse(r.stdout);
  return { status: res.status, headers: res.headers, body: res.body.toString('utf8') };
}

export interface StatusJson {
  startTime: string;
  startSince: number;
  workers: number;
  startedWorkers: number;
  reloads: number;
  acceptedRequests: number;
  activeRequests: number;
  idleSlots: number;
  maxActiveRequests: number;
  slowRequests: number;
  perWorker: Array<{ pid: number; startTime: string; requests: number; active: number; idleSlots: number; maxActive: number; slow: number }>;
}

export async function status(target: FcgiTarget, statusPath = '/status'): Promise<StatusJson> {
  const r = await get(target, statusPath);
  if (r.status !== 200) throw new Error(`status page: ${r.status} ${r.body}`);
  return JSON.parse(r.body) as StatusJson;
}

/**
 * Waits until the status page lists exactly `n` workers, none of them in
 * `notPids` (for "every worker was replaced"); returns their pids, sorted.
 */
export async function waitForWorkers(target: FcgiTarget, n: number, opts: { notPids?: number[]; timeoutMs?: number; statusPath?: string } = {}): Promise<number[]> {
  let last: StatusJson | undefined;
  const not = new Set(opts.notPids ?? []);
  try {
    return await waitFor(
      async () => {
        last = await status(target, opts.statusPath);
        const pids = last.perWorker.map((w) => w.pid);
        return pids.length === n && pids.every((p) => !not.has(p)) ? pids.sort((a, b) => a - b) : undefined;
      },
      { timeoutMs: opts.timeoutMs ?? 15000, intervalMs: 100, what: `${n} worker(s)${not.size ? ` other than ${[...not].join(', ')}` : ''} on the status page` },
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; last status: ${JSON.stringify(last)}`, { cause: err });
  }
}

export { alive } from '../helpers/wait.js';

export async function waitDead(pids: number[], timeoutMs = 10000): Promise<void> {
  await waitFor(() => pids.every((p) => !alive(p)), { timeoutMs, what: `processes ${pids.join(', ')} to be gone` });
}

/** A temporary directory for app modules; removed by removeAppDirs() / at exit. */
const appDirs = new Set<string>();
let appCleanup = false;

export function appDir(): string {
  if (!appCleanup) {
    appCleanup = true;
    registerExitCleanup(removeAppDirs);
  }
  const d = mkdtempSync(path.join(tmpdir(), 'libfcgi-serve-app-'));
  appDirs.add(d);
  return d;
}

export function removeAppDirs(): void {
  for (const d of appDirs) rmSync(d, { recursive: true, force: true });
  appDirs.clear();
}

/** Writes `source` to `dir/name`; returns the path. */
export function writeApp(dir: string, name: string, source: string): string {
  const p = path.join(dir, name);
  writeFileSync(p, source);
  return p;
}

/**
 * An ESM app answering:
 *   /slow?ms=N   after N ms
 *   /hang        never
 *   /crash       the worker dies (uncaught exception outside the request)
 *   anything else: "<version> <pid>"
 */
export function testApp(version: string): string {
  return `
const VERSION = ${JSON.stringify(version)};
export default function app(req, res) {
  const url = new URL(req.url, 'http://localhost');
  res.setHeader('Content-Type', 'text/plain');
  if (url.pathname === '/slow') {
    setTimeout(() => res.end(VERSION + ' ' + process.pid + ' slow\\n'), Number(url.searchParams.get('ms') ?? 1000));
    return;
  }
  if (url.pathname === '/hang') return;
  if (url.pathname === '/crash') {
    setImmediate(() => { throw new Error('crash requested'); });
    return;
  }
  res.end(VERSION + ' ' + process.pid + '\\n');
}
`;
}

/** "<version> <pid>" of a testApp response. */
export function parseAnswer(body: string): { version: string; pid: number } {
  const [version, pid] = body.trim().split(' ');
  return { version: version!, pid: Number(pid) };
}

export { sleep, waitFor };
