/**
 * A raw FastCGI client for tests. It can build well-formed requests as well
 * as arbitrary (including deliberately malformed) records, and decode
 * whatever the application sends back.
 *
 * Wire format reference: FastCGI Specification 1.0 (Open Market, 1996).
 */
import { connect as netConnect, type Socket } from 'node:net';

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

export const FCGI_VERSION_1 = 1;
export const FCGI_HEADER_LEN = 8;
export const FCGI_MAX_CONTENT = 0xffff;
export const FCGI_NULL_REQUEST_ID = 0;

export const FCGI_BEGIN_REQUEST = 1;
export const FCGI_ABORT_REQUEST = 2;
export const FCGI_END_REQUEST = 3;
export const FCGI_PARAMS = 4;
export const FCGI_STDIN = 5;
export const FCGI_STDOUT = 6;
export const FCGI_STDERR = 7;
export const FCGI_DATA = 8;
export const FCGI_GET_VALUES = 9;
export const FCGI_GET_VALUES_RESULT = 10;
export const FCGI_UNKNOWN_TYPE = 11;

/** Record types by short name, e.g. `RecordType.STDOUT === 6`. */
export const RecordType = {
  BEGIN_REQUEST: FCGI_BEGIN_REQUEST,
  ABORT_REQUEST: FCGI_ABORT_REQUEST,
  END_REQUEST: FCGI_END_REQUEST,
  PARAMS: FCGI_PARAMS,
  STDIN: FCGI_STDIN,
  STDOUT: FCGI_STDOUT,
  STDERR: FCGI_STDERR,
  DATA: FCGI_DATA,
  GET_VALUES: FCGI_GET_VALUES,
  GET_VALUES_RESULT: FCGI_GET_VALUES_RESULT,
  UNKNOWN_TYPE: FCGI_UNKNOWN_TYPE,
} as const;

export const FCGI_RESPONDER = 1;
export const FCGI_AUTHORIZER = 2;
export const FCGI_FILTER = 3;

export const Role = {
  RESPONDER: FCGI_RESPONDER,
  AUTHORIZER: FCGI_AUTHORIZER,
  FILTER: FCGI_FILTER,
} as const;

export const FCGI_REQUEST_COMPLETE = 0;
export const FCGI_CANT_MPX_CONN = 1;
export const FCGI_OVERLOADED = 2;
export const FCGI_UNKNOWN_ROLE = 3;

export const ProtocolStatus = {
  REQUEST_COMPLETE: FCGI_REQUEST_COMPLETE,
  CANT_MPX_CONN: FCGI_CANT_MPX_CONN,
  OVERLOADED: FCGI_OVERLOADED,
  UNKNOWN_ROLE: FCGI_UNKNOWN_ROLE,
} as const;

/** Flag bit in FCGI_BeginRequestBody.flags. */
export const FCGI_KEEP_CONN = 1;

/** Names understood in FCGI_GET_VALUES. */
export const FCGI_MAX_CONNS = 'FCGI_MAX_CONNS';
export const FCGI_MAX_REQS = 'FCGI_MAX_REQS';
export const FCGI_MPXS_CONNS = 'FCGI_MPXS_CONNS';

const TYPE_NAMES: { [type: number]: string } = {
  1: 'BEGIN_REQUEST',
  2: 'ABORT_REQUEST',
  3: 'END_REQUEST',
  4: 'PARAMS',
  5: 'STDIN',
  6: 'STDOUT',
  7: 'STDERR',
  8: 'DATA',
  9: 'GET_VALUES',
  10: 'GET_VALUES_RESULT',
  11: 'UNKNOWN_TYPE',
};

/** Human-readable name of a record type (for messages). */
export function recordTypeName(type: number): string {
  return TYPE_NAMES[type] ?? `type#${type}`;
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

export type Bytes = Buffer | string;

function toBuffer(data: Bytes | undefined): Buffer {
  if (data === undefined) return Buffer.alloc(0);
  return typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
}

export interface EncodeRecordOptions {
  /** Number of padding bytes (zeros) appended after the content. Default 0. */
  padding?: number;
  /** Version byte. Default 1. */
  version?: number;
  /**
   * Value written into the contentLength header field instead of the real
   * content length (to lie about the length). The actual content bytes are
   * still appended as given.
   */
  contentLength?: number;
  /** Value of the reserved header byte. Default 0. */
  reserved?: number;
}

/**
 * One raw record: 8-byte header + content + padding.
 * Throws if the real content is longer than 65535 bytes and no explicit
 * `contentLength` override is given.
 */
export function encodeRecord(
  type: number,
  requestId: number,
  content?: Bytes,
  opts: EncodeRecordOptions = {},
): Buffer {
  const body = toBuffer(content);
  const padding = opts.padding ?? 0;
  const declared = opts.contentLength ?? body.length;
  if (opts.contentLength === undefined && body.length > FCGI_MAX_CONTENT) {
    throw new RangeError(`encodeRecord: content of ${body.length} bytes exceeds ${FCGI_MAX_CONTENT}`);
  }
  const header = Buffer.alloc(FCGI_HEADER_LEN);
  header.writeUInt8(opts.version ?? FCGI_VERSION_1, 0);
  header.writeUInt8(type, 1);
  header.writeUInt16BE(requestId, 2);
  header.writeUInt16BE(declared, 4);
  header.writeUInt8(padding, 6);
  header.writeUInt8(opts.reserved ?? 0, 7);
  return Buffer.concat([header, body, Buffer.alloc(padding)]);
}

/** FCGI_BeginRequestBody: role (u16), flags (u8), 5 reserved bytes. */
export function encodeBeginRequestBody(role: number, keepConn: boolean | number): Buffer {
  const body = Buffer.alloc(8);
  body.writeUInt16BE(role, 0);
  body.writeUInt8(typeof keepConn === 'number' ? keepConn : keepConn ? FCGI_KEEP_CONN : 0, 2);
  return body;
}

/** A BEGIN_REQUEST record. `keepConn` may also be a raw flags byte. */
export function encodeBeginRequest(
  requestId: number,
  role: number = FCGI_RESPONDER,
  keepConn: boolean | number = false,
): Buffer {
  return encodeRecord(FCGI_BEGIN_REQUEST, requestId, encodeBeginRequestBody(role, keepConn));
}

/** An END_REQUEST record (for fake applications written in tests). */
export function encodeEndRequest(
  requestId: number,
  appStatus = 0,
  protocolStatus: number = FCGI_REQUEST_COMPLETE,
): Buffer {
  const body = Buffer.alloc(8);
  body.writeUInt32BE(appStatus >>> 0, 0);
  body.writeUInt8(protocolStatus, 4);
  return encodeRecord(FCGI_END_REQUEST, requestId, body);
}

/** An UNKNOWN_TYPE management record answering a record of type `unknownType`. */
export function encodeUnknownType(unknownType: number): Buffer {
  const body = Buffer.alloc(8);
  body.writeUInt8(unknownType, 0);
  return encodeRecord(FCGI_UNKNOWN_TYPE, FCGI_NULL_REQUEST_ID, body);
}

export interface NameValueOptions {
  /** Declared name length instead of the real one. */
  nameLen?: number;
  /** Declared value length instead of the real one. */
  valueLen?: number;
  /** Use the 4-byte length form even for lengths < 128. */
  forceLong?: boolean;
}

function encodeLength(len: number, forceLong: boolean): Buffer {
  if (!Number.isInteger(len) || len < 0 || len > 0x7fffffff) {
    throw new RangeError(`encodeNameValue: length ${len} cannot be encoded`);
  }
  if (len < 0x80 && !forceLong) return Buffer.from([len]);
  const b = Buffer.alloc(4);
  b.writeUInt32BE((len | 0x80000000) >>> 0, 0);
  return b;
}

/**
 * One name-value pair (FCGI_NameValuePair11/14/41/44). Lengths < 128 use the
 * 1-byte form unless `forceLong`; declared lengths may be overridden.
 */
export function encodeNameValue(name: Bytes, value: Bytes, opts: NameValueOptions = {}): Buffer {
  const n = toBuffer(name);
  const v = toBuffer(value);
  const forceLong = opts.forceLong ?? false;
  return Buffer.concat([
    encodeLength(opts.nameLen ?? n.length, forceLong),
    encodeLength(opts.valueLen ?? v.length, forceLong),
    n,
    v,
  ]);
}

export type NameValuePairs = Record<string, string> | Array<[string, string]>;

function pairsToArray(pairs: NameValuePairs): Array<[string, string]> {
  return Array.isArray(pairs) ? pairs : Object.entries(pairs);
}

/** Concatenated name-value pairs (no record framing). */
export function encodeNameValues(pairs: NameValuePairs): Buffer {
  return Buffer.concat(pairsToArray(pairs).map(([k, v]) => encodeNameValue(k, v)));
}

/**
 * A stream of records of `type` carrying `data` split in chunks of at most
 * `chunkSize` (default 65535) bytes, followed by the empty terminator record.
 */
export function encodeStream(
  type: number,
  requestId: number,
  data: Bytes,
  chunkSize: number = FCGI_MAX_CONTENT,
): Buffer {
  if (!Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > FCGI_MAX_CONTENT) {
    throw new RangeError(`encodeStream: chunkSize ${chunkSize} not in 1..${FCGI_MAX_CONTENT}`);
  }
  const buf = toBuffer(data);
  const records: Buffer[] = [];
  for (let off = 0; off < buf.length; off += chunkSize) {
    records.push(encodeRecord(type, requestId, buf.subarray(off, off + chunkSize)));
  }
  records.push(encodeRecord(type, requestId));
  return Buffer.concat(records);
}

/** PARAMS records (content split at 65535 bytes) + the empty PARAMS record. */
export function encodeParams(requestId: number, pairs: NameValuePairs, chunkSize?: number): Buffer {
  return encodeStream(FCGI_PARAMS, requestId, encodeNameValues(pairs), chunkSize);
}

/** An ABORT_REQUEST record. */
export function encodeAbort(requestId: number): Buffer {
  return encodeRecord(FCGI_ABORT_REQUEST, requestId);
}

/** A GET_VALUES management record (request id 0) asking for `names`. */
export function encodeGetValues(names: string[]): Buffer {
  return encodeRecord(
    FCGI_GET_VALUES,
    FCGI_NULL_REQUEST_ID,
    Buffer.concat(names.map((n) => encodeNameValue(n, ''))),
  );
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/** A decoded record. (Named FcgiRecord so it does not shadow TS's Record<K, V>.) */
export interface FcgiRecord {
  version: number;
  type: number;
  requestId: number;
  content: Buffer;
  paddingLength: number;
}

/** Incremental record decoder: feed bytes, get complete records. */
export class RecordParser {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): FcgiRecord[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: FcgiRecord[] = [];
    for (;;) {
      if (this.buf.length < FCGI_HEADER_LEN) break;
      const contentLength = this.buf.readUInt16BE(4);
      const paddingLength = this.buf.readUInt8(6);
      const total = FCGI_HEADER_LEN + contentLength + paddingLength;
      if (this.buf.length < total) break;
      out.push({
        version: this.buf.readUInt8(0),
        type: this.buf.readUInt8(1),
        requestId: this.buf.readUInt16BE(2),
        // copy so records do not pin the whole receive buffer
        content: Buffer.from(this.buf.subarray(FCGI_HEADER_LEN, FCGI_HEADER_LEN + contentLength)),
        paddingLength,
      });
      this.buf = this.buf.subarray(total);
    }
    return out;
  }

  /** Bytes received but not yet forming a complete record. */
  get pendingBytes(): number {
    return this.buf.length;
  }
}

/** Decode all records in a complete buffer; throws if bytes are left over. */
export function decodeRecords(buf: Buffer): FcgiRecord[] {
  const p = new RecordParser();
  const records = p.push(buf);
  if (p.pendingBytes !== 0) {
    throw new Error(`decodeRecords: ${p.pendingBytes} trailing bytes do not form a complete record`);
  }
  return records;
}

function readLength(buf: Buffer, off: number): [number, number] {
  if (off >= buf.length) throw new Error(`decodeNameValues: truncated length at offset ${off}`);
  const b0 = buf.readUInt8(off);
  if ((b0 & 0x80) === 0) return [b0, off + 1];
  if (off + 4 > buf.length) throw new Error(`decodeNameValues: truncated 4-byte length at offset ${off}`);
  return [buf.readUInt32BE(off) & 0x7fffffff, off + 4];
}

/** Decode name-value pairs as Buffers (order and duplicates preserved). Throws on truncation. */
export function decodeNameValuesRaw(buf: Buffer): Array<[Buffer, Buffer]> {
  const out: Array<[Buffer, Buffer]> = [];
  let off = 0;
  while (off < buf.length) {
    let nameLen: number;
    let valueLen: number;
    [nameLen, off] = readLength(buf, off);
    [valueLen, off] = readLength(buf, off);
    if (off + nameLen + valueLen > buf.length) {
      throw new Error(
        `decodeNameValues: pair at offset ${off} declares ${nameLen}+${valueLen} bytes but only ${buf.length - off} remain`,
      );
    }
    const name = buf.subarray(off, off + nameLen);
    off += nameLen;
    const value = buf.subarray(off, off + valueLen);
    off += valueLen;
    out.push([name, value]);
  }
  return out;
}

/** Decode name-value pairs as UTF-8 strings (order and duplicates preserved). Throws on truncation. */
export function decodeNameValues(buf: Buffer): Array<[string, string]> {
  return decodeNameValuesRaw(buf).map(([n, v]) => [n.toString('utf8'), v.toString('utf8')]);
}

export interface BeginRequestBody {
  role: number;
  flags: number;
  keepConn: boolean;
}

export function decodeBeginRequestBody(content: Buffer): BeginRequestBody {
  if (content.length < 3) throw new Error(`BEGIN_REQUEST body too short (${content.length} bytes)`);
  const flags = content.readUInt8(2);
  return { role: content.readUInt16BE(0), flags, keepConn: (flags & FCGI_KEEP_CONN) !== 0 };
}

export interface EndRequestBody {
  /** appStatus as the unsigned 32-bit value on the wire. */
  appStatus: number;
  protocolStatus: number;
}

export function decodeEndRequestBody(content: Buffer): EndRequestBody {
  if (content.length < 5) throw new Error(`END_REQUEST body too short (${content.length} bytes)`);
  return { appStatus: content.readUInt32BE(0), protocolStatus: content.readUInt8(4) };
}

// ---------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------

export type FcgiTarget = { port: number; host?: string } | { path: string };

export function describeTarget(target: FcgiTarget): string {
  return 'path' in target ? `unix:${target.path}` : `${target.host ?? '127.0.0.1'}:${target.port}`;
}

export interface FcgiResult {
  stdout: Buffer;
  stderr: Buffer;
  appStatus: number;
  protocolStatus: number;
  /** Every record received for the request, END_REQUEST included, in order. */
  records: FcgiRecord[];
}

/**
 * A client connection to a FastCGI application. Received records are queued;
 * readers take records from the queue (readUntilEnd only takes records of its
 * own request id, leaving others for later readers).
 */
export class FcgiConnection {
  readonly socket: Socket;
  readonly target: FcgiTarget;
  /** True once the peer ended the stream or the socket closed. */
  closed = false;
  /** Last socket error (e.g. ECONNRESET), if any. */
  error: Error | undefined;
  /** Total bytes received. */
  bytesReceived = 0;

  private readonly parser = new RecordParser();
  private readonly queue: FcgiRecord[] = [];
  private readonly listeners = new Set<() => void>();
  private fullyClosed = false;

  private constructor(socket: Socket, target: FcgiTarget) {
    this.socket = socket;
    this.target = target;
    socket.on('data', (chunk: Buffer) => {
      this.bytesReceived += chunk.length;
      const recs = this.parser.push(chunk);
      if (recs.length > 0) {
        this.queue.push(...recs);
        this.notify();
      }
    });
    socket.on('end', () => {
      this.closed = true;
      this.notify();
    });
    socket.on('error', (err: Error) => {
      this.error = err;
      this.notify();
    });
    socket.on('close', () => {
      this.closed = true;
      this.fullyClosed = true;
      this.notify();
    });
  }

  static connect(target: FcgiTarget, timeoutMs = 5000): Promise<FcgiConnection> {
    return new Promise<FcgiConnection>((resolve, reject) => {
      const socket =
        'path' in target
          ? netConnect({ path: target.path })
          : netConnect({ port: target.port, host: target.host ?? '127.0.0.1' });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`FcgiConnection.connect: timed out after ${timeoutMs} ms connecting to ${describeTarget(target)}`));
      }, timeoutMs);
      const onError = (err: Error): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(new Error(`FcgiConnection.connect: cannot connect to ${describeTarget(target)}: ${err.message}`, { cause: err }));
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        resolve(new FcgiConnection(socket, target));
      });
    });
  }

  /** Records received but not yet consumed. */
  get pending(): readonly FcgiRecord[] {
    return this.queue;
  }

  private notify(): void {
    for (const l of [...this.listeners]) l();
  }

  /** Wait until something happens (record, end, error, close) or the deadline passes. */
  private waitChange(deadline: number): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        resolve(false);
        return;
      }
      const done = (changed: boolean): void => {
        clearTimeout(timer);
        this.listeners.delete(listener);
        resolve(changed);
      };
      const listener = (): void => done(true);
      const timer = setTimeout(() => done(false), remaining);
      this.listeners.add(listener);
    });
  }

  /**
   * Write raw bytes. The returned promise settles when the data is flushed to
   * the kernel; it is pre-handled, so ignoring it never causes an unhandled
   * rejection (awaiting it still throws on EPIPE etc.).
   */
  write(buf: Buffer): Promise<void> {
    const p = new Promise<void>((resolve, reject) => {
      if (this.socket.destroyed || !this.socket.writable) {
        reject(new Error(`FcgiConnection.write: socket to ${describeTarget(this.target)} is not writable`));
        return;
      }
      this.socket.write(buf, (err) => (err ? reject(err) : resolve()));
    });
    p.catch(() => {});
    return p;
  }

  private async take(
    match: (r: FcgiRecord) => boolean,
    deadline: number,
    timeoutMs: number,
    what: string,
  ): Promise<FcgiRecord> {
    for (;;) {
      const idx = this.queue.findIndex(match);
      if (idx >= 0) return this.queue.splice(idx, 1)[0]!;
      if (this.closed) {
        const why = this.error ? ` (${this.error.message})` : '';
        throw new Error(`FcgiConnection: connection closed by peer${why} while waiting for ${what}`);
      }
      const changed = await this.waitChange(deadline);
      if (!changed && Date.now() >= deadline) {
        // one last look in case of a race with the timer
        const late = this.queue.findIndex(match);
        if (late >= 0) return this.queue.splice(late, 1)[0]!;
        throw new Error(`FcgiConnection: timed out after ${timeoutMs} ms waiting for ${what}`);
      }
    }
  }

  /** Next record of any type/request id. Rejects on timeout or if the peer closed. */
  readRecord(timeoutMs = 5000): Promise<FcgiRecord> {
    return this.take(() => true, Date.now() + timeoutMs, timeoutMs, 'a record');
  }

  /**
   * Collect STDOUT/STDERR for `requestId` until its END_REQUEST. Records of
   * other request ids stay queued. Rejects (with the partial output in the
   * message) on timeout or when the peer closes first.
   */
  async readUntilEnd(requestId: number, timeoutMs = 10000): Promise<FcgiResult> {
    const deadline = Date.now() + timeoutMs;
    const records: FcgiRecord[] = [];
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    for (;;) {
      let rec: FcgiRecord;
      try {
        rec = await this.take((r) => r.requestId === requestId, deadline, timeoutMs, `END_REQUEST of request ${requestId}`);
      } catch (err) {
        const out = Buffer.concat(stdout);
        const preview = out.subarray(0, 200).toString('latin1');
        const summary = `; received ${records.length} record(s) for it: ${records.map((r) => recordTypeName(r.type)).join(',') || 'none'}; stdout so far (${out.length} bytes): ${JSON.stringify(preview)}; stderr: ${JSON.stringify(Buffer.concat(stderr).toString('latin1').slice(0, 200))}`;
        throw new Error(`${(err as Error).message}${summary}`, { cause: err });
      }
      records.push(rec);
      if (rec.type === FCGI_STDOUT) stdout.push(rec.content);
      else if (rec.type === FCGI_STDERR) stderr.push(rec.content);
      else if (rec.type === FCGI_END_REQUEST) {
        const end = decodeEndRequestBody(rec.content);
        return {
          stdout: Buffer.concat(stdout),
          stderr: Buffer.concat(stderr),
          appStatus: end.appStatus,
          protocolStatus: end.protocolStatus,
          records,
        };
      }
    }
  }

  /** Resolves true when the peer has closed (FIN/RST) within `timeoutMs`, false otherwise. */
  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      const changed = await this.waitChange(deadline);
      if (!changed && Date.now() >= deadline) return this.closed;
    }
    return true;
  }

  /** Graceful close: send FIN, wait (bounded) for the socket to close, then destroy. */
  async close(timeoutMs = 2000): Promise<void> {
    if (this.fullyClosed) return;
    this.socket.end();
    const deadline = Date.now() + timeoutMs;
    while (!this.fullyClosed) {
      const changed = await this.waitChange(deadline);
      if (!changed && Date.now() >= deadline) break;
    }
    this.socket.destroy();
  }

  /** Immediate teardown. */
  destroy(): void {
    this.closed = true;
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------------------
// Convenience request API
// ---------------------------------------------------------------------------

export interface FcgiRequestOptions {
  params: NameValuePairs;
  stdin?: Bytes;
  /** FCGI_DATA stream (FILTER role). Sent when given or when role is FILTER. */
  data?: Bytes;
  role?: number;
  requestId?: number;
  keepConn?: boolean;
  /** Total time for connect + request + response. Default 10000 ms. */
  timeoutMs?: number;
  /** Use an existing connection (it is left open). */
  connection?: FcgiConnection;
  /** Chunk size for PARAMS/STDIN/DATA records. Default 65535. */
  chunkSize?: number;
}

/** The full byte sequence of one request (BEGIN, PARAMS…, STDIN…, [DATA…]). */
export function encodeRequest(opts: Omit<FcgiRequestOptions, 'connection' | 'timeoutMs'>): Buffer {
  const id = opts.requestId ?? 1;
  const role = opts.role ?? FCGI_RESPONDER;
  const parts = [
    encodeBeginRequest(id, role, opts.keepConn ?? false),
    encodeParams(id, opts.params, opts.chunkSize),
    encodeStream(FCGI_STDIN, id, toBuffer(opts.stdin), opts.chunkSize),
  ];
  if (opts.data !== undefined || role === FCGI_FILTER) {
    parts.push(encodeStream(FCGI_DATA, id, toBuffer(opts.data), opts.chunkSize));
  }
  return Buffer.concat(parts);
}

/**
 * Perform one request and collect its response. Opens (and afterwards
 * closes) its own connection unless `connection` is given.
 */
export async function fcgiRequest(target: FcgiTarget, opts: FcgiRequestOptions): Promise<FcgiResult> {
  const timeoutMs = opts.timeoutMs ?? 10000;
  const deadline = Date.now() + timeoutMs;
  const own = opts.connection === undefined;
  const conn = opts.connection ?? (await FcgiConnection.connect(target, timeoutMs));
  try {
    const id = opts.requestId ?? 1;
    void conn.write(encodeRequest(opts));
    return await conn.readUntilEnd(id, Math.max(1, deadline - Date.now()));
  } finally {
    if (own) conn.destroy();
  }
}

// ---------------------------------------------------------------------------
// CGI helpers
// ---------------------------------------------------------------------------

export interface CgiResponse {
  status: number;
  statusText: string;
  /** Lower-cased names; repeated headers become arrays. Includes `status` if sent. */
  headers: Record<string, string | string[]>;
  body: Buffer;
}

/**
 * Split CGI output into headers and body. Accepts CRLF or bare LF line ends.
 * `Status: 404 Not Found` sets the status (default 200 OK).
 * Throws if there is no blank line ending the header block.
 */
export function parseCgiResponse(stdout: Buffer): CgiResponse {
  const crlf = stdout.indexOf('\r\n\r\n');
  const lf = stdout.indexOf('\n\n');
  let headEnd: number;
  let sepLen: number;
  if (crlf >= 0 && (lf < 0 || crlf < lf)) {
    headEnd = crlf;
    sepLen = 4;
  } else if (lf >= 0) {
    headEnd = lf;
    sepLen = 2;
  } else if (stdout.subarray(0, 2).toString('latin1') === '\r\n') {
    headEnd = 0;
    sepLen = 2;
  } else if (stdout.subarray(0, 1).toString('latin1') === '\n') {
    headEnd = 0;
    sepLen = 1;
  } else {
    throw new Error(
      `parseCgiResponse: no end of headers in ${stdout.length} bytes: ${JSON.stringify(stdout.subarray(0, 200).toString('latin1'))}`,
    );
  }
  const head = stdout.subarray(0, headEnd).toString('latin1');
  const body = stdout.subarray(headEnd + sepLen);
  const headers: Record<string, string | string[]> = {};
  for (const line of head.split(/\r?\n/)) {
    if (line === '') continue;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error(`parseCgiResponse: malformed header line ${JSON.stringify(line)}`);
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const prev = headers[name];
    if (prev === undefined) headers[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else headers[name] = [prev, value];
  }
  let status = 200;
  let statusText = 'OK';
  const st = headers['status'];
  if (st !== undefined) {
    const s = Array.isArray(st) ? st[0]! : st;
    const m = /^(\d{3})(?:\s+(.*))?$/.exec(s);
    if (!m) throw new Error(`parseCgiResponse: malformed Status header ${JSON.stringify(s)}`);
    status = Number(m[1]);
    statusText = m[2] ?? '';
  }
  return { status, statusText, headers, body };
}

/**
 * A plausible RESPONDER environment. Keys in `overrides` replace defaults; an
 * override of `undefined` removes the key. REQUEST_URI determines
 * SCRIPT_NAME/DOCUMENT_URI/QUERY_STRING unless those are overridden. When
 * `body` is given, CONTENT_LENGTH (and a default CONTENT_TYPE and POST method)
 * are added.
 */
export function defaultParams(
  overrides: Record<string, string | undefined> = {},
  body?: Bytes,
): Record<string, string> {
  const uri = overrides['REQUEST_URI'] ?? '/';
  const q = uri.indexOf('?');
  const path = q >= 0 ? uri.slice(0, q) : uri;
  const query = q >= 0 ? uri.slice(q + 1) : '';
  const p: Record<string, string> = {
    GATEWAY_INTERFACE: 'CGI/1.1',
    SERVER_SOFTWARE: 'libfcgi-test-client/1.0',
    SERVER_PROTOCOL: 'HTTP/1.1',
    SERVER_NAME: 'localhost',
    SERVER_ADDR: '127.0.0.1',
    SERVER_PORT: '80',
    REQUEST_SCHEME: 'http',
    REQUEST_METHOD: body !== undefined ? 'POST' : 'GET',
    REQUEST_URI: uri,
    DOCUMENT_URI: path,
    SCRIPT_NAME: path,
    QUERY_STRING: query,
    DOCUMENT_ROOT: '/var/www',
    REMOTE_ADDR: '127.0.0.1',
    REMOTE_PORT: '54321',
    HTTP_HOST: 'localhost',
    HTTP_USER_AGENT: 'fcgi-test-client',
  };
  if (body !== undefined) {
    p['CONTENT_LENGTH'] = String(toBuffer(body).length);
    p['CONTENT_TYPE'] = 'application/octet-stream';
  }
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) delete p[k];
    else p[k] = v;
  }
  return p;
}
