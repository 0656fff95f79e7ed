/**
 * Starts a real Apache httpd (Debian's apache2 binary) as a child of the test
 * process, in front of a FastCGI upstream through mod_proxy_fcgi. Nothing of
 * the system's Apache set-up is used: ServerRoot, DocumentRoot, PidFile,
 * ErrorLog and the run-time directory live in a fresh temporary directory,
 * only the modules listed below are loaded (from /usr/lib/apache2/modules),
 * and the server listens on 127.0.0.1:<free port>. `apache2 -DFOREGROUND`
 * runs in its own process group, which stop() kills; like nginx.ts (both use
 * daemon.ts), every instance is also killed on process exit / SIGTERM / SIGINT /
 * SIGHUP and by a watchdog shell should the test process be SIGKILLed.
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
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DaemonGroup, linesMatching, readIfExists } from './daemon.js';
import { tmpSocketPath } from './wait.js';

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

const apaches = new DaemonGroup('apache-test-');

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

/** Start Apache proxying `prefix` (default "/") to the FastCGI upstream. Retries up to 3 times on port clashes. */
export async function startApache(opts: StartApacheOptions): Promise<ApacheInstance> {
  const { daemon, dir: root, port, url, plan } = await apaches.start(
    (root, port) => {
      chmodSync(root, 0o755);
      for (const d of ['logs', 'run', 'htdocs']) mkdirSync(join(root, d));
      const config = buildConfig(root, port, opts);
      const confPath = join(root, 'httpd.conf');
      writeFileSync(confPath, config);
      return {
        command: apacheBinary(),
        args: ['-f', confPath, '-DFOREGROUND'],
        // Debian's envvars script is not used: the configuration names no ${APACHE_*}.
        env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' },
        stopSignal: 'SIGTERM', // apache2: stop now (children too)
        pidFile: join(root, 'httpd.pid'),
        errorLog: join(root, 'logs/error.log'),
        config,
        describeFailure: (why: string, output: string, log: string) =>
          `apache2 failed to start (${why}).\n--- output ---\n${output.trim()}\n--- error.log ---\n${log.trim()}\n--- httpd.conf ---\n${config}`,
        addressInUse: /Address already in use|could not bind/,
      };
    },
    opts.startTimeoutMs,
  );
  return {
    port,
    url,
    root,
    pid: daemon.pid,
    config: plan.config,
    errorLog: () => readIfExists(plan.errorLog),
    errorLogProblems: () => linesMatching(plan.errorLog, /\[[a-z_0-9]*:(error|crit|alert|emerg)\]/),
    stop: () => daemon.stop(),
  };
}

/** Stop every Apache started by this module (for afterEach/afterAll). */
export async function stopAllApache(): Promise<void> {
  await apaches.stopAll();
}
