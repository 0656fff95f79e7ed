/**
 * Real child processes for the lifecycle tests: spawn with a bounded
 * lifetime, capture stdout/stderr, wait (bounded) for output or exit, and
 * kill whatever is still running after each test. A failed test prints the
 * transcript of every child it started. Raw FastCGI connections a test opens
 * to its children (connect) are destroyed after it too (cleanUpAfterTest);
 * requestBody sends one whole request to a child.
 *
 * The children load the library's built output (dist/), so every test file
 * checks first that dist/ is newer than src/ (see assertDistFresh).
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, onTestFailed } from 'vitest';

import { defaultParams, FcgiConnection, fcgiRequest, type FcgiTarget, parseCgiResponse } from '../helpers/fcgi-client.js';

/** Repository root (/work/main). */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));

/** Absolute path of a fixture in test/lifecycle/fixtures. */
export function fixture(name: string): string {
  const p = path.join(FIXTURES, name);
  if (!existsSync(p)) throw new Error(`missing fixture ${p}`);
  return p;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(full));
    else if (entry.name.endsWith('.ts')) out.push(full);
  }
  return out;
}

/**
 * Throws unless each of `files` (relative to the root, default dist/index.js)
 * exists and is newer than every src/**.ts: the children import dist/, and
 * a stale build would test old code.
 */
export function assertDistFresh(files: string[] = ['dist/index.js']): void {
  const srcDir = path.join(ROOT, 'src');
  const sources = sourceFiles(srcDir);
  for (const rel of files) {
    const built = path.join(ROOT, rel);
    if (!existsSync(built)) {
      throw new Error(`${rel} does not exist: the lifecycle tests run the built library; run \`npx tsup\` in ${ROOT} first`);
    }
    const builtAt = statSync(built).mtimeMs;
    const newer = sources.filter((f) => statSync(f).mtimeMs > builtAt).map((f) => path.relative(ROOT, f));
    if (newer.length > 0) {
      throw new Error(`${rel} is older than ${newer.join(', ')}: the lifecycle tests would run a stale build; run \`npx tsup\` in ${ROOT} first`);
    }
  }
}

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface StartOptions {
  /** Extra arguments for node before the script (e.g. --expose-gc); startChild only. */
  nodeArgs?: string[];
  env?: Record<string, string | undefined>;
  /** stdin of the child: 'pipe' (default, a socketpair made by libuv), 'ignore' (/dev/null). */
  stdin?: 'pipe' | 'ignore';
  /** The child is SIGKILLed after this long no matter what (default 30000 ms). */
  lifetimeMs?: number;
  /** Name used in messages. */
  name?: string;
}

const live = new Set<Child>();

export class Child {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly commandLine: string;
  stdout = '';
  stderr = '';
  /** Set once the process has exited. */
  result: ChildExit | undefined;
  /** True if the lifetime timer had to kill it. */
  killedByLifetime = false;
  /** Resolves when the process has exited and its output is drained. */
  readonly exited: Promise<ChildExit>;
  private readonly changeListeners = new Set<() => void>();
  private readonly lifetime: NodeJS.Timeout;

  constructor(command: string, args: string[], opts: StartOptions) {
    this.commandLine = [command, ...args].join(' ');
    this.name = opts.name ?? path.basename(args.find((a) => a.includes('fixtures')) ?? command);
    const stdio: StdioOptions = [opts.stdin ?? 'pipe', 'pipe', 'pipe'];
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries({ ...process.env, ...opts.env })) if (v !== undefined) env[k] = v;
    // vitest's environment must not leak into the children's behaviour.
    delete env['NODE_OPTIONS'];
    this.proc = spawn(command, args, { stdio, env, cwd: ROOT });
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stdout!.on('data', (d: string) => {
      this.stdout += d;
      this.notify();
    });
    this.proc.stderr!.on('data', (d: string) => {
      this.stderr += d;
      this.notify();
    });
    this.proc.stdin?.on('error', () => {});
    this.lifetime = setTimeout(() => {
      if (this.alive) {
        this.killedByLifetime = true;
        this.proc.kill('SIGKILL');
      }
    }, opts.lifetimeMs ?? 30000);
    this.exited = new Promise<ChildExit>((resolve) => {
      let settled = false;
      const settle = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (settled) return;
        settled = true;
        clearTimeout(this.lifetime);
        this.result = { code, signal };
        live.delete(this);
        this.notify();
        resolve(this.result);
      };
      this.proc.on('error', (err) => {
        this.stderr += `\n[spawn error: ${err.message}]`;
        settle(null, null);
      });
      // 'close' comes after the output is drained; do not wait for it forever.
      this.proc.on('exit', (code, signal) => {
        const t = setTimeout(() => settle(code, signal), 2000);
        this.proc.once('close', () => {
          clearTimeout(t);
          settle(code, signal);
        });
      });
    });
    live.add(this);
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get alive(): boolean {
    return this.result === undefined && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Everything known about the child, for failure messages. */
  describe(): string {
    const status = this.result
      ? `exited code=${this.result.code} signal=${this.result.signal}${this.killedByLifetime ? ' (killed by the lifetime timeout)' : ''}`
      : 'still running';
    return `child ${this.name} (pid ${this.pid}, ${status})\n  command: ${this.commandLine}\n  --- stdout ---\n${this.stdout}\n  --- stderr ---\n${this.stderr}\n  --------------`;
  }

  private notify(): void {
    for (const l of [...this.changeListeners]) l();
  }

  private waitChange(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.changeListeners.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.changeListeners.add(done);
    });
  }

  /**
   * Resolves with the first match of `pattern` in the child's stdout (or
   * stderr). Rejects, with the transcript, on timeout or if the child exits
   * without printing it.
   */
  async waitForOutput(
    pattern: RegExp | string,
    opts: { stream?: 'stdout' | 'stderr'; timeoutMs?: number } = {},
  ): Promise<RegExpMatchArray> {
    const stream = opts.stream ?? 'stdout';
    const timeoutMs = opts.timeoutMs ?? 10000;
    const re = typeof pattern === 'string' ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : pattern;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(stream === 'stdout' ? this.stdout : this.stderr);
      if (m) return m;
      if (this.result) {
        throw new Error(`${this.name} exited before printing ${re} on ${stream}\n${this.describe()}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${re} on ${stream} of ${this.name}\n${this.describe()}`);
      await this.waitChange(left);
    }
  }

  /** Resolves with the exit status; rejects, with the transcript, if it is still running after `timeoutMs`. */
  async waitExit(timeoutMs = 10000): Promise<ChildExit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${this.name} did not exit within ${timeoutMs} ms\n${this.describe()}`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.alive) this.proc.kill(signal);
  }

  /** The lines of stdout, trimmed, without empty ones. */
  lines(): string[] {
    return this.stdout.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  }
}

/**
 * Starts `node [nodeArgs] script ...args`.
 * Inside a test, a failure of that test prints the child's transcript.
 */
export function startChild(script: string, args: string[] = [], opts: StartOptions = {}): Child {
  return track(new Child(process.execPath, [...(opts.nodeArgs ?? []), script, ...args], opts));
}

/** Starts any program (e.g. spawn-fcgi), tracked like startChild. */
export function startProgram(command: string, args: string[], opts: StartOptions = {}): Child {
  return track(new Child(command, args, opts));
}

function track(child: Child): Child {
  try {
    onTestFailed(() => {
      console.error(`[lifecycle] transcript of a child of the failed test:\n${child.describe()}`);
    });
  } catch {
    // not inside a test (e.g. a hook): nothing to attach to
  }
  return child;
}

/** SIGKILLs every child still running and waits (bounded) for them. For afterEach. */
export async function killAllChildren(): Promise<void> {
  const children = [...live];
  for (const c of children) c.kill('SIGKILL');
  await Promise.race([
    Promise.all(children.map((c) => c.exited)),
    new Promise((resolve) => setTimeout(resolve, 5000)),
  ]);
}

const connections = new Set<FcgiConnection>();

/** A raw FastCGI connection to the unix socket `path` (5 s to connect), destroyed by cleanUpAfterTest. */
export async function connect(path: string): Promise<FcgiConnection> {
  const c = await FcgiConnection.connect({ path }, 5000);
  connections.add(c);
  return c;
}

/** Sends one request (REQUEST_URI `uri`, body `stdin`) to a child serving on `target`; expects it completed and resolves with the response body. */
export async function requestBody(target: FcgiTarget, uri: string, stdin: string): Promise<string> {
  const r = await fcgiRequest(target, { params: defaultParams({ REQUEST_URI: uri }), stdin, timeoutMs: 10000 });
  expect(r.protocolStatus).toBe(0);
  return parseCgiResponse(r.stdout).body.toString();
}

/** For afterEach: destroys the connections opened with connect(), then kills every child (killAllChildren). */
export async function cleanUpAfterTest(): Promise<void> {
  for (const c of connections) c.destroy();
  connections.clear();
  await killAllChildren();
}

/** Text that shows a native crash or abort in a child's stderr. */
export const CRASH_PATTERN =
  /Abort|Aborted|terminate called|Assertion|FATAL ERROR|Segmentation fault|core dumped|double free|corrupted|napi_fatal|Fatal error|pure virtual/i;
