// When does a process that serves FastCGI exit? Like net.Server: a ref'd
// open socket keeps it alive, close()/unref() let it go, requests in flight
// finish first; process.exit() in the middle of everything, and a Request
// dropped to the garbage collector mid-request, must not crash or hang.
import { afterEach, beforeAll, describe, expect, it } from 'vitest';

import {
  defaultParams,
  encodeBeginRequest,
  encodeParams,
  encodeRequest,
  encodeStream,
  FCGI_RESPONDER,
  FCGI_STDIN,
  parseCgiResponse,
} from '../helpers/fcgi-client.js';
import { sleep, tmpSocketPath } from '../helpers/wait.js';
import { assertDistFresh, cleanUpAfterTest, connect, CRASH_PATTERN, fixture, requestBody, startChild } from './child.js';

beforeAll(() => assertDistFresh());

afterEach(cleanUpAfterTest);

/** One request with the body 'x' to the child serving on `path`; resolves with the response body. */
const request = (path: string, uri: string): Promise<string> => requestBody({ path }, uri, 'x');

/** Index of the first stdout line starting with `prefix`, -1 if none. */
function lineIndex(lines: string[], prefix: string): number {
  return lines.findIndex((l) => l.startsWith(prefix));
}

describe('exit by itself', () => {
  it('serves 2 requests, awaits socket.close() and exits with code 0', async () => {
    const path = tmpSocketPath('close');
    const child = startChild(fixture('exit-serve-close.mjs'), ['--path', path, '--serve', '2']);
    await child.waitForOutput(/^listening$/m);
    expect(await request(path, '/one')).toBe('served #1 uri=/one body=x');
    expect(await request(path, '/two')).toBe('served #2 uri=/two body=x');
    const exit = await child.waitExit(10000);
    expect(child.lines(), child.describe()).toContain('closed true');
    expect(exit, child.describe()).toEqual({ code: 0, signal: null });
    expect(child.stderr).toBe('');
  });

  it('an unref()ed socket with nothing pending lets the process exit (code 0)', async () => {
    const child = startChild(fixture('exit-unref.mjs'), ['--path', tmpSocketPath('unref')]);
    const exit = await child.waitExit(10000);
    expect(child.lines(), child.describe()).toEqual(['unrefed false', 'exit event 0']);
    expect(exit, child.describe()).toEqual({ code: 0, signal: null });
  });

  it('an unref()ed socket with a serve loop pending in accept() lets the process exit (code 0)', async () => {
    const child = startChild(fixture('exit-unref.mjs'), ['--path', tmpSocketPath('unref'), '--accept-loop']);
    const exit = await child.waitExit(10000);
    expect(child.lines(), child.describe()).toEqual(['unrefed false', 'exit event 0']);
    expect(exit, child.describe()).toEqual({ code: 0, signal: null });
  });

  it('an unref()ed socket: a request in flight keeps the process alive until it is finished, then it exits 0', async () => {
    const path = tmpSocketPath('unrefreq');
    const child = startChild(fixture('exit-unref.mjs'), ['--path', path, '--keepalive-until-accept']);
    await child.waitForOutput(/^unrefed false$/m);
    const conn = await connect(path);
    // BEGIN_REQUEST and PARAMS now, the body only later
    void conn.write(Buffer.concat([encodeBeginRequest(1, FCGI_RESPONDER, false), encodeParams(1, defaultParams({ REQUEST_URI: '/late-body' }))]));
    await child.waitForOutput(/^accepted$/m);
    // nothing but the request in flight keeps the process alive now
    await sleep(700);
    expect(child.alive, `exited while a request was in flight\n${child.describe()}`).toBe(true);
    void conn.write(encodeStream(FCGI_STDIN, 1, 'late'));
    const r = await conn.readUntilEnd(1, 10000);
    expect(parseCgiResponse(r.stdout).body.toString()).toBe('body=late');
    const exit = await child.waitExit(10000);
    expect(child.lines(), child.describe()).toEqual(['unrefed false', 'accepted', 'body read', 'finished', 'exit event 0']);
    expect(exit, child.describe()).toEqual({ code: 0, signal: null });
  });

  it('a ref()ed socket with pending accept()s keeps the process alive (and serving)', async () => {
    const path = tmpSocketPath('pending');
    const child = startChild(fixture('exit-pending-accept.mjs'), ['--path', path]);
    await child.waitForOutput(/^ready$/m);
    await sleep(1000);
    expect(child.alive, child.describe()).toBe(true);
    expect(await request(path, '/still-there')).toBe('served #1 uri=/still-there body=x');
    await sleep(200);
    expect(child.alive, child.describe()).toBe(true);
    child.kill('SIGKILL');
    expect(await child.waitExit(10000)).toEqual({ code: null, signal: 'SIGKILL' });
  });

  it('close() during a request: the request completes, pending accepts end, then the process exits 0', async () => {
    const path = tmpSocketPath('inflight');
    const child = startChild(fixture('exit-close-inflight.mjs'), ['--path', path]);
    await child.waitForOutput(/^listening$/m);
    const conn = await connect(path);
    void conn.write(encodeRequest({ params: defaultParams({ REQUEST_URI: '/held' }), stdin: 'body' }));
    const result = await conn.readUntilEnd(1, 10000);
    expect(result.protocolStatus).toBe(0);
    expect(parseCgiResponse(result.stdout).body.toString()).toBe('held for 300 ms, then answered after close()');
    const exit = await child.waitExit(10000);
    expect(exit, child.describe()).toEqual({ code: 0, signal: null });
    const lines = child.lines();
    // the one request, close() during it, answered, close() resolved after it, both loops ended
    const accepted = lineIndex(lines, 'accepted');
    const closeCalled = lineIndex(lines, 'close called');
    const finished = lineIndex(lines, 'finished');
    const closeResolved = lineIndex(lines, 'close resolved');
    expect(lines.filter((l) => l.startsWith('accepted')), child.describe()).toHaveLength(1);
    expect(accepted, child.describe()).toBeGreaterThanOrEqual(0);
    expect(closeCalled, child.describe()).toBeGreaterThan(accepted);
    expect(finished, child.describe()).toBeGreaterThan(closeCalled);
    expect(closeResolved, child.describe()).toBeGreaterThan(finished);
    expect(lines.filter((l) => l.startsWith('loop ended')).sort(), child.describe()).toEqual(['loop ended 0', 'loop ended 1']);
    expect(lines.at(-1), child.describe()).toBe('all done');
    expect(child.stderr).toBe('');
  });
});

describe('process.exit() while serving', () => {
  it('process.exit(0) with a request in flight and accepts pending: code 0, no signal, no crash', async () => {
    const path = tmpSocketPath('pexit');
    const child = startChild(fixture('exit-process-exit.mjs'), ['--path', path]);
    await child.waitForOutput(/^listening$/m);
    const conn = await connect(path);
    void conn.write(encodeRequest({ params: defaultParams({ REQUEST_URI: '/exit' }) }));
    const exit = await child.waitExit(10000);
    expect(child.lines(), child.describe()).toContain('calling process.exit(0)');
    expect(exit, child.describe()).toEqual({ code: 0, signal: null });
    expect(child.stderr, child.describe()).not.toMatch(CRASH_PATTERN);
    expect(await conn.waitClosed(5000)).toBe(true);
  });

  it('process.exit(0) while a native thread is blocked writing to a client that does not read: code 0, no crash, no hang', async () => {
    const path = tmpSocketPath('pexitw');
    const child = startChild(fixture('exit-process-exit.mjs'), ['--path', path, '--blocked-write']);
    await child.waitForOutput(/^listening$/m);
    const conn = await connect(path);
    conn.socket.pause(); // the web server stops reading: the 16 MiB write cannot complete
    void conn.write(encodeRequest({ params: defaultParams({ REQUEST_URI: '/exit-blocked' }) }));
    const exit = await child.waitExit(10000);
    expect(child.lines(), child.describe()).toContain('calling process.exit(0)');
    // the write was really still blocked when process.exit() ran
    expect(child.lines(), child.describe()).not.toContain('big write callback');
    expect(exit, child.describe()).toEqual({ code: 0, signal: null });
    expect(child.stderr, child.describe()).not.toMatch(CRASH_PATTERN);
  });
});

describe('garbage collection of a Request in the middle of a request', () => {
  it.each([
    ['its own connection', false],
    ['body read first, on a kept connection (FCGI_KEEP_CONN) reused for the next request', true],
  ] as const)('the dropped request still gets a complete FastCGI response, and a new Request serves the next one (%s)', async (_what, keepConn) => {
    const path = tmpSocketPath('gc');
    const child = startChild(fixture('gc-drop.mjs'), ['--path', path, ...(keepConn ? ['--read-body'] : [])], {
      nodeArgs: ['--expose-gc'],
    });
    await child.waitForOutput(/^listening$/m);
    const conn = await connect(path);
    void conn.write(encodeRequest({ params: defaultParams({ REQUEST_URI: '/dropped' }), stdin: 'body', keepConn }));
    await child.waitForOutput(/^dropping$/m);
    // END_REQUEST must arrive although nobody called finish()
    const dropped = await conn.readUntilEnd(1, 10000);
    expect(dropped.protocolStatus, child.describe()).toBe(0);
    expect(dropped.stdout.toString()).toBe('Content-Type: text/plain\r\n\r\npartial answer');
    await child.waitForOutput(/^gc done (true|false)$/m);
    if (keepConn) {
      expect(child.lines()).toContain('body body');
      expect(conn.closed, 'the kept connection was closed').toBe(false);
      void conn.write(encodeRequest({ params: defaultParams({ REQUEST_URI: '/next' }), stdin: 'x', requestId: 2, keepConn }));
      const next = await conn.readUntilEnd(2, 10000);
      expect(parseCgiResponse(next.stdout).body.toString()).toBe('second request uri=/next body=x');
    } else {
      expect(await request(path, '/next')).toBe('second request uri=/next body=x');
    }
    const exit = await child.waitExit(10000);
    expect(child.lines(), child.describe()).toContain('collected first Request');
    expect(exit, child.describe()).toEqual({ code: 0, signal: null });
    expect(child.stderr, child.describe()).not.toMatch(CRASH_PATTERN);
  });
});
