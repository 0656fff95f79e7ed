/**
 * Starts a real Apache httpd (Debian's apache2 binary) as a child of the test
 * process, in front of a FastCGI upstream through mod_proxy_fcgi. Nothing of
 * the system's Apache set-up is used: ServerRoot, DocumentRoot, PidFile,
 * ErrorLog and the run-time directory live in a fresh temporary directory,
 * only the modules listed below are loaded (from /usr/lib/apache2/modules),
 * and the server listens on 127.0.0.1:<free port>. `apache2 -DFOREGROUND`
 * runs in its own process group, which stop() kills; like nginx.ts, every
 * instance is also killed on process exit / SIGTERM / SIGINT / SIGHUP and by
 * a watchdog shell should the test process be SIGKILLed.
 *
 * What mod_proxy_fcgi (Apache 2.4.x) sends, found by tracing it
 * (LogLevel proxy_fcgi:trace8), for `ProxyPass "/app/" "...|fcgi://localhost/sub/"`
 * and a request for `/app/b%20c/d?x=1`:
 *   REQUEST_URI      "/app/b%20c/d?x=1"  the client's request target, as sent
 *   SCRIPT_NAME      "/app/b c/d"        the *decoded* path (no PATH_INFO split)
 *   QUERY_STRING     "x=1"
 *   SCRIPT_FILENAME  "proxy:fcgi://localhost/sub/b%20c/d" (ProxyFCGIBackendType FPM,
 *                    the default) or "/sub/b%20c/d" (GENERIC): the backend URL
 *   no PATH_INFO (mod_proxy_fcgi only makes one with `SetEnv proxy-fcgi-pathinfo`)
 *   REMOTE_ADDR/REMOTE_PORT (the client), SERVER_NAME/SERVER_ADDR/SERVER_PORT,
 *   HTTP_* for every request header, CONTENT_TYPE/CONTENT_LENGTH for a body,
 *   SERVER_PROTOCOL, REQUEST_METHOD, REQUEST_SCHEME, DOCUMENT_ROOT, and Apache's
 *   own PATH. HTTPS=on only for TLS.
 * So REQUEST_URI is the one variable that gives the URL the client asked for
 * (SCRIPT_NAME is decoded; neither it nor REQUEST_URI depends on the backend
 * type; the URL path of the backend shows only in SCRIPT_FILENAME); the
 * library takes req.url from it. We set `ProxyFCGIBackendType GENERIC`: the
 * FPM default only rewrites SCRIPT_FILENAME for PHP-FPM and changes nothing a
 * Node application reads.
 *
 * On the way back, mod_proxy_fcgi re-frames the body for its client: a
 * Content-Length from the application (node:http's own for res.end(body), or
 * one set explicitly) is not passed on; HTTP/1.1 clients get
 * Transfer-Encoding: chunked (seen with Apache 2.4.71, enablereuse on or off).
 *
 * As root: Apache refuses to run its children as root, so they run as
 * `User nobody` / `Group nogroup` (the parent stays root: it opens the logs
 * and the listening socket). A child opens the application's unix socket
 * itself, so the socket must be connectable by nobody: listen with
 * `mode: 0o666` and put it in a directory others may traverse — apacheSocketPath()
 * gives such a path (tmpSocketPath's 0700 directory, made 0711). The temp
 * ServerRoot is made 0755 for the same reason. As a normal user, Apache runs
 * everything as that user and User/Group are left out.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { freePort, registerExitCleanup, sleep, tmpSocketPath } from './wait.js';

export type ApacheUpstream = { port: number; host?: string } | { path: string };

export interface StartApacheOptions {
  upstream: ApacheUpstream;
  /** URL prefix proxied to the application (default "/"). */
  prefix?: string;
  /** Path on the backend URL the prefix maps to (default "/"); only SCRIPT_FILENAME shows it. */
  backendPath?: string;
  /** `enablereuse=on`: keep FastCGI connections open between requests (FCGI_KEEP_CONN). Default false. */
  reuse?: boolean;
  /** ProxyFCGIBackendType (default GENERIC, see the top of this file). */
  backendType?: 'GENERIC' | 'FPM';
  /** ProxyTimeout in seconds (default 30). */
  timeoutSec?: number;
  /** LogLevel (default "warn"); e.g. "warn proxy_fcgi:trace8" to see every param sent. */
  logLevel?: string;
  /** Extra directives at the end of the configuration. */
  extraConfig?: string;
  /** Start timeout in ms (default 10000). */
  startTimeoutMs?: number;
}

export interface ApacheInstance {
  port: number;
  /** `http://127.0.0.1:<port>` (no trailing slash). */
  url: string;
  /** Temporary ServerRoot (config, pid file, logs). */
  root: string;
  pid: number;
  /** The generated httpd.conf. */
  config: string;
  errorLog(): string;
  /** Error-log lines at level error or worse, of any module ([proxy_fcgi:error], [core:crit]...). */
  errorLogProblems(): string[];
  stop(): Promise<void>;
}

const MODULES = '/usr/lib/apache2/modules';

interface Tracked {
  child: ChildProcess;
  watchdog: ChildProcess | undefined;
  root: string;
  exited: boolean;
}

const running = new Set<Tracked>();
let hooksInstalled = false;

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** Path of the apache2 binary; throws if Apache is not installed. */
export function apacheBinary(): string {
  for (const p of ['/usr/sbin/apache2', '/usr/sbin/httpd']) if (existsSync(p)) return p;
  throw new Error('Apache httpd is not installed (looked for /usr/sbin/apache2); these tests require it (apt-get install apache2, or bash scripts/setup.sh --test)');
}

/**
 * A fresh unix socket path (tmpSocketPath) whose directory Apache's children
 * can traverse when they run as nobody. Listen on it with `mode: 0o666`.
 */
export function apacheSocketPath(name = 'app'): string {
  const path = tmpSocketPath(name);
  chmodSync(dirname(path), 0o711);
  return path;
}

function killGroupSync(t: Tracked): void {
  if (t.exited || t.child.pid === undefined) return;
  try {
    process.kill(-t.child.pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

function cleanupAllSync(): void {
  for (const t of running) {
    killGroupSync(t);
    try {
      t.watchdog?.kill('SIGKILL');
    } catch {
      // ignore
    }
    try {
      rmSync(t.root, { recursive: true, force: true });
    } catch {
      // ignore
    }
  }
  running.clear();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  registerExitCleanup(cleanupAllSync);
}

/** As nginx.ts: a shell that kills Apache's process group when our end of its stdin pipe closes. */
function startWatchdog(pgid: number, root: string): ChildProcess | undefined {
  try {
    const script = 'read _x; kill -9 "-$0" 2>/dev/null; sleep 0.2; rm -rf "$1"';
    const wd = spawn('/bin/sh', ['-c', script, String(pgid), root], {
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

function backendUrl(u: ApacheUpstream, path: string): string {
  if ('path' in u) return `unix:${u.path}|fcgi://localhost${path}`;
  const host = u.host ?? '127.0.0.1';
  return `fcgi://${host.includes(':') ? `[${host}]` : host}:${u.port}${path}`;
}

function buildConfig(root: string, port: number, o: StartApacheOptions): string {
  const p = (name: string): string => join(root, name);
  const prefix = o.prefix ?? '/';
  const backendPath = o.backendPath ?? '/';
  const params = [`timeout=${o.timeoutSec ?? 30}`, ...(o.reuse ? ['enablereuse=on'] : [])];
  const lines = [
    `ServerRoot "${root}"`,
    'ServerName localhost',
    `Listen 127.0.0.1:${port}`,
    `PidFile "${p('httpd.pid')}"`,
    `ErrorLog "${p('logs/error.log')}"`,
    `LogLevel ${o.logLevel ?? 'warn'}`,
    `DefaultRuntimeDir "${p('run')}"`,
    `DocumentRoot "${p('htdocs')}"`,
    '',
    `LoadModule mpm_event_module ${MODULES}/mod_mpm_event.so`,
    `LoadModule authz_core_module ${MODULES}/mod_authz_core.so`,
    `LoadModule proxy_module ${MODULES}/mod_proxy.so`,
    `LoadModule proxy_fcgi_module ${MODULES}/mod_proxy_fcgi.so`,
    // mod_unixd is compiled into Debian's apache2 (apache2 -l).
    ...(isRoot ? ['User nobody', 'Group nogroup'] : []),
    '',
    // Small and quick to start: one child process, a few threads.
    'StartServers 1',
    'ServerLimit 1',
    'ThreadsPerChild 16',
    'MaxRequestWorkers 16',
    'ThreadLimit 16',
    'KeepAlive On',
    `ProxyTimeout ${o.timeoutSec ?? 30}`,
    `ProxyFCGIBackendType ${o.backendType ?? 'GENERIC'}`,
    `ProxyPass "${prefix}" "${backendUrl(o.upstream, backendPath)}" ${params.join(' ')}`,
    '',
    '<Directory />',
    '    Require all granted',
    '</Directory>',
    ...(o.extraConfig ? ['', o.extraConfig] : []),
    '',
  ];
  return lines.join('\n');
}

function readIfExists(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

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

function waitExit(t: Tracked, timeoutMs: number): Promise<boolean> {
  if (t.exited) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      t.child.off('exit', onExit);
      resolve(false);
    }, timeoutMs);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    t.child.once('exit', onExit);
  });
}

async function stopTracked(t: Tracked): Promise<void> {
  if (!t.exited && t.child.pid !== undefined) {
    try {
      process.kill(t.child.pid, 'SIGTERM'); // apache2: stop now (children too)
    } catch {
      // gone
    }
    if (!(await waitExit(t, 5000))) {
      killGroupSync(t);
      await waitExit(t, 2000);
    }
  }
  if (t.child.pid !== undefined) {
    try {
      process.kill(-t.child.pid, 'SIGKILL');
    } catch {
      // none left
    }
  }
  try {
    t.watchdog?.kill('SIGKILL');
  } catch {
    // ignore
  }
  running.delete(t);
  rmSync(t.root, { recursive: true, force: true });
}

class StartError extends Error {
  constructor(
    message: string,
    readonly addressInUse: boolean,
  ) {
    super(message);
  }
}

async function startOnce(opts: StartApacheOptions): Promise<ApacheInstance> {
  const bin = apacheBinary();
  const port = await freePort();
  const root = mkdtempSync(join(tmpdir(), 'apache-test-'));
  chmodSync(root, 0o755);
  for (const d of ['logs', 'run', 'htdocs']) mkdirSync(join(root, d));
  const config = buildConfig(root, port, opts);
  const confPath = join(root, 'httpd.conf');
  writeFileSync(confPath, config);
  const errorLogPath = join(root, 'logs/error.log');

  installHooks();
  const child = spawn(bin, ['-f', confPath, '-DFOREGROUND'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // own process group: parent and children are killed together
    // Debian's envvars script is not used: the configuration names no ${APACHE_*}.
    env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' },
  });
  const t: Tracked = { child, watchdog: undefined, root, exited: false };
  running.add(t);
  let output = '';
  let spawnError: Error | undefined;
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  child.on('error', (err) => (spawnError = err));
  child.on('exit', () => {
    t.exited = true;
  });
  child.unref();
  (child.stdout as Socket | null)?.unref();
  (child.stderr as Socket | null)?.unref();
  if (child.pid !== undefined) t.watchdog = startWatchdog(child.pid, root);

  const startTimeout = opts.startTimeoutMs ?? 10000;
  const deadline = Date.now() + startTimeout;
  const fail = async (why: string): Promise<never> => {
    const log = readIfExists(errorLogPath);
    const text = `${output}\n${log}`;
    await stopTracked(t).catch(() => {});
    throw new StartError(
      `apache2 failed to start (${why}).\n--- output ---\n${output.trim()}\n--- error.log ---\n${log.trim()}\n--- httpd.conf ---\n${config}`,
      /Address already in use|could not bind/.test(text),
    );
  };
  for (;;) {
    if (spawnError) return fail(`spawn error: ${spawnError.message}`);
    if (t.exited) return fail(`exited with code ${child.exitCode} signal ${child.signalCode}`);
    // The pid file is written after the listening socket is bound.
    if (existsSync(join(root, 'httpd.pid')) && (await tcpProbe(port, 500)) && !t.exited) break;
    if (t.exited) return fail(`exited with code ${child.exitCode} signal ${child.signalCode}`);
    if (Date.now() >= deadline) return fail(`port ${port} not accepting connections after ${startTimeout} ms`);
    await sleep(50);
  }

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    root,
    pid: child.pid ?? -1,
    config,
    errorLog: () => readIfExists(errorLogPath),
    errorLogProblems: () =>
      readIfExists(errorLogPath)
        .split('\n')
        .filter((l) => /\[[a-z_0-9]*:(error|crit|alert|emerg)\]/.test(l)),
    stop: () => stopTracked(t),
  };
}

/** Start Apache proxying `prefix` (default "/") to the FastCGI upstream. Retries up to 3 times on port clashes. */
export async function startApache(opts: StartApacheOptions): Promise<ApacheInstance> {
  let lastErr: unknown;
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      return await startOnce(opts);
    } catch (err) {
      lastErr = err;
      if (!(err instanceof StartError) || !err.addressInUse) throw err;
    }
  }
  throw lastErr;
}

/** Stop every Apache started by this module (for afterEach/afterAll). */
export async function stopAllApache(): Promise<void> {
  await Promise.all([...running].map((t) => stopTracked(t).catch(() => {})));
}
