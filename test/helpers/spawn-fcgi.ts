/**
 * Runs an application under Debian's spawn-fcgi the way a deployment does:
 * `spawn-fcgi -s SOCKET -F N -P PIDFILE -- command...` binds the socket,
 * forks N children that each get it as fd 0 (FCGI_LISTENSOCK_FILENO) and
 * exec the command, and exits. The children are no children of ours: they
 * are found through the pid file. spawn-fcgi makes each one a session (and
 * process-group) leader (setsid), so stop() (and the exit-time cleanup,
 * should a test fail half-way) kills each child's group, the workers of
 * `libfcgi serve` included.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

import { alive, registerExitCleanup, waitFor, withTimeout } from './wait.js';

export const SPAWN_FCGI = '/usr/bin/spawn-fcgi';

export interface SpawnedApp {
  /** The pids of the forked children (from the pid file). */
  pids: number[];
  /** What spawn-fcgi printed ("spawn-fcgi: child spawned successfully: PID: ..."). */
  output: string;
  /** SIGTERM to each child, up to `graceMs` for them to exit, then SIGKILL the group. */
  stop(graceMs?: number): Promise<void>;
}

const groups = new Set<number>();
let cleanup = false;

function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // gone
  }
}

export async function spawnFcgi(bind: string[], children: number, command: string[], env?: NodeJS.ProcessEnv): Promise<SpawnedApp> {
  if (!existsSync(SPAWN_FCGI)) throw new Error(`${SPAWN_FCGI} is missing (apt-get install spawn-fcgi, or bash scripts/setup.sh --test)`);
  if (!cleanup) {
    cleanup = true;
    registerExitCleanup(() => groups.forEach(killGroup));
  }
  const pidFile = `${bind[1]}.pids`;
  const child = spawn(SPAWN_FCGI, [...bind, '-F', String(children), '-P', pidFile, '--', ...command], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    env: { ...process.env, ...env },
  });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const code = await withTimeout(new Promise<number | null>((resolve) => child.once('exit', resolve)), 10000, 'spawn-fcgi to fork and exit');
  if (code !== 0) {
    throw new Error(`spawn-fcgi exited with ${code}: ${output}`);
  }
  const pids = await waitFor(() => {
    const list = existsSync(pidFile) ? readFileSync(pidFile, 'utf8').split(/\s+/).filter(Boolean).map(Number) : [];
    return list.length === children ? list : undefined;
  }, { timeoutMs: 5000, what: `${children} pids in ${pidFile}` });
  for (const p of pids) groups.add(p);
  return {
    pids,
    output,
    async stop(graceMs = 5000) {
      for (const p of pids) {
        try {
          process.kill(p, 'SIGTERM');
        } catch {
          // gone
        }
      }
      await waitFor(() => pids.every((p) => !alive(p)), { timeoutMs: graceMs, what: 'the spawn-fcgi children to exit' }).catch(() => {});
      for (const p of pids) {
        killGroup(p);
        groups.delete(p);
      }
    },
  };
}
