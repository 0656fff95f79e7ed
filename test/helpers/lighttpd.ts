/**
 * Starts a real lighttpd (Debian's package, 1.4.x) as a child of the test
 * process: `lighttpd -D -f <conf>` in its own process group (daemon.ts: killed
 * on stop(), at exit, and by a watchdog if the test process dies), with its
 * configuration, pid file, error log and document root in a fresh temporary
 * directory, listening on 127.0.0.1:<free port>. The system's lighttpd
 * service is not used (the package starts it on installation: `service
 * lighttpd stop`).
 *
 * The caller gives the site's configuration (`server.modules += (...)`,
 * `fastcgi.server = ...`, `cgi.assign = ...`: what docs/deployment.md prints); `dir` (the temporary
 * directory) is passed to the builder so that sockets and scripts can live
 * there. lighttpd started as root runs as root unless told otherwise
 * (server.username): the tests leave it so, so that the processes it
 * spawns can read the repository.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { DaemonGroup, linesMatching, readIfExists } from './daemon.js';

export const LIGHTTPD = '/usr/sbin/lighttpd';

export interface StartLighttpdOptions {
  /**
   * The site's configuration (with its `server.modules += (...)` line),
   * appended to the server's own lines (port, pid file, logs); made once the
   * temporary directory exists.
   */
  config: (dir: string) => string;
  /** Start timeout in ms (default 10000). */
  startTimeoutMs?: number;
}

export interface LighttpdInstance {
  port: number;
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** The temporary directory (config, logs, document root). */
  dir: string;
  pid: number;
  config: string;
  errorLog(): string;
  /** Error-log lines that report a failure of a backend or of lighttpd itself. */
  errorLogProblems(): string[];
  stop(): Promise<void>;
}

const group = new DaemonGroup('lighttpd-test-');

export function lighttpdInstalled(): boolean {
  return existsSync(LIGHTTPD);
}

/** A lighttpd string literal. */
export function lq(s: string): string {
  return JSON.stringify(s);
}

export async function startLighttpd(opts: StartLighttpdOptions): Promise<LighttpdInstance> {
  if (!lighttpdInstalled()) throw new Error(`${LIGHTTPD} is missing: apt-get install lighttpd (or bash scripts/setup.sh --test)`);
  const { daemon, dir, port, url, plan } = await group.start((dir, port) => {
    mkdirSync(join(dir, 'htdocs'));
    const conf = [
      `server.bind = "127.0.0.1"`,
      `server.port = ${port}`,
      `server.document-root = ${lq(join(dir, 'htdocs'))}`,
      `server.pid-file = ${lq(join(dir, 'lighttpd.pid'))}`,
      `server.errorlog = ${lq(join(dir, 'error.log'))}`,
      // Bodies go to the backend as they arrive (not spooled to a temp file first).
      `server.stream-request-body = 1`,
      '',
      opts.config(dir),
      '',
    ].join('\n');
    const confPath = join(dir, 'lighttpd.conf');
    writeFileSync(confPath, conf);
    return {
      command: LIGHTTPD,
      args: ['-D', '-f', confPath],
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' },
      stopSignal: 'SIGTERM', // lighttpd: stop now (SIGINT would wait for requests)
      pidFile: join(dir, 'lighttpd.pid'),
      errorLog: join(dir, 'error.log'),
      config: conf,
      describeFailure: (why: string, output: string, log: string) =>
        `lighttpd failed to start (${why}).\n--- output ---\n${output.trim()}\n--- error.log ---\n${log.trim()}\n--- lighttpd.conf ---\n${conf}`,
      addressInUse: /Address already in use|can't bind/,
    };
  }, opts.startTimeoutMs);
  return {
    port,
    url,
    dir,
    pid: daemon.pid,
    config: plan.config,
    errorLog: () => readIfExists(plan.errorLog),
    errorLogProblems: () => linesMatching(plan.errorLog, /\(mod_fastcgi|\(gw_backend|\(mod_cgi|error|failed/i),
    stop: () => daemon.stop(),
  };
}

export async function stopAllLighttpd(): Promise<void> {
  await group.stopAll();
}
