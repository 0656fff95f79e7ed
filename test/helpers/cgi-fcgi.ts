/**
 * Runs Debian's `cgi-fcgi -bind -connect <conn>` (package libfcgi-bin) as an
 * independent FastCGI client: the environment becomes the PARAMS, stdin
 * becomes FCGI_STDIN, and STDOUT/STDERR records are written to its stdout/stderr.
 *
 * Note: cgi-fcgi only forwards as many stdin bytes as the CONTENT_LENGTH
 * variable says, so pass CONTENT_LENGTH in `env` when sending a body.
 * Its `host:port` parser is IPv4 only.
 */
import { spawn, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export type CgiFcgiTarget = { port: number; host?: string } | { path: string };

export interface RunCgiFcgiOptions {
  /** Exactly the environment given to cgi-fcgi (PATH is added if missing). */
  env: Record<string, string>;
  stdin?: Buffer | string;
  /** Default 10000 ms; the process is SIGKILLed and the promise rejects after it. */
  timeoutMs?: number;
}

export interface CgiFcgiResult {
  /** Exit code (null if killed by a signal). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

/** Path of cgi-fcgi; throws if it is not installed. */
export function cgiFcgiBinary(): string {
  if (existsSync('/usr/bin/cgi-fcgi')) return '/usr/bin/cgi-fcgi';
  try {
    const p = execFileSync('sh', ['-c', 'command -v cgi-fcgi'], { encoding: 'utf8' }).trim();
    if (p) return p;
  } catch {
    // fall through
  }
  throw new Error('cgi-fcgi is not installed (Debian package libfcgi-bin); these tests require it');
}

export function runCgiFcgi(target: CgiFcgiTarget, opts: RunCgiFcgiOptions): Promise<CgiFcgiResult> {
  const bin = cgiFcgiBinary();
  const conn = 'path' in target ? target.path : `${target.host ?? '127.0.0.1'}:${target.port}`;
  const timeoutMs = opts.timeoutMs ?? 10000;
  const env: Record<string, string> = { ...opts.env };
  if (env['PATH'] === undefined) env['PATH'] = process.env['PATH'] ?? '/usr/bin:/bin';

  return new Promise<CgiFcgiResult>((resolve, reject) => {
    const child = spawn(bin, ['-bind', '-connect', conn], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let settled = false;
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      child.kill('SIGKILL');
      reject(
        new Error(
          `cgi-fcgi -connect ${conn} timed out after ${timeoutMs} ms (killed); stdout so far: ${JSON.stringify(
            Buffer.concat(out).subarray(0, 200).toString('latin1'),
          )}; stderr: ${JSON.stringify(Buffer.concat(err).toString('utf8').slice(0, 500))}`,
        ),
      );
    }, timeoutMs);
    child.on('error', (e) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`cannot run cgi-fcgi: ${e.message}`, { cause: e }));
    });
    // 'close' fires after the stdio streams are drained.
    child.on('close', (code, signal) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') });
    });
    // cgi-fcgi may exit before consuming all of stdin (EPIPE) — not an error for us.
    child.stdin.on('error', () => {});
    child.stdin.end(opts.stdin ?? Buffer.alloc(0));
  });
}
