import util from 'node:util'

/** Error codes of this library's own (besides system errors such as EADDRINUSE). */
export type FastCGIErrorCode =
  | 'ERR_FASTCGI_SOCKET_CLOSED'
  | 'ERR_FASTCGI_NOT_FASTCGI'
  | 'ERR_FASTCGI_ACCEPT_PENDING'
  | 'ERR_FASTCGI_REQUEST_NOT_ACTIVE'
  | 'ERR_FASTCGI_REQUEST_ABORTED'
  | 'ERR_FASTCGI_PROTOCOL_ERROR'
  | 'ERR_FASTCGI_PARAMS_ERROR'
  | 'ERR_FASTCGI_UNSUPPORTED_VERSION'
  | 'ERR_FASTCGI_CALL_SEQUENCE'
  | 'ERR_FASTCGI_READ_PENDING'
  | 'ERR_FASTCGI_UNKNOWN_USER'
  | 'ERR_FASTCGI_UNKNOWN_GROUP'
  | 'ERR_FASTCGI_MAX_CONNS'
  | 'ERR_FASTCGI_READ_TIMEOUT'

export class FastCGIError extends Error {
  readonly code: FastCGIErrorCode
  constructor(code: FastCGIErrorCode, message: string) {
    super(message)
    this.name = 'FastCGIError'
    this.code = code
  }
}

export interface SystemError extends Error {
  code: string
  errno: number
  syscall: string
  address?: string
  port?: number
  path?: string
}

/** An Error shaped like Node's own system errors (`code`, `errno`, `syscall`). */
export function systemError(errno: number, syscall: string, extra: { address?: string; port?: number; path?: string } = {}): SystemError {
  const entry = util.getSystemErrorMap().get(-errno)
  const code = entry?.[0] ?? `E${errno}`
  const text = entry?.[1] ?? 'unknown error'
  const where = extra.path ?? (extra.address !== undefined ? `${extra.address}${extra.port !== undefined ? `:${extra.port}` : ''}` : '')
  const err = new Error(`${syscall} ${code}: ${text}${where ? ` ${where}` : ''}`) as SystemError
  err.code = code
  err.errno = -Math.abs(errno)
  err.syscall = syscall
  Object.assign(err, extra)
  return err
}

/** libfcgi's FCGX_* error codes (and our patch's FCGX_REQUEST_ABORTED). */
const FCGX_CODES: Record<number, [FastCGIErrorCode, string]> = {
  [-2]: ['ERR_FASTCGI_UNSUPPORTED_VERSION', 'the web server sent an unsupported FastCGI version'],
  [-3]: ['ERR_FASTCGI_PROTOCOL_ERROR', 'FastCGI protocol error (or the web server closed the connection)'],
  [-4]: ['ERR_FASTCGI_PARAMS_ERROR', 'malformed or oversized FastCGI params'],
  [-5]: ['ERR_FASTCGI_CALL_SEQUENCE', 'FastCGI call out of sequence'],
  [-6]: ['ERR_FASTCGI_REQUEST_ABORTED', 'the web server aborted the request'],
}

/** Turns a native completion status (errno > 0, FCGX_* < 0) into an Error. */
export function statusError(status: number, syscall: string): Error {
  const known = FCGX_CODES[status]
  if (known) return new FastCGIError(known[0], known[1])
  if (status > 0) return systemError(status, syscall)
  return new FastCGIError('ERR_FASTCGI_PROTOCOL_ERROR', `libfcgi error ${status}`)
}
