/**
 * The runnable examples and the demo, run as a user runs them: as child
 * processes of their own, with a real nginx (scripts/demo.mjs starts it from
 * examples/nginx.conf) or the raw FastCGI client. They use the built package
 * (dist/), which scripts/setup.sh makes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

import {
  encodeBeginRequest,
  encodeParams,
  encodeRecord,
  FCGI_RESPONDER,
  FCGI_STDIN,
  FcgiConnection,
  defaultParams,
  fcgiRequest,
  parseCgiResponse,
} from '../helpers/fcgi-client.js';
import { tmpSocketPath, waitFor, withTimeout } from '../helpers/wait.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** A child process with its output collected and its exit as a promise. */
class Child {
  readonly proc: ChildProcess;
  readonly detached: boolean;
  output = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #listeners = new Set<() => void>();

  constructor(args: string[], detached = false) {
    this.detached = detached;
    this.proc = spawn(process.execPath, args, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], detached });
    const onData = (d: Buffer): void => {
      this.output += d.toString();
      for (const l of this.#listeners) l();
    };
    this.proc.stdout?.on('data', onData);
    this.proc.stderr?.on('data', onData);
    this.exited = new Promise((res) => this.proc.once('exit', (code, signal) => res({ code, signal })));
    children.add(this);
  }

  get pid(): number {
    if (this.proc.pid === undefined) throw new Error('child did not start');
    return this.proc.pid;
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Resolves with the first match of `re` in the output so far or to come. */
  waitOutput(re: RegExp, ms: number): Promise<RegExpMatchArray> {
    return withTimeout(
      new Promise<RegExpMatchArray>((res, rej) => {
        const check = (): void => {
          const m = re.exec(this.output);
          if (m) {
            this.#listeners.delete(check);
            res(m);
          } else if (!this.alive) {
            this.#listeners.delete(check);
            rej(new Error(`exited before printing ${re}; output:\n${this.output}`));
          }
        };
        this.#listeners.add(check);
        this.proc.once('exit', check);
        check();
      }),
      ms,
      `${re} in the output of ${this.proc.spawnargs.slice(1).join(' ')} (so far:\n${this.output})`,
    );
  }

  waitExit(ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return withTimeout(this.exited, ms, `exit of ${this.proc.spawnargs.slice(1).join(' ')}; output:\n${this.output}`);
  }
}

const children = new Set<Child>();
const groups = new Set<number>();

afterEach(async () => {
  for (const c of children) {
    // nginx started by a demo runs in a process group of its own
    for (const m of c.output.matchAll(/nginx master pid (\d+)/g)) groups.add(Number(m[1]));
    if (c.alive) {
      try {
        process.kill(c.detached ? -c.pid : c.pid, 'SIGKILL');
      } catch {
        c.proc.kill('SIGKILL');
      }
      await c.exited;
    }
  }
  for (const g of groups) {
    try {
      process.kill(-g, 'SIGKILL');
    } catch {
      // gone, as it should be
    }
  }
  children.clear();
  groups.clear();
});

interface ProcInfo {
  pid: number;
  state: string;
  pgid: number;
  cmdline: string;
}

/** Every process of this machine that is not a zombie, from /proc. */
function processes(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const state = fields[0]!;
      if (state === 'Z' || state === 'X') continue;
      const cmdline = readFileSync(`/proc/${name}/cmdline`, 'utf8').replaceAll('\0', ' ');
      out.push({ pid: Number(name), state, pgid: Number(fields[2]), cmdline });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Waits (bounded) until no live process is in one of `pgids` or mentions `marker`; returns the leftovers otherwise. */
async function leftovers(pgids: number[], marker: string): Promise<ProcInfo[]> {
  const find = (): ProcInfo[] => processes().filter((p) => pgids.includes(p.pgid) || p.cmdline.includes(marker));
  try {
    await waitFor(() => find().length === 0, { timeoutMs: 3000, what: 'the demo\'s processes to be gone' });
    return [];
  } catch {
    return find();
  }
}

/** The pids, temp dir and answers a demo run printed. */
function demoFacts(output: string): { appPid: number; nginxPid?: number; tmp: string } {
  const app = /application pid (\d+)/.exec(output);
  const tmp = /(\/\S*libfcgi-demo-[A-Za-z0-9]+)\//.exec(output);
  if (!app || !tmp) throw new Error(`demo output lacks the application pid or temp dir:\n${output}`);
  const nginx = /nginx master pid (\d+)/.exec(output);
  return { appPid: Number(app[1]), nginxPid: nginx ? Number(nginx[1]) : undefined, tmp: tmp[1]! };
}

describe('scripts/demo.mjs', () => {
  it('serves Hello World through nginx configured by examples/nginx.conf, then leaves nothing running', async () => {
    const demo = new Child(['scripts/demo.mjs'], true);
    groups.add(demo.pid);
    const { code } = await demo.waitExit(45000);
    const facts = demoFacts(demo.output);
    if (facts.nginxPid) groups.add(facts.nginxPid);
    expect(code, demo.output).toBe(0);
    // three requests, each answered by the example through nginx
    for (const uri of ['/hello', '/hello?name=nginx', '/hello/again']) {
      expect(demo.output).toMatch(new RegExp(`GET http://127\\.0\\.0\\.1:\\d+${uri.replace(/[?]/g, '\\?')} -> 200 OK \\(server: nginx/`));
      expect(demo.output).toContain(`Hello World from ${uri} `);
    }
    expect(facts.nginxPid).toBeTypeOf('number');
    expect(demo.output).toContain('accept-loop: served 3 requests, bye');
    expect(demo.output).toMatch(/demo: done\n$/);
    expect(await leftovers([demo.pid, facts.nginxPid!], facts.tmp)).toEqual([]);
    expect(existsSync(facts.tmp)).toBe(false);
  }, 60000);

  it('--no-nginx: shows the response through libfcgi request', async () => {
    const demo = new Child(['scripts/demo.mjs', '--no-nginx'], true);
    groups.add(demo.pid);
    const { code } = await demo.waitExit(30000);
    const facts = demoFacts(demo.output);
    expect(code, demo.output).toBe(0);
    expect(demo.output).toContain('libfcgi request --connect');
    expect(demo.output).toContain('Content-Type: text/plain');
    expect(demo.output).toContain('Hello World from /hello/again ');
    expect(facts.nginxPid).toBeUndefined();
    expect(await leftovers([demo.pid], facts.tmp)).toEqual([]);
  }, 45000);

  it('Ctrl-C (SIGINT to its process group) stops nginx and the application, exit 130', async () => {
    const demo = new Child(['scripts/demo.mjs', '--keep'], true);
    groups.add(demo.pid);
    const m = await demo.waitOutput(/curl (http:\/\/127\.0\.0\.1:\d+)\/anything; press Ctrl-C/, 30000);
    const facts = demoFacts(demo.output);
    expect(facts.nginxPid).toBeTypeOf('number');
    groups.add(facts.nginxPid!);
    // still serving while kept
    const res = await withTimeout(fetch(`${m[1]}/kept`, { signal: AbortSignal.timeout(5000) }), 6000, 'GET /kept');
    expect(await res.text()).toContain('Hello World from /kept ');
    process.kill(-demo.pid, 'SIGINT'); // what a terminal does on Ctrl-C
    const { code } = await demo.waitExit(15000);
    expect(code, demo.output).toBe(130);
    expect(demo.output).toContain('accept-loop: served 4 requests, bye');
    expect(await leftovers([demo.pid, facts.nginxPid!], facts.tmp)).toEqual([]);
    expect(existsSync(facts.tmp)).toBe(false);
  }, 60000);
});

describe('examples/threaded.mjs', () => {
  it('serves 50 requests on 8 Request objects; SIGINT lets the request in flight finish, prints the count, exit 0', async () => {
    const path = tmpSocketPath('threaded');
    const app = new Child(['examples/threaded.mjs', path, '8']);
    await app.waitOutput(/threaded: 8 workers listening on unix:/, 15000);

    const line = /^Hello World from (\S+): worker (\d+) \(its request (\d+)\), request (\d+) in all, (\d+) body bytes\n$/;
    const get = async (uri: string): Promise<RegExpExecArray> => {
      const r = await fcgiRequest({ path }, { params: defaultParams({ REQUEST_URI: uri }), timeoutMs: 10000 });
      expect(r.protocolStatus).toBe(0);
      const res = parseCgiResponse(r.stdout);
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toBe('text/plain');
      const m = line.exec(res.body.toString());
      if (!m) throw new Error(`unexpected body ${JSON.stringify(res.body.toString())}`);
      expect(m[1]).toBe(uri);
      return m;
    };

    // 50 requests, 10 at a time
    const answers: RegExpExecArray[] = [];
    for (let round = 0; round < 5; round++) {
      answers.push(...(await Promise.all(Array.from({ length: 10 }, (_, i) => get(`/r/${round * 10 + i}`)))));
    }
    const totals = answers.map((m) => Number(m[4])).sort((a, b) => a - b);
    expect(totals).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    const workers = new Set(answers.map((m) => Number(m[2])));
    for (const w of workers) expect(w >= 1 && w <= 8).toBe(true);
    expect(workers.size).toBeGreaterThan(1);
    // each worker's own count runs 1..n without gaps
    for (const w of workers) {
      const own = answers.filter((m) => Number(m[2]) === w).map((m) => Number(m[3])).sort((a, b) => a - b);
      expect(own).toEqual(own.map((_, i) => i + 1));
    }

    // A request in flight: params sent, body only half sent.
    const conn = await FcgiConnection.connect({ path });
    const body = Buffer.from('0123456789');
    await conn.write(Buffer.concat([
      encodeBeginRequest(1, FCGI_RESPONDER, false),
      encodeParams(1, defaultParams({ REQUEST_URI: '/in-flight' }, body)),
      encodeRecord(FCGI_STDIN, 1, body.subarray(0, 4)),
    ]));
    // It counts as accepted once the total of a later request skips a number.
    let probes = 0;
    await waitFor(async () => {
      probes++;
      const m = await get(`/probe/${probes}`);
      return Number(m[4]) === 50 + probes + 1;
    }, { timeoutMs: 10000, intervalMs: 50, what: 'the in-flight request to be accepted' });

    app.proc.kill('SIGINT');
    await app.waitOutput(/threaded: SIGINT, closing/, 5000);
    await waitFor(() => !existsSync(path), { timeoutMs: 5000, what: 'the socket file to be removed' });
    expect(app.alive).toBe(true); // waits for the request in flight

    await conn.write(Buffer.concat([encodeRecord(FCGI_STDIN, 1, body.subarray(4)), encodeRecord(FCGI_STDIN, 1, Buffer.alloc(0))]));
    const r = await conn.readUntilEnd(1, 10000);
    conn.destroy();
    expect(r.protocolStatus).toBe(0);
    expect(parseCgiResponse(r.stdout).body.toString()).toMatch(/^Hello World from \/in-flight: worker \d+ \(its request \d+\), request \d+ in all, 10 body bytes\n$/);

    const { code, signal } = await app.waitExit(10000);
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(app.output).toMatch(new RegExp(`threaded: served ${50 + probes + 1} requests \\(per worker: (\\d+ ){7}\\d+\\), bye\\n$`));
  }, 60000);
});
