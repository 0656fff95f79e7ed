// Signals are the host process's business: loading the addon, opening a
// socket and serving must leave SIGTERM, SIGINT, SIGHUP, SIGUSR1 (inspector)
// and SIGPIPE exactly as Node set them up.
import { afterEach, beforeAll, describe, expect, it } from 'vitest';

import { tmpSocketPath } from '../helpers/wait.js';
import { assertDistFresh, type Child, fixture, killAllChildren, requestBody, startChild } from './child.js';

const SERVER = fixture('signal-server.mjs');

beforeAll(() => assertDistFresh());
afterEach(killAllChildren);

/** One request with the body 'ping' to the child serving on `path`; resolves with the response body. */
const request = (path: string, uri: string): Promise<string> => requestBody({ path }, uri, 'ping');

/** Starts signal-server.mjs, serves `serve` requests to it and waits for "ready". */
async function startServing(serve: number, extra: string[] = [], nodeArgs: string[] = []): Promise<{ child: Child; path: string }> {
  const path = tmpSocketPath('sig');
  const child = startChild(SERVER, ['--path', path, '--serve', String(serve), ...extra], { nodeArgs });
  await child.waitForOutput(/^listening$/m);
  for (let i = 1; i <= serve; i++) {
    expect(await request(path, `/r${i}`)).toBe(`served #${i} uri=/r${i} body=ping`);
  }
  await child.waitForOutput(/^ready$/m);
  return { child, path };
}

/** Bit of signal `n` in a /proc/<pid>/status signal mask. */
function hasSignal(mask: string, n: number): boolean {
  return ((BigInt(`0x${mask}`) >> BigInt(n - 1)) & 1n) === 1n;
}

const SIGHUP = 1;
const SIGINT = 2;
const SIGUSR1 = 10;
const SIGPIPE = 13;
const SIGTERM = 15;

describe('default signal actions after loading the addon and serving', () => {
  it.each(['SIGTERM', 'SIGINT', 'SIGHUP'] as const)('%s kills a child that served a request (no clean exit, no hang)', async (sig) => {
    const { child } = await startServing(1);
    child.kill(sig);
    const exit = await child.waitExit(10000);
    expect(exit, child.describe()).toEqual({ code: null, signal: sig });
  });

  it('SIGTERM kills a child that called initSocket() and waits in accept() but served nothing yet', async () => {
    const { child } = await startServing(0);
    child.kill('SIGTERM');
    expect(await child.waitExit(10000), child.describe()).toEqual({ code: null, signal: 'SIGTERM' });
  });

  it('SIGTERM kills a child that only imported the library', async () => {
    const child = startChild(SERVER, ['--import-only']);
    await child.waitForOutput(/^ready$/m);
    child.kill('SIGTERM');
    expect(await child.waitExit(10000), child.describe()).toEqual({ code: null, signal: 'SIGTERM' });
  });

  it('signal dispositions (/proc SigIgn, SigCgt) are the same before the import and after serving', async () => {
    const { child } = await startServing(1);
    const before = JSON.parse((await child.waitForOutput(/^sig-before (.*)$/m))[1]!) as Record<string, string>;
    const after = JSON.parse((await child.waitForOutput(/^sig-after (.*)$/m))[1]!) as Record<string, string>;
    expect(after.SigIgn, 'ignored signals changed').toBe(before.SigIgn);
    expect(after.SigCgt, 'caught signals changed').toBe(before.SigCgt);
    // What Node sets up: SIGPIPE ignored (not caught by a handler, as libfcgi
    // would install); SIGUSR1, SIGINT and SIGTERM caught by Node itself
    // (inspector; stdio reset before the default action); SIGHUP at its default.
    for (const n of [SIGPIPE, SIGUSR1, SIGINT, SIGTERM, SIGHUP]) {
      const state = (mask: Record<string, string>): string =>
        hasSignal(mask.SigIgn!, n) ? 'ignored' : hasSignal(mask.SigCgt!, n) ? 'caught' : 'default';
      expect(state(after), `signal ${n}: ${JSON.stringify({ before, after })}`).toBe(state(before));
    }
    expect(hasSignal(after.SigIgn!, SIGPIPE), `SIGPIPE not ignored: ${JSON.stringify(after)}`).toBe(true);
    expect(hasSignal(after.SigCgt!, SIGPIPE), `SIGPIPE caught: ${JSON.stringify(after)}`).toBe(false);
  });

  it('a process.on("SIGTERM") handler runs (and can stop the server gracefully: exit code 0)', async () => {
    const { child } = await startServing(1, ['--sigterm-handler']);
    child.kill('SIGTERM');
    const exit = await child.waitExit(10000);
    expect(child.stdout).toContain('SIGTERM handler ran');
    expect(child.stdout).toContain('socket closed');
    expect(child.stdout).toContain('loop ended');
    expect(exit, child.describe()).toEqual({ code: 0, signal: null });
  });

  it('SIGUSR1 opens the inspector (started with --inspect-port=0), and the child keeps serving', async () => {
    const { child, path } = await startServing(1, [], ['--inspect-port=0']);
    expect(child.stderr).not.toContain('Debugger listening');
    child.kill('SIGUSR1');
    await child.waitForOutput(/Debugger listening on ws:\/\/\S+:\d+\//, { stream: 'stderr', timeoutMs: 10000 });
    expect(child.alive).toBe(true);
    expect(await request(path, '/after-usr1')).toBe('served #2 uri=/after-usr1 body=ping');
    child.kill('SIGKILL');
    expect(await child.waitExit(10000)).toEqual({ code: null, signal: 'SIGKILL' });
  });
});
