/**
 * Runs a server daemon (nginx, Apache httpd) for tests so that it never
 * outlives the test process. Each daemon is spawned in its own process group,
 * which is killed as a whole: on stop(), on process exit, on
 * SIGTERM/SIGINT/SIGHUP (vitest stops its fork workers with SIGTERM, which
 * skips 'exit' handlers; see registerExitCleanup), and — should the test
 * process be SIGKILLed — by a tiny watchdog shell that notices its stdin pipe
 * from us closing. The daemon's temporary directory is removed in every case.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, registerExitCleanup, sleep } from './wait.js';

/** What to run and how to stop it. */
export interface DaemonSpec {
  /** Executable path. */
  command: string;
  args: string[];
  /** Environment (default: inherit ours). */
  env?: NodeJS.ProcessEnv;
  /** Temporary directory owned by the daemon; removed when it stops (or we die). */
  dir: string;
  /** Signal asking for a graceful shutdown (nginx: SIGQUIT, apache2: SIGTERM). */
  stopSignal: NodeJS.Signals;
}

/** How to tell that a freshly spawned daemon is up, and how to report that it is not. */
export interface ReadyCheck {
  /** A file the daemon writes only once its listening socket is bound (its pid file). */
  pidFile: string;
  /** TCP port on 127.0.0.1 that must accept connections. */
  port: number;
  timeoutMs: number;
  /** The daemon's error log, shown in the failure report. */
  errorLog: string;
  /** The error message for a failed start, from the reason, the daemon's stdout+stderr and its error log. */
  describeFailure(why: string, output: string, log: string): string;
  /** Matches output/log text meaning the port was taken (the start is then worth retrying). */
  addressInUse: RegExp;
}

/** What a DaemonPrepare returns: how to run the daemon it laid out and how to check it came up. */
export type DaemonPlan = Omit<DaemonSpec, 'dir'> & Omit<ReadyCheck, 'port' | 'timeoutMs'>;

/** Lays out the fresh directory `dir` for a daemon to listen on 127.0.0.1:`port`; says how to run it. */
export type DaemonPrepare<P extends DaemonPlan> = (dir: string, port: number) => P;

/** A daemon that came up: the Daemon, its directory, its port, its base URL and the plan it was run from. */
export interface StartedDaemon<P extends DaemonPlan> {
  daemon: Daemon;
  dir: string;
  port: number;
  /** `http://127.0.0.1:<port>` (no trailing slash). */
  url: string;
  plan: P;
}

/** A failed daemon start; `addressInUse` marks a port clash, which is retried. */
class DaemonStartError extends Error {
  constructor(
    message: string,
    readonly addressInUse: boolean,
  ) {
    super(message);
  }
}

/** Every daemon spawned and not yet stopped, killed by the exit-time cleanup. */
const live = new Set<Daemon>();
let exitCleanupRegistered = false;

function killAllSync(): void {
  for (const d of live) d.killSync();
  live.clear();
}

/**
 * A watchdog shell in its own process group: it blocks reading a pipe whose
 * write end only we hold. If we die (even by SIGKILL) the read returns and it
 * kills the daemon's process group and removes its directory. On a normal
 * stop we SIGKILL the watchdog.
 */
function startWatchdog(pgid: number, dir: string): ChildProcess | undefined {
  try {
    // dash's kill wants `kill -9 -PGID` (it rejects `--` and `-s KILL -PGID`).
    const script = 'read _x; kill -9 "-$0" 2>/dev/null; sleep 0.2; rm -rf "$1"';
    const wd = spawn('/bin/sh', ['-c', script, String(pgid), dir], {
      stdio: ['pipe', 'ignore', 'ignore'],
      detached: true,
    });
    wd.on('error', () => {});
    const stdin = wd.stdin as Socket | null;
    stdin?.on('error', () => {});
    stdin?.unref();
    wd.unref();
    return wd;
  } catch {
    return undefined;
  }
}

/** Contents of `path`, or '' if it cannot be read. */
export function readIfExists(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** The lines of the file at `path` (missing: none) that match `pattern`. */
export function linesMatching(path: string, pattern: RegExp): string[] {
  return readIfExists(path)
    .split('\n')
    .filter((l) => pattern.test(l));
}

/** Whether 127.0.0.1:port accepts a TCP connection within `timeoutMs`. */
function tcpProbe(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect({ port, host: '127.0.0.1' });
    const timer = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      clearTimeout(timer);
      s.destroy();
      resolve(false);
    });
  });
}

/** One spawned daemon (process-group leader), its watchdog and its temporary directory; made by DaemonGroup.start. */
export class Daemon {
  private readonly child: ChildProcess;
  private watchdog: ChildProcess | undefined;
  private exited = false;
  private spawnError: Error | undefined;
  /** Everything the daemon wrote to stdout and stderr. */
  private captured = '';

  constructor(
    private readonly spec: DaemonSpec,
    private readonly group: Set<Daemon>,
  ) {
    if (!exitCleanupRegistered) {
      exitCleanupRegistered = true;
      registerExitCleanup(killAllSync);
    }
    this.child = spawn(spec.command, spec.args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // own process group => the daemon and its workers are killed together
      ...(spec.env ? { env: spec.env } : {}),
    });
    live.add(this);
    group.add(this);
    const child = this.child;
    child.stdout?.on('data', (d: Buffer) => (this.captured += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.captured += d.toString()));
    child.on('error', (err) => (this.spawnError = err));
    child.on('exit', () => {
      this.exited = true;
    });
    child.unref();
    // Do not let the daemon's pipes keep the test process alive.
    (child.stdout as Socket | null)?.unref();
    (child.stderr as Socket | null)?.unref();
    if (child.pid !== undefined) this.watchdog = startWatchdog(child.pid, spec.dir);
  }

  /** The daemon's pid, or -1 if it could not be spawned. */
  get pid(): number {
    return this.child.pid ?? -1;
  }

  /**
   * Waits until the pid file exists and the port accepts connections. The pid
   * file is written only after the daemon bound its sockets, so both together
   * mean it is *our* daemon listening (not some other process that grabbed the
   * port in the meantime). Otherwise stops the daemon and throws a DaemonStartError.
   */
  async waitUntilListening(check: ReadyCheck): Promise<void> {
    const deadline = Date.now() + check.timeoutMs;
    const exitReason = (): string => `exited with code ${this.child.exitCode} signal ${this.child.signalCode}`;
    for (;;) {
      if (this.spawnError) return this.failStart(check, `spawn error: ${this.spawnError.message}`);
      if (this.exited) return this.failStart(check, exitReason());
      if (existsSync(check.pidFile) && (await tcpProbe(check.port, 500)) && !this.exited) return;
      if (this.exited) return this.failStart(check, exitReason());
      if (Date.now() >= deadline) {
        return this.failStart(check, `port ${check.port} not accepting connections after ${check.timeoutMs} ms`);
      }
      await sleep(50);
    }
  }

  private async failStart(check: ReadyCheck, why: string): Promise<never> {
    const log = readIfExists(check.errorLog);
    const text = `${this.captured}\n${log}`;
    await this.stop().catch(() => {});
    throw new DaemonStartError(check.describeFailure(why, this.captured, log), check.addressInUse.test(text));
  }

  private waitExit(timeoutMs: number): Promise<boolean> {
    if (this.exited) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.child.off('exit', onExit);
        resolve(false);
      }, timeoutMs);
      const onExit = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      this.child.once('exit', onExit);
    });
  }

  private killGroup(): void {
    if (this.child.pid === undefined) return;
    try {
      process.kill(-this.child.pid, 'SIGKILL');
    } catch {
      // none left
    }
  }

  private killWatchdog(): void {
    try {
      this.watchdog?.kill('SIGKILL');
    } catch {
      // ignore
    }
  }

  /** Synchronous last-resort cleanup (exit/signal): SIGKILL the group and the watchdog, remove the directory. */
  killSync(): void {
    if (!this.exited) this.killGroup();
    this.killWatchdog();
    try {
      rmSync(this.spec.dir, { recursive: true, force: true });
    } catch {
      // ignore
    }
  }

  /**
   * Graceful stop: the stop signal, up to 5 s for the daemon to exit, else
   * SIGKILL its group and wait up to 2 s more; then SIGKILL any straggler of
   * the group, the watchdog, and remove the directory.
   */
  async stop(): Promise<void> {
    if (!this.exited && this.child.pid !== undefined) {
      try {
        process.kill(this.child.pid, this.spec.stopSignal);
      } catch {
        // gone
      }
      if (!(await this.waitExit(5000))) {
        this.killGroup();
        await this.waitExit(2000);
      }
    }
    // Kill any straggling worker of the group (harmless if none).
    this.killGroup();
    this.killWatchdog();
    live.delete(this);
    this.group.delete(this);
    rmSync(this.spec.dir, { recursive: true, force: true });
  }
}

/** The daemons of one kind (all nginx, all Apache), so each helper can stop just its own. */
export class DaemonGroup {
  private readonly members = new Set<Daemon>();

  /** `tmpPrefix`: mkdtemp prefix under the OS temp directory for this kind's directories, e.g. "nginx-test-". */
  constructor(private readonly tmpPrefix: string) {}

  /**
   * Start a daemon on a free port in a new temporary directory laid out by
   * `prepare`, and wait up to `startTimeoutMs` until it accepts connections.
   * Retried up to 3 times when the port turns out to be taken (freePort is
   * inherently racy).
   */
  async start<P extends DaemonPlan>(prepare: DaemonPrepare<P>, startTimeoutMs = 10000): Promise<StartedDaemon<P>> {
    let lastErr: unknown;
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        return await this.startOnce(prepare, startTimeoutMs);
      } catch (err) {
        lastErr = err;
        if (!(err instanceof DaemonStartError) || !err.addressInUse) throw err;
      }
    }
    throw lastErr;
  }

  private async startOnce<P extends DaemonPlan>(
    prepare: DaemonPrepare<P>,
    startTimeoutMs: number,
  ): Promise<StartedDaemon<P>> {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), this.tmpPrefix));
    let plan: P;
    try {
      plan = prepare(dir, port);
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    const { command, args, env, stopSignal, ...check } = plan;
    const daemon = new Daemon({ command, args, env, stopSignal, dir }, this.members);
    await daemon.waitUntilListening({ ...check, port, timeoutMs: startTimeoutMs });
    return { daemon, dir, port, url: `http://127.0.0.1:${port}`, plan };
  }

  /** Stop every daemon of this group that is still running, ignoring errors. */
  async stopAll(): Promise<void> {
    await Promise.all([...this.members].map((d) => d.stop().catch(() => {})));
  }
}
