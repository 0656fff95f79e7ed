// FCGI_LISTENSOCK_FILENO: a web server (here Debian's spawn-fcgi) binds the
// socket and execs the application with it as fd 0. `new Request()` and
// `initSocket()` without arguments use it; isCGI() tells the two worlds apart.
import { existsSync } from 'node:fs';

import { afterEach, beforeAll, describe, expect, it } from 'vitest';

import { type FcgiTarget } from '../helpers/fcgi-client.js';
import { freePort, tmpSocketPath } from '../helpers/wait.js';
import { assertDistFresh, type Child, CRASH_PATTERN, fixture, killAllChildren, requestBody, startChild, startProgram } from './child.js';

const SPAWN_FCGI = '/usr/bin/spawn-fcgi';
const SERVE = fixture('fd0-serve.mjs');

beforeAll(() => {
  assertDistFresh();
  if (!existsSync(SPAWN_FCGI)) throw new Error(`${SPAWN_FCGI} is missing (Debian package spawn-fcgi); these tests require it`);
});
afterEach(killAllChildren);

/** One request with the body 'in' to the child serving on `target`; resolves with the response body. */
const request = (target: FcgiTarget, uri: string): Promise<string> => requestBody(target, uri, 'in');

/** spawn-fcgi -n (no fork): it binds, then execs node in place, so the child we hold is the application. */
function spawnFcgi(bind: string[], fixtureArgs: string[] = []): Child {
  return startProgram(SPAWN_FCGI, ['-n', ...bind, '--', process.execPath, SERVE, ...fixtureArgs], { name: 'spawn-fcgi fd0-serve.mjs' });
}

async function expectServes(child: Child, target: FcgiTarget): Promise<void> {
  const ready = await child.waitForOutput(/^ready (\d+)$/m, { timeoutMs: 15000 });
  // spawn-fcgi exec'd the application in place
  expect(Number(ready[1])).toBe(child.pid);
  expect(child.lines()).toContain('isCGI false');
  expect(await request(target, '/a')).toBe(`fd0 pid=${child.pid} isCGI=false n=1 uri=/a body=in`);
  expect(await request(target, '/b')).toBe(`fd0 pid=${child.pid} isCGI=false n=2 uri=/b body=in`);
  expect(child.alive).toBe(true);
  // and it still dies by SIGTERM like any process
  child.kill('SIGTERM');
  expect(await child.waitExit(10000), child.describe()).toEqual({ code: null, signal: 'SIGTERM' });
  expect(child.stderr, child.describe()).not.toMatch(CRASH_PATTERN);
}

describe('fd 0 inherited from spawn-fcgi', () => {
  it('`new Request()` serves on a unix socket bound by spawn-fcgi -s', async () => {
    const path = tmpSocketPath('sf');
    const child = spawnFcgi(['-s', path]);
    await expectServes(child, { path });
  });

  it('`new Request()` serves on a TCP socket bound by spawn-fcgi -a 127.0.0.1 -p', async () => {
    // freePort is racy: retry when spawn-fcgi cannot bind
    for (let attempt = 1; ; attempt++) {
      const port = await freePort('127.0.0.1');
      const child = spawnFcgi(['-a', '127.0.0.1', '-p', String(port)]);
      const first = await Promise.race([
        child.waitForOutput(/^ready \d+$/m, { timeoutMs: 15000 }).then(() => 'ready' as const),
        child.exited.then(() => 'exited' as const),
      ]);
      if (first === 'exited' && /bind failed|Address already in use/i.test(child.stderr) && attempt < 5) continue;
      await expectServes(child, { port, host: '127.0.0.1' });
      return;
    }
  });

  it('`new Request(initSocket())`: initSocket() without arguments takes fd 0 under spawn-fcgi', async () => {
    const path = tmpSocketPath('sfi');
    const child = spawnFcgi(['-s', path], ['--init-socket']);
    await expectServes(child, { path });
  });
});

describe('fd 0 that is not a listening socket', () => {
  interface Attempt {
    threw: boolean;
    name?: string;
    code?: string;
    isFastCGIError?: boolean;
    message?: string;
  }
  interface ProbeResult {
    isCGI: boolean;
    request: Attempt;
    initSocket: Attempt;
  }

  async function probe(child: Child): Promise<ProbeResult> {
    const m = await child.waitForOutput(/^result (.*)$/m);
    expect(await child.waitExit(10000), child.describe()).toEqual({ code: 0, signal: null });
    return JSON.parse(m[1]!) as ProbeResult;
  }

  function expectNotFastCGI(r: ProbeResult): void {
    expect(r.isCGI).toBe(true);
    for (const a of [r.request, r.initSocket]) {
      expect(a).toMatchObject({ threw: true, name: 'FastCGIError', code: 'ERR_FASTCGI_NOT_FASTCGI', isFastCGIError: true });
    }
  }

  it('stdin a pipe from node (libuv makes it a connected socketpair): isCGI() true, new Request() and initSocket() throw ERR_FASTCGI_NOT_FASTCGI', async () => {
    const child = startChild(fixture('fd0-probe.mjs'), [], { stdin: 'pipe' });
    expectNotFastCGI(await probe(child));
  });

  it('stdin a real pipe(2) (from sh): the same', async () => {
    const child = startProgram('/bin/sh', ['-c', `: | exec "$0" "$1"`, process.execPath, fixture('fd0-probe.mjs')], {
      name: 'sh | fd0-probe.mjs',
    });
    expectNotFastCGI(await probe(child));
  });

  it('stdin /dev/null: the same', async () => {
    const child = startChild(fixture('fd0-probe.mjs'), [], { stdin: 'ignore' });
    expectNotFastCGI(await probe(child));
  });
});
