// The addon in worker_threads: each worker has its own socket (and native
// server); worker.terminate() in any state must neither crash the process nor
// leave the worker's socket and connections behind.
import { afterEach, beforeAll, describe, expect, it } from 'vitest';

import { defaultParams, encodeRequest, fcgiRequest, parseCgiResponse } from '../helpers/fcgi-client.js';
import { tmpSocketPath } from '../helpers/wait.js';
import { assertDistFresh, type Child, cleanUpAfterTest, connect, CRASH_PATTERN, fixture, startChild } from './child.js';

const MAIN = fixture('worker-main.mjs');

beforeAll(() => assertDistFresh());

afterEach(cleanUpAfterTest);

/** The fixture's report after worker.terminate(): nothing accepts on the socket path any more; then it waits for stdin to end. */
async function expectTerminatedAndSocketReleased(child: Child): Promise<void> {
  await child.waitForOutput(/^terminated (\S+)$/m, { timeoutMs: 15000 });
  // the worker's listening socket is closed with it: nobody accepts on the path any more
  const probe = await child.waitForOutput(/^probe after terminate (\S+)$/m);
  expect(['ECONNREFUSED', 'ENOENT'], child.describe()).toContain(probe[1]);
  await child.waitForOutput(/^waiting for stdin to end$/m);
}

/** Ends the child's stdin; it must then exit 0 with no worker error and no crash. */
async function expectCleanExitAfterStdinEnds(child: Child): Promise<void> {
  child.proc.stdin!.end();
  const exit = await child.waitExit(10000);
  expect(exit, child.describe()).toEqual({ code: 0, signal: null });
  expect(child.lines()).not.toContain('worker error');
  expect(child.stderr, child.describe()).not.toMatch(CRASH_PATTERN);
}

describe('worker_threads', () => {
  it('terminate() of a worker blocked in `await req.accept()`: resolves, the socket is released, the process exits 0', async () => {
    const path = tmpSocketPath('widle');
    const child = startChild(MAIN, ['idle', path]);
    await expectTerminatedAndSocketReleased(child);
    expect(child.alive).toBe(true);
    await expectCleanExitAfterStdinEnds(child);
  });

  it('terminate() of a worker in the middle of a request: resolves, the web server connection is closed, the process exits 0', async () => {
    const path = tmpSocketPath('winfl');
    const child = startChild(MAIN, ['inflight', path]);
    await child.waitForOutput(/^message ready$/m, { timeoutMs: 15000 });
    const conn = await connect(path);
    void conn.write(encodeRequest({ params: defaultParams({ REQUEST_URI: '/held-by-worker' }) }));
    await expectTerminatedAndSocketReleased(child);
    // the process is still alive: whatever closed the connection was the terminate
    expect(await conn.waitClosed(5000), `connection of the terminated worker still open\n${child.describe()}`).toBe(true);
    expect(child.alive, child.describe()).toBe(true);
    await expectCleanExitAfterStdinEnds(child);
  });

  // The native core's worker threads are detached; at worker.terminate() the
  // addon is unloaded with the worker's environment. One run hits a crash only
  // sometimes (a scheduling race), so 20 fresh processes run the scenario.
  it('terminate() of a worker whose native thread is blocked writing to a web server that does not read: no crash (20 processes in a row)', async () => {
    for (let run = 1; run <= 20; run++) {
      const path = tmpSocketPath('wblk');
      const child = startChild(MAIN, ['repeat', 'blocked-write', '1', '1', path], { name: `worker-main.mjs repeat blocked-write, run ${run}` });
      const exit = await child.waitExit(15000);
      expect(child.lines(), child.describe()).not.toContain('message big write callback');
      expect(exit, `run ${run} of 20:\n${child.describe()}`).toEqual({ code: 0, signal: null });
      expect(child.lines(), child.describe()).toEqual(['worker exit 1 1', 'round 1 terminated 1', 'all rounds done']);
      expect(child.stderr, child.describe()).not.toMatch(CRASH_PATTERN);
    }
  });

  it('two workers, each with its own socket, serve a request at the same time; then they and the process end (code 0)', async () => {
    const paths = [tmpSocketPath('w1'), tmpSocketPath('w2')];
    const child = startChild(MAIN, ['two', ...paths]);
    await child.waitForOutput(/^ready$/m, { timeoutMs: 15000 });
    // both requests are sent at once; the workers answer only when both hold theirs
    const [r1, r2] = await Promise.all(
      paths.map((path, i) =>
        fcgiRequest({ path }, { params: defaultParams({ REQUEST_URI: `/w${i + 1}` }), stdin: `to ${i + 1}`, timeoutMs: 15000 }),
      ),
    );
    expect(parseCgiResponse(r1!.stdout).body.toString()).toBe('worker 1 answered uri=/w1 body=to 1');
    expect(parseCgiResponse(r2!.stdout).body.toString()).toBe('worker 2 answered uri=/w2 body=to 2');
    expect(child.lines()).toContain('both in request');
    const exit = await child.waitExit(10000);
    expect(exit, child.describe()).toEqual({ code: 0, signal: null });
    const lines = child.lines();
    expect(lines).toContain('worker exit 1 0');
    expect(lines).toContain('worker exit 2 0');
    expect(child.stderr, child.describe()).not.toMatch(CRASH_PATTERN);
  });
});
