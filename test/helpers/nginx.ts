/**
 * Starts a real nginx (in a private temporary prefix) in front of a FastCGI
 * upstream. Every instance is tracked; stopAllNginx() stops them, and no
 * nginx process outlives the test process: each instance runs in its own
 * process group, which is killed on process exit, on SIGTERM/SIGINT/SIGHUP,
 * and — should the test process be SIGKILLed — by a tiny watchdog shell that
 * notices its stdin pipe from us closing (all in daemon.ts).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DaemonGroup, linesMatching, readIfExists } from './daemon.js';

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

const nginxes = new DaemonGroup('nginx-test-');

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

/** Start nginx proxying `location /` to the FastCGI upstream. Retries up to 3 times on port clashes. */
export async function startNginx(opts: StartNginxOptions): Promise<NginxInstance> {
  const { daemon, dir: prefix, port, url, plan } = await nginxes.start(
    (prefix, port) => {
      for (const d of ['client_body_temp', 'proxy_temp', 'fastcgi_temp', 'uwsgi_temp', 'scgi_temp', 'logs']) {
        mkdirSync(join(prefix, d));
      }
      const config = buildConfig(prefix, port, opts);
      const confPath = join(prefix, 'nginx.conf');
      writeFileSync(confPath, config);
      return {
        command: nginxBinary(),
        args: ['-p', `${prefix}/`, '-c', confPath],
        stopSignal: 'SIGQUIT', // graceful shutdown
        pidFile: join(prefix, 'nginx.pid'),
        errorLog: join(prefix, 'error.log'),
        config,
        describeFailure: (why: string, output: string, log: string) =>
          `nginx failed to start (${why}).\n--- nginx output ---\n${output.trim()}\n--- error.log ---\n${log.trim()}\n--- nginx.conf ---\n${config}`,
        addressInUse: /Address already in use/,
      };
    },
    opts.startTimeoutMs,
  );
  const accessLogPath = join(prefix, 'access.log');
  return {
    port,
    url,
    prefix,
    pid: daemon.pid,
    config: plan.config,
    errorLog: () => readIfExists(plan.errorLog),
    accessLog: () => readIfExists(accessLogPath),
    errorLogProblems: () => linesMatching(plan.errorLog, /\[(error|crit|alert|emerg)\]/),
    stop: () => daemon.stop(),
  };
}

/** Stop every nginx started by this module (for afterEach/afterAll). */
export async function stopAllNginx(): Promise<void> {
  await nginxes.stopAll();
}
