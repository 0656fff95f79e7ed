/**
 * Starts a real Apache httpd (Debian's apache2) with mod_fcgid, which starts
 * the FastCGI application itself: for each process it wants, mod_fcgid binds
 * a unix socket in FcgidIPCDir and runs the wrapper script with that socket
 * as fd 0 (FCGI_LISTENSOCK_FILENO), as lighttpd's bin-path and spawn-fcgi do.
 * It sends one request at a time per process and starts more processes (up
 * to FcgidMaxProcessesPerClass) when all are busy.
 *
 * Like apache.ts (whose layout this follows: temporary ServerRoot, own pid
 * file and logs, 127.0.0.1:<free port>, daemon.ts for the process group), but
 * without mod_proxy: the site maps `prefix` to the wrapper script with
 * `Alias` and `SetHandler fcgid-script`. As root, Apache's children and the
 * processes mod_fcgid starts run as nobody: the IPC directory is given to
 * nobody (mod_fcgid binds its sockets there as that user), and the script,
 * node and the repository must be readable by others (they are here).
 */
import { chmodSync, chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';

import { apacheBinary } from './apache.js';
import { DaemonGroup, linesMatching, readIfExists } from './daemon.js';

export const MOD_FCGID = '/usr/lib/apache2/modules/mod_fcgid.so';
const MODULES = '/usr/lib/apache2/modules';
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

export interface StartFcgidOptions {
  /** The wrapper script's body after "#!/bin/sh" (e.g. `exec /usr/bin/node ... serve app.mjs`). */
  script: string;
  /** URL prefix mapped to the application (default "/app"). */
  prefix?: string;
  /** FcgidInitialEnv NAME VALUE lines. */
  env?: Record<string, string>;
  /** FcgidMaxProcessesPerClass (default 2). */
  maxProcesses?: number;
  /** Extra directives. */
  extraConfig?: string;
  startTimeoutMs?: number;
}

export interface FcgidInstance {
  port: number;
  url: string;
  root: string;
  /** The generated httpd.conf (for the docs: what a test ran). */
  config: string;
  /** The wrapper script's path. */
  script: string;
  errorLog(): string;
  /** mod_fcgid's own error-log lines at error level or worse. */
  errorLogProblems(): string[];
  stop(): Promise<void>;
}

const group = new DaemonGroup('fcgid-test-');

function uidGid(user: string, groupName: string): [number, number] {
  const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('getent', ['group', groupName], { encoding: 'utf8' }).split(':')[2]);
  return [uid, gid];
}

export async function startFcgid(opts: StartFcgidOptions): Promise<FcgidInstance> {
  const prefix = opts.prefix ?? '/app';
  const { daemon, dir: root, port, url, plan } = await group.start((root, port) => {
    chmodSync(root, 0o755);
    for (const d of ['logs', 'run', 'htdocs', 'fcgid', 'cgi']) mkdirSync(join(root, d));
    if (isRoot) chownSync(join(root, 'fcgid'), ...uidGid('nobody', 'nogroup'));
    const script = join(root, 'cgi/app.fcgi');
    writeFileSync(script, `#!/bin/sh\n${opts.script}\n`, { mode: 0o755 });
    const p = (name: string): string => join(root, name);
    const config = [
      `ServerRoot "${root}"`,
      'ServerName localhost',
      `Listen 127.0.0.1:${port}`,
      `PidFile "${p('httpd.pid')}"`,
      `ErrorLog "${p('logs/error.log')}"`,
      'LogLevel warn',
      `DefaultRuntimeDir "${p('run')}"`,
      `DocumentRoot "${p('htdocs')}"`,
      `LoadModule mpm_event_module ${MODULES}/mod_mpm_event.so`,
      `LoadModule authz_core_module ${MODULES}/mod_authz_core.so`,
      `LoadModule alias_module ${MODULES}/mod_alias.so`,
      `LoadModule fcgid_module ${MOD_FCGID}`,
      ...(isRoot ? ['User nobody', 'Group nogroup'] : []),
      'StartServers 1',
      'ServerLimit 1',
      'ThreadsPerChild 16',
      'MaxRequestWorkers 16',
      'ThreadLimit 16',
      '',
      '# --- mod_fcgid',
      `FcgidIPCDir "${p('fcgid')}"`,
      `FcgidProcessTableFile "${p('fcgid/shm')}"`,
      `FcgidMaxProcessesPerClass ${opts.maxProcesses ?? 2}`,
      ...Object.entries(opts.env ?? {}).map(([k, v]) => `FcgidInitialEnv ${k} ${v}`),
      `Alias ${prefix} "${script}"`,
      `<Location ${prefix}>`,
      '    SetHandler fcgid-script',
      '    Options +ExecCGI',
      '</Location>',
      '',
      '<Directory />',
      '    Require all granted',
      '</Directory>',
      ...(opts.extraConfig ? [opts.extraConfig] : []),
      '',
    ].join('\n');
    const confPath = join(root, 'httpd.conf');
    writeFileSync(confPath, config);
    return {
      command: apacheBinary(),
      args: ['-f', confPath, '-DFOREGROUND'],
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' },
      stopSignal: 'SIGTERM',
      pidFile: p('httpd.pid'),
      errorLog: p('logs/error.log'),
      config,
      script,
      describeFailure: (why: string, output: string, log: string) =>
        `apache2 (mod_fcgid) failed to start (${why}).\n--- output ---\n${output.trim()}\n--- error.log ---\n${log.trim()}\n--- httpd.conf ---\n${config}`,
      addressInUse: /Address already in use|could not bind/,
    };
  }, opts.startTimeoutMs);
  return {
    port,
    url,
    root,
    config: plan.config,
    script: plan.script,
    errorLog: () => readIfExists(plan.errorLog),
    errorLogProblems: () => linesMatching(plan.errorLog, /\[fcgid:(error|crit|alert|emerg)\]/),
    stop: () => daemon.stop(),
  };
}

export async function stopAllFcgid(): Promise<void> {
  await group.stopAll();
}
