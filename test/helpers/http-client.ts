/**
 * A small HTTP/1.1 client for tests that talk to a web server (nginx, Apache)
 * in front of the application: node:http.request with its own connection
 * (no agent), a bounded total time, and everything the client saw.
 */
import http from 'node:http';

export interface HttpResult {
  status: number;
  statusMessage: string;
  /** node:http's merged headers (set-cookie is an array). */
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
  /** True when the response ended normally ('end'), false when the connection broke first. */
  complete: boolean;
  /** The client's own port (what the server sees as REMOTE_PORT). */
  localPort: number | undefined;
}

export interface HttpRequestOptions {
  method?: string;
  headers?: http.OutgoingHttpHeaders;
  body?: Buffer | string;
  /** Local address to connect from (e.g. 127.0.0.2). */
  localAddress?: string;
  /** Total time allowed (default 15000 ms). */
  timeoutMs?: number;
  /** Resolve (complete: false) instead of rejecting when the response breaks off after its head. */
  allowTruncated?: boolean;
}

/** One request on a fresh connection; resolves with what the client saw. */
export function httpRequest(url: string, opts: HttpRequestOptions = {}): Promise<HttpResult> {
  const timeoutMs = opts.timeoutMs ?? 15000;
  return new Promise<HttpResult>((resolve, reject) => {
    let localPort: number | undefined;
    const req = http.request(url, {
      method: opts.method ?? 'GET',
      headers: opts.headers,
      agent: false,
      localAddress: opts.localAddress,
    });
    const timer = setTimeout(() => {
      req.destroy(new Error(`Timed out after ${timeoutMs} ms waiting for ${opts.method ?? 'GET'} ${url}`));
    }, timeoutMs);
    req.once('socket', (s) => {
      s.once('connect', () => {
        localPort = s.localPort;
      });
    });
    req.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      const done = (complete: boolean) => {
        clearTimeout(timer);
        resolve({
          status: res.statusCode ?? 0,
          statusMessage: res.statusMessage ?? '',
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          body: Buffer.concat(chunks),
          complete,
          localPort,
        });
      };
      res.once('end', () => done(true));
      res.once('error', (err) => {
        if (opts.allowTruncated) done(false);
        else {
          clearTimeout(timer);
          reject(err);
        }
      });
      res.once('close', () => {
        if (!res.complete && opts.allowTruncated) done(false);
      });
    });
    if (opts.body !== undefined) req.end(opts.body);
    else req.end();
  });
}
