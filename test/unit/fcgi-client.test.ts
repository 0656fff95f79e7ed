/**
 * Self-test of the test helpers (raw FastCGI client, nginx launcher,
 * cgi-fcgi runner, wait utilities) against a tiny FastCGI responder written
 * here in plain TypeScript. No native addon is involved.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { existsSync } from 'node:fs';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  FCGI_ABORT_REQUEST,
  FCGI_AUTHORIZER,
  FCGI_BEGIN_REQUEST,
  FCGI_CANT_MPX_CONN,
  FCGI_DATA,
  FCGI_END_REQUEST,
  FCGI_FILTER,
  FCGI_GET_VALUES,
  FCGI_GET_VALUES_RESULT,
  FCGI_KEEP_CONN,
  FCGI_MAX_CONNS,
  FCGI_MPXS_CONNS,
  FCGI_PARAMS,
  FCGI_REQUEST_COMPLETE,
  FCGI_RESPONDER,
  FCGI_STDERR,
  FCGI_STDIN,
  FCGI_STDOUT,
  FCGI_UNKNOWN_ROLE,
  FCGI_UNKNOWN_TYPE,
  FcgiConnection,
  RecordParser,
  decodeBeginRequestBody,
  decodeNameValues,
  decodeRecords,
  defaultParams,
  encodeAbort,
  encodeBeginRequest,
  encodeEndRequest,
  encodeGetValues,
  encodeNameValue,
  encodeNameValues,
  encodeParams,
  encodeRecord,
  encodeStream,
  encodeUnknownType,
  fcgiRequest,
  parseCgiResponse,
  type FcgiRecord,
  type FcgiTarget,
} from '../helpers/fcgi-client.js';
import { startNginx, stopAllNginx } from '../helpers/nginx.js';
import { runCgiFcgi } from '../helpers/cgi-fcgi.js';
import { freePort, tmpSocketPath, waitFor, withTimeout } from '../helpers/wait.js';

// ---------------------------------------------------------------------------
// A minimal FastCGI responder, only for this test.
// ---------------------------------------------------------------------------

interface ReqState {
  role: number;
  keepConn: boolean;
  params: Buffer[];
  paramsDone: boolean;
  stdin: Buffer[];
}

interface SeenRequest {
  params: Record<string, string>;
  stdin: Buffer;
  keepConn: boolean;
  connection: number;
}

interface TestResponder {
  target: FcgiTarget;
  connectionsAccepted: number;
  requests: SeenRequest[];
  close(): Promise<void>;
}

/** Pads records to a multiple of 8 like real implementations do (exercises the parser). */
function rec(type: number, id: number, content: Buffer = Buffer.alloc(0)): Buffer {
  const padding = (8 - (content.length % 8)) % 8;
  return encodeRecord(type, id, content, { padding });
}

function respond(sock: Socket, id: number, req: ReqState, seen: SeenRequest): void {
  const uri = seen.params['REQUEST_URI'] ?? '';
  const stdin = seen.stdin;
  let head = 'Status: 200 OK\r\nContent-Type: text/plain\r\n';
  if (uri.startsWith('/notfound')) head = 'Status: 404 Not Found\r\nContent-Type: text/plain\r\n';
  if (uri.startsWith('/cookies')) head += 'Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n';
  const body = Buffer.concat([Buffer.from(`${head}\r\n${uri}\n`), stdin]);
  const out: Buffer[] = [];
  for (let off = 0; off < body.length; off += 0xffff) out.push(rec(FCGI_STDOUT, id, body.subarray(off, off + 0xffff)));
  out.push(rec(FCGI_STDOUT, id));
  if (uri.startsWith('/stderr')) {
    out.push(rec(FCGI_STDERR, id, Buffer.from('something went sideways\n')));
    out.push(rec(FCGI_STDERR, id));
  }
  out.push(encodeEndRequest(id, uri.startsWith('/exit7') ? 7 : 0, FCGI_REQUEST_COMPLETE));
  sock.write(Buffer.concat(out));
  if (!req.keepConn) sock.end();
}

async function startResponder(listen: { port: 0; host: string } | { path: string }): Promise<TestResponder> {
  const sockets = new Set<Socket>();
  const state: TestResponder = {
    target: { port: 0 },
    connectionsAccepted: 0,
    requests: [],
    close: async () => {},
  };
  const server: Server = createServer((sock) => {
    const connNo = ++state.connectionsAccepted;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    const parser = new RecordParser();
    const active = new Map<number, ReqState>();
    sock.on('data', (chunk: Buffer) => {
      for (const r of parser.push(chunk)) handle(r);
    });
    function handle(r: FcgiRecord): void {
      if (r.requestId === 0) {
        if (r.type === FCGI_GET_VALUES) {
          const answers: Record<string, string> = { FCGI_MAX_CONNS: '10', FCGI_MAX_REQS: '10', FCGI_MPXS_CONNS: '0' };
          const pairs = decodeNameValues(r.content)
            .filter(([n]) => n in answers)
            .map(([n]): [string, string] => [n, answers[n]!]);
          sock.write(rec(FCGI_GET_VALUES_RESULT, 0, encodeNameValues(pairs)));
        } else {
          sock.write(encodeUnknownType(r.type));
        }
        return;
      }
      if (r.type === FCGI_BEGIN_REQUEST) {
        const b = decodeBeginRequestBody(r.content);
        if (active.size > 0) {
          sock.write(encodeEndRequest(r.requestId, 0, FCGI_CANT_MPX_CONN));
          return;
        }
        if (b.role !== FCGI_RESPONDER) {
          sock.write(encodeEndRequest(r.requestId, 0, FCGI_UNKNOWN_ROLE));
          if (!b.keepConn) sock.end();
          return;
        }
        active.set(r.requestId, { role: b.role, keepConn: b.keepConn, params: [], paramsDone: false, stdin: [] });
        return;
      }
      const req = active.get(r.requestId);
      if (!req) return; // records for unknown requests are ignored
      if (r.type === FCGI_PARAMS) {
        if (r.content.length === 0) req.paramsDone = true;
        else req.params.push(r.content);
      } else if (r.type === FCGI_STDIN) {
        if (r.content.length > 0) {
          req.stdin.push(r.content);
          return;
        }
        active.delete(r.requestId);
        const seen: SeenRequest = {
          params: Object.fromEntries(decodeNameValues(Buffer.concat(req.params))),
          stdin: Buffer.concat(req.stdin),
          keepConn: req.keepConn,
          connection: connNo,
        };
        state.requests.push(seen);
        respond(sock, r.requestId, req, seen);
      } else if (r.type === FCGI_ABORT_REQUEST) {
        active.delete(r.requestId);
        sock.write(encodeEndRequest(r.requestId, 1, FCGI_REQUEST_COMPLETE));
        if (!req.keepConn) sock.end();
      }
    }
  });
  await withTimeout(
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(listen, () => resolve());
    }),
    5000,
    'test responder to listen',
  );
  if ('path' in listen) {
    state.target = { path: listen.path };
  } else {
    const addr = server.address();
    if (addr === null || typeof addr === 'string') throw new Error('unexpected address');
    state.target = { port: addr.port, host: listen.host };
  }
  state.close = () =>
    withTimeout(
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
      5000,
      'test responder to close',
    );
  responders.add(state);
  return state;
}

const responders = new Set<TestResponder>();
const connections = new Set<FcgiConnection>();

async function connect(target: FcgiTarget): Promise<FcgiConnection> {
  const c = await FcgiConnection.connect(target, 5000);
  connections.add(c);
  return c;
}

afterEach(async () => {
  for (const c of connections) c.destroy();
  connections.clear();
  await stopAllNginx();
  await Promise.all([...responders].map((r) => r.close()));
  responders.clear();
});

afterAll(async () => {
  await stopAllNginx();
});

// ---------------------------------------------------------------------------
// Encoding / decoding
// ---------------------------------------------------------------------------

describe('name-value encoding', () => {
  it('uses 1-byte lengths below 128 and 4-byte lengths otherwise', () => {
    const short = encodeNameValue('A', 'xyz');
    expect([...short]).toEqual([1, 3, 0x41, 0x78, 0x79, 0x7a]);

    const longValue = 'v'.repeat(128);
    const mixed = encodeNameValue('NAME', longValue);
    expect(mixed[0]).toBe(4);
    expect(mixed.readUInt32BE(1)).toBe(0x80000080);
    expect(mixed.length).toBe(1 + 4 + 4 + 128);

    const forced = encodeNameValue('A', 'B', { forceLong: true });
    expect(forced.length).toBe(4 + 4 + 2);
    expect(forced.readUInt32BE(0) >>> 0).toBe((0x80000000 | 1) >>> 0);
    expect(decodeNameValues(forced)).toEqual([['A', 'B']]);
  });

  it('round-trips short, long, empty and UTF-8 pairs in order, keeping duplicates', () => {
    const pairs: Array<[string, string]> = [
      ['SHORT', 'value'],
      ['EMPTY', ''],
      ['N'.repeat(127), 'x'],
      ['N'.repeat(128), 'y'.repeat(127)],
      ['BIG', 'z'.repeat(200_000)],
      ['UTF8', 'grüße ☃'],
      ['DUP', '1'],
      ['DUP', '2'],
    ];
    expect(decodeNameValues(encodeNameValues(pairs))).toEqual(pairs);
    expect(decodeNameValues(encodeNameValues({ A: '1', B: '2' }))).toEqual([
      ['A', '1'],
      ['B', '2'],
    ]);
  });

  it('can declare lengths that lie, and the decoder rejects truncation', () => {
    const huge = encodeNameValue('a', 'b', { nameLen: 0x7fffffff });
    expect(huge.readUInt32BE(0) >>> 0).toBe(0xffffffff);
    expect(() => decodeNameValues(huge)).toThrow(/declares/);
    const shortLie = encodeNameValue('abc', 'def', { valueLen: 10 });
    expect(shortLie[1]).toBe(10);
    expect(() => decodeNameValues(shortLie)).toThrow();
    expect(() => decodeNameValues(Buffer.from([0x80, 0, 0]))).toThrow(/truncated/);
    expect(() => encodeNameValue('a', 'b', { nameLen: 0x80000000 })).toThrow(RangeError);
  });
});

describe('record encoding', () => {
  it('writes the 8-byte header, padding and overrides', () => {
    const r = encodeRecord(FCGI_STDIN, 0x1234, Buffer.from('hello'), { padding: 3 });
    expect([...r.subarray(0, 8)]).toEqual([1, FCGI_STDIN, 0x12, 0x34, 0, 5, 3, 0]);
    expect(r.length).toBe(8 + 5 + 3);
    const lie = encodeRecord(FCGI_PARAMS, 1, Buffer.from('ab'), { contentLength: 60000, version: 2 });
    expect(lie[0]).toBe(2);
    expect(lie.readUInt16BE(4)).toBe(60000);
    expect(lie.length).toBe(10);
    expect(() => encodeRecord(FCGI_STDIN, 1, Buffer.alloc(65536))).toThrow(RangeError);

    const begin = encodeBeginRequest(7, FCGI_AUTHORIZER, true);
    const [b] = decodeRecords(begin);
    expect(b).toMatchObject({ type: FCGI_BEGIN_REQUEST, requestId: 7 });
    expect(decodeBeginRequestBody(b!.content)).toEqual({ role: FCGI_AUTHORIZER, flags: FCGI_KEEP_CONN, keepConn: true });
    expect(decodeRecords(encodeAbort(3))).toEqual([
      { version: 1, type: FCGI_ABORT_REQUEST, requestId: 3, content: Buffer.alloc(0), paddingLength: 0 },
    ]);
    const [gv] = decodeRecords(encodeGetValues([FCGI_MAX_CONNS, FCGI_MPXS_CONNS]));
    expect(gv!.requestId).toBe(0);
    expect(decodeNameValues(gv!.content)).toEqual([
      [FCGI_MAX_CONNS, ''],
      [FCGI_MPXS_CONNS, ''],
    ]);
  });

  it('splits streams at 65535 bytes and ends with an empty record', () => {
    const data = Buffer.alloc(65535 * 2 + 10, 0x61);
    const records = decodeRecords(encodeStream(FCGI_STDIN, 5, data));
    expect(records.map((r) => r.content.length)).toEqual([65535, 65535, 10, 0]);
    expect(records.every((r) => r.type === FCGI_STDIN && r.requestId === 5)).toBe(true);
    expect(Buffer.concat(records.map((r) => r.content)).equals(data)).toBe(true);

    expect(decodeRecords(encodeStream(FCGI_DATA, 1, Buffer.alloc(0))).map((r) => r.content.length)).toEqual([0]);
    expect(decodeRecords(encodeStream(FCGI_STDIN, 1, 'abcdefg', 3)).map((r) => r.content.toString())).toEqual([
      'abc',
      'def',
      'g',
      '',
    ]);

    const params = { BIG: 'p'.repeat(100_000), SMALL: 's' };
    const precs = decodeRecords(encodeParams(9, params));
    expect(precs.map((r) => r.content.length)).toEqual([65535, 100_000 + 1 + 4 + 3 + 2 + 5 + 1 - 65535, 0]);
    expect(precs.every((r) => r.type === FCGI_PARAMS && r.requestId === 9)).toBe(true);
    expect(Object.fromEntries(decodeNameValues(Buffer.concat(precs.map((r) => r.content))))).toEqual(params);
  });

  it('RecordParser decodes incrementally, one byte at a time, with padding', () => {
    const wire = Buffer.concat([
      rec(FCGI_STDOUT, 1, Buffer.from('abc')),
      rec(FCGI_STDERR, 1, Buffer.from('0123456789')),
      encodeEndRequest(1, 0xfffffffe, FCGI_REQUEST_COMPLETE),
    ]);
    const p = new RecordParser();
    const got: FcgiRecord[] = [];
    for (const byte of wire) got.push(...p.push(Buffer.from([byte])));
    expect(p.pendingBytes).toBe(0);
    expect(got.map((r) => [r.type, r.content.toString('latin1').length, r.paddingLength])).toEqual([
      [FCGI_STDOUT, 3, 5],
      [FCGI_STDERR, 10, 6],
      [FCGI_END_REQUEST, 8, 0],
    ]);
    expect(got[2]!.content.readUInt32BE(0)).toBe(0xfffffffe);
    expect(() => decodeRecords(wire.subarray(0, wire.length - 1))).toThrow(/trailing/);
  });
});

describe('parseCgiResponse / defaultParams', () => {
  it('parses status, headers, repeated headers and body', () => {
    const r = parseCgiResponse(
      Buffer.from('Status: 404 Not Found\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n\r\nbody\r\n\r\nmore'),
    );
    expect(r.status).toBe(404);
    expect(r.statusText).toBe('Not Found');
    expect(r.headers['content-type']).toBe('text/plain');
    expect(r.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    expect(r.body.toString()).toBe('body\r\n\r\nmore');

    const lf = parseCgiResponse(Buffer.from('Content-Type: text/html\n\n<p>'));
    expect(lf.status).toBe(200);
    expect(lf.headers).toEqual({ 'content-type': 'text/html' });
    expect(lf.body.toString()).toBe('<p>');

    expect(parseCgiResponse(Buffer.from('\r\nonly body')).body.toString()).toBe('only body');
    expect(() => parseCgiResponse(Buffer.from('Content-Type: text/plain\r\n'))).toThrow(/no end of headers/);
    expect(() => parseCgiResponse(Buffer.from('Status: abc\r\n\r\n'))).toThrow(/Status/);
  });

  it('defaultParams builds a plausible environment', () => {
    const p = defaultParams({ REQUEST_URI: '/a/b?x=1&y=2', HTTP_USER_AGENT: undefined });
    expect(p).toMatchObject({
      REQUEST_METHOD: 'GET',
      REQUEST_URI: '/a/b?x=1&y=2',
      SCRIPT_NAME: '/a/b',
      QUERY_STRING: 'x=1&y=2',
      SERVER_PROTOCOL: 'HTTP/1.1',
      GATEWAY_INTERFACE: 'CGI/1.1',
    });
    expect(p['REMOTE_ADDR']).toBeTruthy();
    expect(p['REMOTE_PORT']).toMatch(/^\d+$/);
    expect(p['SERVER_NAME']).toBeTruthy();
    expect(p['SERVER_PORT']).toMatch(/^\d+$/);
    expect(p['CONTENT_LENGTH']).toBeUndefined();
    expect('HTTP_USER_AGENT' in p).toBe(false);
    const post = defaultParams({}, 'héllo');
    expect(post['REQUEST_METHOD']).toBe('POST');
    expect(post['CONTENT_LENGTH']).toBe('6');
  });
});

// ---------------------------------------------------------------------------
// Against the test responder
// ---------------------------------------------------------------------------

describe('FcgiConnection / fcgiRequest against the test responder', () => {
  for (const kind of ['tcp', 'unix'] as const) {
    it(`performs a RESPONDER request over ${kind}`, async () => {
      const srv = await startResponder(kind === 'tcp' ? { port: 0, host: '127.0.0.1' } : { path: tmpSocketPath('resp') });
      const body = Buffer.alloc(200_000, 'q');
      const res = await fcgiRequest(srv.target, {
        params: defaultParams({ REQUEST_URI: '/hello?x=1' }, body),
        stdin: body,
        timeoutMs: 5000,
      });
      expect(res.protocolStatus).toBe(FCGI_REQUEST_COMPLETE);
      expect(res.appStatus).toBe(0);
      expect(res.stderr.length).toBe(0);
      expect(res.records.at(-1)!.type).toBe(FCGI_END_REQUEST);
      const cgi = parseCgiResponse(res.stdout);
      expect(cgi.status).toBe(200);
      expect(cgi.headers['content-type']).toBe('text/plain');
      expect(cgi.body.equals(Buffer.concat([Buffer.from('/hello?x=1\n'), body]))).toBe(true);
      expect(srv.requests[0]!.params['CONTENT_LENGTH']).toBe('200000');
      expect(srv.requests[0]!.params['QUERY_STRING']).toBe('x=1');
    });
  }

  it('collects stderr, app status, 404 status and repeated headers', async () => {
    const srv = await startResponder({ port: 0, host: '127.0.0.1' });
    const a = await fcgiRequest(srv.target, { params: defaultParams({ REQUEST_URI: '/stderr/exit7' }) });
    expect(a.stderr.toString()).toBe('something went sideways\n');
    expect(a.appStatus).toBe(0);
    const b = await fcgiRequest(srv.target, { params: defaultParams({ REQUEST_URI: '/exit7' }), requestId: 65535 });
    expect(b.appStatus).toBe(7);
    const c = parseCgiResponse((await fcgiRequest(srv.target, { params: defaultParams({ REQUEST_URI: '/notfound' }) })).stdout);
    expect(c.status).toBe(404);
    const d = parseCgiResponse((await fcgiRequest(srv.target, { params: defaultParams({ REQUEST_URI: '/cookies' }) })).stdout);
    expect(d.headers['set-cookie']).toEqual(['a=1', 'b=2']);
  });

  it('keeps the connection for FCGI_KEEP_CONN and closes it otherwise', async () => {
    const srv = await startResponder({ port: 0, host: '127.0.0.1' });
    const conn = await connect(srv.target);
    const r1 = await fcgiRequest(srv.target, { params: defaultParams({ REQUEST_URI: '/one' }), keepConn: true, connection: conn });
    const r2 = await fcgiRequest(srv.target, {
      params: defaultParams({ REQUEST_URI: '/two' }),
      stdin: 'xyz',
      keepConn: true,
      requestId: 2,
      connection: conn,
    });
    expect(parseCgiResponse(r1.stdout).body.toString()).toBe('/one\n');
    expect(parseCgiResponse(r2.stdout).body.toString()).toBe('/two\nxyz');
    expect(conn.closed).toBe(false);
    expect(await conn.waitClosed(200)).toBe(false);
    // A third request without KEEP_CONN: the server must close afterwards.
    await fcgiRequest(srv.target, { params: defaultParams({ REQUEST_URI: '/three' }), requestId: 3, connection: conn });
    expect(await conn.waitClosed(2000)).toBe(true);
    expect(srv.connectionsAccepted).toBe(1);
    expect(srv.requests.map((r) => [r.params['REQUEST_URI'], r.keepConn, r.connection])).toEqual([
      ['/one', true, 1],
      ['/two', true, 1],
      ['/three', false, 1],
    ]);
  });

  it('crafts management records, unknown roles, aborts and interleaved readers', async () => {
    const srv = await startResponder({ port: 0, host: '127.0.0.1' });
    const conn = await connect(srv.target);
    await conn.write(encodeGetValues([FCGI_MAX_CONNS, FCGI_MPXS_CONNS, 'BOGUS']));
    const gv = await conn.readRecord(2000);
    expect(gv.type).toBe(FCGI_GET_VALUES_RESULT);
    expect(decodeNameValues(gv.content)).toEqual([
      [FCGI_MAX_CONNS, '10'],
      [FCGI_MPXS_CONNS, '0'],
    ]);

    await conn.write(encodeRecord(42, 0, Buffer.from('?')));
    const unk = await conn.readRecord(2000);
    expect(unk.type).toBe(FCGI_UNKNOWN_TYPE);
    expect(unk.content[0]).toBe(42);

    await conn.write(encodeBeginRequest(4, FCGI_FILTER, true));
    const filt = await conn.readUntilEnd(4, 2000);
    expect(filt.protocolStatus).toBe(FCGI_UNKNOWN_ROLE);

    // Abort a request mid-way.
    await conn.write(Buffer.concat([encodeBeginRequest(5, FCGI_RESPONDER, true), encodeParams(5, defaultParams()), encodeAbort(5)]));
    const ab = await conn.readUntilEnd(5, 2000);
    expect(ab.appStatus).toBe(1);

    // A second BEGIN while one is active on a non-multiplexing connection.
    await conn.write(Buffer.concat([encodeBeginRequest(6, FCGI_RESPONDER, true), encodeBeginRequest(7, FCGI_RESPONDER, true)]));
    const mpx = await conn.readUntilEnd(7, 2000);
    expect(mpx.protocolStatus).toBe(FCGI_CANT_MPX_CONN);
    // Finish request 6, reading its records after 7's were consumed.
    await conn.write(Buffer.concat([encodeParams(6, defaultParams({ REQUEST_URI: '/six' })), encodeStream(FCGI_STDIN, 6, '')]));
    const six = await conn.readUntilEnd(6, 2000);
    expect(parseCgiResponse(six.stdout).body.toString()).toBe('/six\n');
    expect(conn.pending.length).toBe(0);
  });

  it('times out clearly and reports peer closes', async () => {
    const srv = await startResponder({ port: 0, host: '127.0.0.1' });
    const conn = await connect(srv.target);
    const t0 = Date.now();
    await expect(conn.readRecord(150)).rejects.toThrow(/timed out after 150 ms waiting for a record/);
    await conn.write(encodeBeginRequest(1, FCGI_RESPONDER, false));
    await expect(conn.readUntilEnd(1, 150)).rejects.toThrow(/timed out after 150 ms waiting for END_REQUEST of request 1/);
    expect(Date.now() - t0).toBeLessThan(2000);
    await srv.close();
    expect(await conn.waitClosed(2000)).toBe(true);
    await expect(conn.readRecord(1000)).rejects.toThrow(/closed by peer/);

    const port = await freePort();
    await expect(FcgiConnection.connect({ port }, 2000)).rejects.toThrow(/cannot connect/);
  });
});

// ---------------------------------------------------------------------------
// Through real nginx and cgi-fcgi
// ---------------------------------------------------------------------------

async function fetchText(url: string, init?: RequestInit): Promise<{ status: number; body: string; headers: Headers }> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: await res.text(), headers: res.headers };
}

describe('nginx -> test responder', () => {
  for (const keepConn of [false, true]) {
    it(`serves HTTP requests with fastcgi_keep_conn ${keepConn ? 'on' : 'off'}`, async () => {
      const srv = await startResponder({ port: 0, host: '127.0.0.1' });
      const ngx = await startNginx({ upstream: srv.target as { port: number }, keepConn });
      expect(ngx.url).toBe(`http://127.0.0.1:${ngx.port}`);

      for (let i = 0; i < 3; i++) {
        const r = await fetchText(`${ngx.url}/get/${i}?q=${i}`);
        expect(r.status).toBe(200);
        expect(r.body).toBe(`/get/${i}?q=${i}\n`);
        expect(r.headers.get('content-type')).toBe('text/plain');
      }
      const payload = 'p'.repeat(100_000);
      const post = await fetchText(`${ngx.url}/post`, { method: 'POST', body: payload, headers: { 'content-type': 'text/plain' } });
      expect(post.status).toBe(200);
      expect(post.body).toBe(`/post\n${payload}`);
      const nf = await fetchText(`${ngx.url}/notfound`);
      expect(nf.status).toBe(404);

      expect(srv.requests).toHaveLength(5);
      expect(srv.requests.every((r) => r.keepConn === keepConn)).toBe(true);
      expect(srv.requests[3]!.params).toMatchObject({
        REQUEST_METHOD: 'POST',
        CONTENT_LENGTH: '100000',
        CONTENT_TYPE: 'text/plain',
        REQUEST_URI: '/post',
        SCRIPT_NAME: '/post',
        SERVER_PROTOCOL: 'HTTP/1.1',
        GATEWAY_INTERFACE: 'CGI/1.1',
        REMOTE_ADDR: '127.0.0.1',
        SERVER_PORT: String(ngx.port),
      });
      if (keepConn) expect(srv.connectionsAccepted).toBe(1);
      else expect(srv.connectionsAccepted).toBe(5);

      await waitFor(() => ngx.accessLog().split('\n').filter(Boolean).length >= 5, { what: 'access log lines', timeoutMs: 3000 });
      expect(ngx.errorLogProblems()).toEqual([]);
      expect(ngx.errorLog()).not.toMatch(/\[(error|crit|alert)\]/);

      const pid = ngx.pid;
      await ngx.stop();
      expect(() => process.kill(pid, 0)).toThrow();
    });
  }

  it('reaches a unix-socket upstream', async () => {
    const srv = await startResponder({ path: tmpSocketPath('ngx-up') });
    const ngx = await startNginx({ upstream: srv.target, keepConn: true, keepalive: 4 });
    const r = await fetchText(`${ngx.url}/via-unix`);
    expect(r.status).toBe(200);
    expect(r.body).toBe('/via-unix\n');
    expect(ngx.config).toMatch(/keepalive 4;/);
    expect(ngx.errorLogProblems()).toEqual([]);
  });

  it('lets extraLocation override the buffering defaults', async () => {
    const srv = await startResponder({ port: 0, host: '127.0.0.1' });
    const ngx = await startNginx({
      upstream: srv.target as { port: number },
      extraLocation: 'fastcgi_buffering off;\nfastcgi_request_buffering off;',
    });
    expect(ngx.config.match(/fastcgi_buffering/g)).toHaveLength(1);
    expect(ngx.config.match(/fastcgi_request_buffering/g)).toHaveLength(1);
    const r = await fetchText(`${ngx.url}/unbuffered`, { method: 'POST', body: 'abc' });
    expect(r.body).toBe('/unbuffered\nabc');
  });

  it('reports a broken configuration with the error output', async () => {
    await expect(
      startNginx({ upstream: { port: 1 }, extraLocation: 'this_is_not_a_directive on;' }),
    ).rejects.toThrow(/unknown directive "this_is_not_a_directive"/);
  });
});

describe('cgi-fcgi -> test responder', () => {
  for (const kind of ['tcp', 'unix'] as const) {
    it(`runs a request over ${kind}`, async () => {
      expect(existsSync('/usr/bin/cgi-fcgi')).toBe(true);
      const srv = await startResponder(kind === 'tcp' ? { port: 0, host: '127.0.0.1' } : { path: tmpSocketPath('cgi') });
      const body = 'hello from cgi-fcgi';
      const res = await runCgiFcgi(srv.target, {
        env: defaultParams({ REQUEST_URI: '/cgi?z=9' }, body),
        stdin: body,
        timeoutMs: 5000,
      });
      expect(res.code).toBe(0);
      const cgi = parseCgiResponse(res.stdout);
      expect(cgi.status).toBe(200);
      expect(cgi.body.toString()).toBe(`/cgi?z=9\n${body}`);
      expect(srv.requests).toHaveLength(1);
      expect(srv.requests[0]!.params['QUERY_STRING']).toBe('z=9');
      expect(srv.requests[0]!.params['PATH']).toBeDefined();
    });
  }

  it('forwards STDERR records to its stderr', async () => {
    const srv = await startResponder({ port: 0, host: '127.0.0.1' });
    const res = await runCgiFcgi(srv.target, { env: defaultParams({ REQUEST_URI: '/stderr' }) });
    expect(res.stderr).toContain('something went sideways');
  });
});
