/**
 * Starts a real nginx (in a private temporary prefix) in front of a FastCGI
 * upstream. Every instance is tracked; stopAllNginx() stops them, and no
 * nginx process outlives the test process: each instance runs in its own
 * process group, which is killed on process exit, on SIGTERM/SIGINT/SIGHUP,
 * and — should the test process be SIGKILLed — by a tiny watchdog shell that
 * notices its stdin pipe from us closing.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, registerExitCleanup, sleep } from './wait.js';

export type NginxUpstream = { port: number; host?: string } | { path: string };

export interface StartNginxOptions {
  upstream: NginxUpstream;
  /** fastcgi_keep_conn on|off (default off). */
  keepConn?: boolean;
  /** Upstream keepalive pool size. Default 32 when keepConn, otherwise none. */
  keepalive?: number;
  /** Extra directives in the http block. */
  extraHttp?: string;
  /** Extra directives in `location /` (may override fastcgi_buffering etc.). */
  extraLocation?: string;
  /** Extra directives in the server block. */
  extraServer?: string;
  /** client_max_body_size (default "100m"). */
  clientMaxBodySize?: string;
  /** fastcgi_buffering (default true) — also overridable via extraLocation. */
  buffering?: boolean;
  /** fastcgi_request_buffering (default true) — also overridable via extraLocation. */
  requestBuffering?: boolean;
  /** fastcgi_read_timeout etc. (default "30s"). */
  upstreamTimeout?: string;
  /** Start timeout in ms (default 10000). */
  startTimeoutMs?: number;
}

export interface NginxInstance {
  port: number;
  /** `http://127.0.0.1:<port>` (no trailing slash). */
  url: string;
  /** Temporary prefix directory. */
  prefix: string;
  pid: number;
  /** The generated configuration. */
  config: string;
  errorLog(): string;
  accessLog(): string;
  /** Error-log lines at level error or worse ([error], [crit], [alert], [emerg]). */
  errorLogProblems(): string[];
  stop(): Promise<void>;
}

interface Tracked {
  child: ChildProcess;
  watchdog: ChildProcess | undefined;
  prefix: string;
  exited: boolean;
}

const running = new Set<Tracked>();
let hooksInstalled = false;

/** Path of the nginx binary; throws if nginx is not installed. */
export function nginxBinary(): string {
  if (existsSync('/usr/sbin/nginx')) return '/usr/sbin/nginx';
  try {
    const p = execFileSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8' }).trim();
    if (p) return p;
  } catch {
    // fall through
  }
  throw new Error('nginx is not installed (looked for /usr/sbin/nginx and nginx on PATH); these tests require it');
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
      rmSync(t.prefix, { recursive: true, force: true });
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

/**
 * A watchdog shell in its own process group: it blocks reading a pipe whose
 * write end only we hold. If we die (even by SIGKILL) the read returns and it
 * kills nginx's process group and removes the prefix directory. On a normal
 * stop we SIGKILL the watchdog.
 */
function startWatchdog(pgid: number, prefix: string): ChildProcess | undefined {
  try {
    // dash's kill wants `kill -9 -PGID` (it rejects `--` and `-s KILL -PGID`).
    const script = 'read _x; kill -9 "-$0" 2>/dev/null; sleep 0.2; rm -rf "$1"';
    const wd = spawn('/bin/sh', ['-c', script, String(pgid), prefix], {
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

function upstreamServer(u: NginxUpstream): string {
  if ('path' in u) return `unix:${u.path}`;
  const host = u.host ?? '127.0.0.1';
  return host.includes(':') ? `[${host}]:${u.port}` : `${host}:${u.port}`;
}

function mentions(text: string | undefined, directive: string): boolean {
  return text !== undefined && new RegExp(`(^|[\\s;{])${directive}\\s`).test(text);
}

function buildConfig(prefix: string, port: number, o: StartNginxOptions): string {
  const keepConn = o.keepConn ?? false;
  const keepalive = o.keepalive ?? (keepConn ? 32 : undefined);
  const loc = o.extraLocation;
  const timeout = o.upstreamTimeout ?? '30s';
  const p = (name: string): string => join(prefix, name);
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const lines: string[] = [
    'daemon off;',
    'master_process on;',
    'worker_processes 1;',
    // As root the workers would otherwise run as "nobody" and could not use
    // our 0700 temp dirs / unix sockets.
    ...(isRoot ? ['user root;'] : []),
    `pid ${p('nginx.pid')};`,
    `error_log ${p('error.log')} info;`,
    '',
    'events {',
    '    worker_connections 4096;',
    '}',
    '',
    'http {',
    `    access_log ${p('access.log')};`,
    `    client_body_temp_path ${p('client_body_temp')};`,
    `    proxy_temp_path ${p('proxy_temp')};`,
    `    fastcgi_temp_path ${p('fastcgi_temp')};`,
    `    uwsgi_temp_path ${p('uwsgi_temp')};`,
    `    scgi_temp_path ${p('scgi_temp')};`,
    '    default_type application/octet-stream;',
    `    client_max_body_size ${o.clientMaxBodySize ?? '100m'};`,
    '',
    '    upstream fcgi_backend {',
    `        server ${upstreamServer(o.upstream)};`,
    ...(keepalive !== undefined ? [`        keepalive ${keepalive};`] : []),
    '    }',
    '',
    ...(o.extraHttp ? [o.extraHttp, ''] : []),
    '    server {',
    `        listen 127.0.0.1:${port};`,
    '        server_name localhost;',
    ...(o.extraServer ? [o.extraServer] : []),
    '',
    '        location / {',
    '            fastcgi_param QUERY_STRING       $query_string;',
    '            fastcgi_param REQUEST_METHOD     $request_method;',
    '            fastcgi_param CONTENT_TYPE       $content_type;',
    '            fastcgi_param CONTENT_LENGTH     $content_length;',
    '            fastcgi_param SCRIPT_NAME        $fastcgi_script_name;',
    '            fastcgi_param REQUEST_URI        $request_uri;',
    '            fastcgi_param DOCUMENT_URI       $document_uri;',
    '            fastcgi_param DOCUMENT_ROOT      $document_root;',
    '            fastcgi_param SERVER_PROTOCOL    $server_protocol;',
    '            fastcgi_param REQUEST_SCHEME     $scheme;',
    '            fastcgi_param HTTPS              $https if_not_empty;',
    '            fastcgi_param GATEWAY_INTERFACE  CGI/1.1;',
    '            fastcgi_param SERVER_SOFTWARE    nginx/$nginx_version;',
    '            fastcgi_param REMOTE_ADDR        $remote_addr;',
    '            fastcgi_param REMOTE_PORT        $remote_port;',
    '            fastcgi_param SERVER_ADDR        $server_addr;',
    '            fastcgi_param SERVER_PORT        $server_port;',
    '            fastcgi_param SERVER_NAME        $server_name;',
    '            fastcgi_param PATH_INFO          $fastcgi_path_info;',
    '            fastcgi_pass fcgi_backend;',
    ...(mentions(loc, 'fastcgi_keep_conn') ? [] : [`            fastcgi_keep_conn ${keepConn ? 'on' : 'off'};`]),
    ...(mentions(loc, 'fastcgi_buffering') ? [] : [`            fastcgi_buffering ${o.buffering === false ? 'off' : 'on'};`]),
    ...(mentions(loc, 'fastcgi_request_buffering')
      ? []
      : [`            fastcgi_request_buffering ${o.requestBuffering === false ? 'off' : 'on'};`]),
    ...(mentions(loc, 'fastcgi_connect_timeout') ? [] : ['            fastcgi_connect_timeout 5s;']),
    ...(mentions(loc, 'fastcgi_read_timeout') ? [] : [`            fastcgi_read_timeout ${timeout};`]),
    ...(mentions(loc, 'fastcgi_send_timeout') ? [] : [`            fastcgi_send_timeout ${timeout};`]),
    ...(loc ? [loc] : []),
    '        }',
    '    }',
    '}',
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
      process.kill(t.child.pid, 'SIGQUIT');
    } catch {
      // gone
    }
    if (!(await waitExit(t, 5000))) {
      killGroupSync(t);
      await waitExit(t, 2000);
    }
  }
  // Kill any straggling worker of the group (harmless if none).
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
  rmSync(t.prefix, { recursive: true, force: true });
}

class StartError extends Error {
  constructor(
    message: string,
    readonly addressInUse: boolean,
  ) {
    super(message);
  }
}

async function startOnce(opts: StartNginxOptions): Promise<NginxInstance> {
  const bin = nginxBinary();
  const port = await freePort();
  const prefix = mkdtempSync(join(tmpdir(), 'nginx-test-'));
  for (const d of ['client_body_temp', 'proxy_temp', 'fastcgi_temp', 'uwsgi_temp', 'scgi_temp', 'logs']) {
    mkdirSync(join(prefix, d));
  }
  const config = buildConfig(prefix, port, opts);
  const confPath = join(prefix, 'nginx.conf');
  writeFileSync(confPath, config);
  const errorLogPath = join(prefix, 'error.log');
  const accessLogPath = join(prefix, 'access.log');

  installHooks();
  const child = spawn(bin, ['-p', `${prefix}/`, '-c', confPath], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // own process group => we can kill master + workers together
  });
  const t: Tracked = { child, watchdog: undefined, prefix, exited: false };
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
  // Do not let nginx's pipes keep the test process alive.
  (child.stdout as Socket | null)?.unref();
  (child.stderr as Socket | null)?.unref();
  if (child.pid !== undefined) t.watchdog = startWatchdog(child.pid, prefix);

  const startTimeout = opts.startTimeoutMs ?? 10000;
  const deadline = Date.now() + startTimeout;
  const fail = async (why: string): Promise<never> => {
    const log = readIfExists(errorLogPath);
    const text = `${output}\n${log}`;
    await stopTracked(t).catch(() => {});
    throw new StartError(
      `nginx failed to start (${why}).\n--- nginx output ---\n${output.trim()}\n--- error.log ---\n${log.trim()}\n--- nginx.conf ---\n${config}`,
      /Address already in use/.test(text),
    );
  };
  for (;;) {
    if (spawnError) return fail(`spawn error: ${spawnError.message}`);
    if (t.exited) return fail(`exited with code ${child.exitCode} signal ${child.signalCode}`);
    // The pid file is written only after nginx bound its sockets, so a
    // successful probe plus the pid file means it is *our* nginx listening
    // (not some other process that grabbed the port in the meantime).
    if (existsSync(join(prefix, 'nginx.pid')) && (await tcpProbe(port, 500)) && !t.exited) break;
    if (t.exited) return fail(`exited with code ${child.exitCode} signal ${child.signalCode}`);
    if (Date.now() >= deadline) return fail(`port ${port} not accepting connections after ${startTimeout} ms`);
    await sleep(50);
  }

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    prefix,
    pid: child.pid ?? -1,
    config,
    errorLog: () => readIfExists(errorLogPath),
    accessLog: () => readIfExists(accessLogPath),
    errorLogProblems: () =>
      readIfExists(errorLogPath)
        .split('\n')
        .filter((l) => /\[(error|crit|alert|emerg)\]/.test(l)),
    stop: () => stopTracked(t),
  };
}

/** Start nginx proxying `location /` to the FastCGI upstream. Retries up to 3 times on port clashes. */
export async function startNginx(opts: StartNginxOptions): Promise<NginxInstance> {
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

/** Stop every nginx started by this module (for afterEach/afterAll). */
export async function stopAllNginx(): Promise<void> {
  await Promise.all([...running].map((t) => stopTracked(t).catch(() => {})));
}
