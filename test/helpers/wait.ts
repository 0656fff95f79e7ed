/**
 * Small, dependency-free waiting utilities for tests. Every wait is bounded
 * and rejects with a descriptive Error when its time runs out.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Linux sun_path is 108 bytes including the NUL; macOS has 104. Stay below both. */
const MAX_SOCKET_PATH = 100;

/**
 * Resolves/rejects like `promise`, but rejects with
 * `Error("Timed out after <ms> ms waiting for <what>")` if it takes longer than `ms`.
 */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`Timed out after ${ms} ms waiting for ${what}`));
    }, ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface WaitForOptions {
  /** Total time allowed (default 5000 ms). */
  timeoutMs?: number;
  /** Delay between polls (default 20 ms). */
  intervalMs?: number;
  /** Description used in the timeout error message. */
  what?: string;
}

/**
 * Polls `predicate` until it returns a truthy value (which is returned).
 * Exceptions thrown by the predicate are remembered and treated as "not yet";
 * the last one is appended to the timeout error.
 */
export async function waitFor<T>(
  predicate: () => T | Promise<T>,
  opts: WaitForOptions = {},
): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const intervalMs = opts.intervalMs ?? 20;
  const what = opts.what ?? 'condition';
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await predicate();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const suffix =
        lastError !== undefined
          ? ` (last error: ${lastError instanceof Error ? lastError.message : String(lastError)})`
          : '';
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}${suffix}`);
    }
    await sleep(Math.min(intervalMs, Math.max(1, deadline - Date.now())));
  }
}

const exitCleanups = new Set<() => void>();
let exitHooksInstalled = false;

function runExitCleanups(): void {
  for (const fn of [...exitCleanups]) {
    try {
      fn();
    } catch {
      // best effort
    }
  }
}

/** True while a process with this pid exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Run `fn` (synchronously) when the test process goes away: on normal exit
 * and on SIGTERM/SIGINT/SIGHUP (vitest stops its fork workers with SIGTERM,
 * which skips 'exit' handlers). After cleaning up, a signal is re-raised
 * with its default action unless someone else listens for it.
 * Returns a function that unregisters `fn`.
 */
export function registerExitCleanup(fn: () => void): () => void {
  exitCleanups.add(fn);
  if (!exitHooksInstalled) {
    exitHooksInstalled = true;
    process.on('exit', runExitCleanups);
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
      process.once(sig, () => {
        runExitCleanups();
        if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
      });
    }
  }
  return () => exitCleanups.delete(fn);
}

const tmpDirs = new Set<string>();

function rememberTmpDir(dir: string): void {
  if (tmpDirs.size === 0) registerExitCleanup(removeTmpSocketDirs);
  tmpDirs.add(dir);
}

/** Removes every directory created by tmpSocketPath (also done automatically at exit). */
export function removeTmpSocketDirs(): void {
  for (const dir of tmpDirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // best effort
    }
  }
  tmpDirs.clear();
}

/**
 * A unique, not-yet-existing unix socket path `<fresh mkdtemp dir>/<name>.sock`,
 * short enough for sun_path. The directory is removed when the process exits
 * (or by removeTmpSocketDirs()).
 */
export function tmpSocketPath(name = 'fcgi'): string {
  const safe = name.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 24) || 'sock';
  const candidates = [tmpdir(), '/tmp'];
  for (const base of candidates) {
    // mkdtemp appends 6 characters to the prefix.
    const expectedLen = join(base, 'fcgi-XXXXXX', `${safe}.sock`).length;
    if (expectedLen > MAX_SOCKET_PATH) continue;
    const dir = mkdtempSync(join(base, 'fcgi-'));
    rememberTmpDir(dir);
    return join(dir, `${safe}.sock`);
  }
  throw new Error(`tmpSocketPath: cannot build a socket path for "${name}" shorter than ${MAX_SOCKET_PATH} bytes`);
}

/**
 * A TCP port that was free on `host` a moment ago (listen on port 0, read, close).
 * Inherently racy; callers that bind it later should retry on EADDRINUSE.
 */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return withTimeout(
    new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.unref();
      srv.once('error', reject);
      srv.listen({ port: 0, host, exclusive: true }, () => {
        const addr = srv.address();
        if (addr === null || typeof addr === 'string') {
          srv.close();
          reject(new Error('freePort: unexpected server address'));
          return;
        }
        const { port } = addr;
        srv.close((err) => (err ? reject(err) : resolve(port)));
      });
    }),
    5000,
    `a free port on ${host}`,
  );
}
