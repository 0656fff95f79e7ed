// The single typed description of the addon (native/addon.cc). Every other
// file talks to the native code through this table.
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

declare const serverHandle: unique symbol
declare const slotHandle: unique symbol
/** Opaque handle of a native server (one listening socket). */
export type ServerHandle = { readonly [serverHandle]: true }
/** Opaque handle of a native request slot (an FCGX_Request and its strand). */
export type SlotHandle = { readonly [slotHandle]: true }

export type FdResult = { fd: number } | { errno: number; syscall: string }

/** Completion kinds, as native/server.h's EventKind. */
export const enum EventKind {
  Accept = 1,
  Read = 2,
  Write = 3,
  Finish = 4,
  Abort = 5,
  /** A connection dropped at accept (slot 0; status: libfcgi's FCGX_AcceptError). */
  Dropped = 6,
}

/** Completion status besides 0, errno (> 0) and FCGX_* codes (< 0). */
export const STATUS_CLOSED = -1000
/** EventKind.Dropped: the connection cap was reached (no connection was dropped). */
export const STATUS_MAX_CONNS = -1001

/** Called on the JS thread when completions are waiting: call drain(). */
export type WakeCallback = () => void

/** drain()'s result: six values per completion (EventCallback's arguments). */
export type CompletionBatch = unknown[] & { more: boolean }

/**
 * One completion of a server, as drain() lists it.
 * accept: payload = params as one latin1 string "NAME=value\0NAME=value...",
 *         n1 = role, n2 = requestId + 65536 * keepConn
 * read:   payload = Buffer | undefined, n1 = 1 at end of stream
 */
export type EventCallback = (
  slotId: number,
  kind: EventKind,
  status: number,
  payload: unknown,
  n1: number,
  n2: number,
) => void

export interface NativeServerOptions {
  maxConns: number
  maxReqs: number
  maxThreads: number
  paramsMaxBytes: number
  paramsMaxCount: number
  lingerMs: number
  readTimeoutMs: number
  idleTimeoutMs: number
  allowed: Buffer[]
  /** Shared accept (libfcgi serve's workers): a shareCreate() block the server takes over, and this process's entry. */
  shareFd?: number
  shareIndex?: number
}

export interface NativeStats {
  threads: number
  idleThreads: number
  connections: number
  idleConnections: number
  busyConnections: number
  /** Connections whose request waits for a free slot; after close(), also those accepted and not used yet. */
  pendingConnections: number
  acceptedConnections: number
  refusedConnections: number
  requests: number
  /** Requests whose response was sent whole from the JS thread, with no hop to a worker. */
  inlineFinishes: number
  /** Kept connections closed after idleTimeout with no request. */
  idleTimeouts: number
  /** Requests dropped unread: malformed, params over paramsMaxBytes/paramsMaxCount, or a head not whole within readTimeout. */
  droppedRequests: number
  /** Times the connection cap (maxConns) was reached: accepting paused, new connections waited in the backlog. */
  maxConnsReached: number
  /**
   * Peers that left a request's head (counted in droppedRequests too) or a
   * record of its input unfinished for readTimeout: the connection was closed,
   * a read waiting for input failed with ETIMEDOUT and the request was aborted.
   */
  readTimeouts: number
}

export interface Native {
  listenTcp(host: string, port: number, backlog: number): FdResult
  listenUnix(path: string, backlog: number, mode: number, uid: number, gid: number): FdResult
  /** A user or group name -> its id; -1 when there is no such name. */
  lookupId(kind: 'user' | 'group', name: string): number | { errno: number; syscall: string }
  localName(fd: number): { family: 0 | 1 | 4 | 6; address: string; port: number }
  isListening(fd: number): boolean
  closeFd(fd: number): void
  /** A zeroed block (memfd, close-on-exec) where processes sharing a listen socket publish their connection counts. */
  shareCreate(): FdResult
  /** Zeroes entry `index` of the block (its process is gone). */
  shareClear(fd: number, index: number): boolean
  /** Entries in a share block. */
  shareEntries: number
  serverCreate(fd: number, options: NativeServerOptions, onWake: WakeCallback): ServerHandle | { errno: number; syscall: string }
  /** Takes up to `max` waiting completions. */
  drain(server: ServerHandle, max: number): CompletionBatch
  serverClose(server: ServerHandle): void
  serverDestroy(server: ServerHandle): void
  serverRef(server: ServerHandle, ref: boolean): void
  serverStats(server: ServerHandle): NativeStats
  slotCreate(server: ServerHandle): [SlotHandle, number]
  accept(slot: SlotHandle): void
  /** stream: 0 stdin, 1 data */
  read(slot: SlotHandle, stream: 0 | 1, max: number): void
  /**
   * stream: 1 stdout, 2 stderr. Small writes are copied before this returns;
   * a large stdout write reads the Buffers in place until its completion.
   */
  write(slot: SlotHandle, stream: 1 | 2, chunk: Buffer | Buffer[]): void
  /**
   * stdout bytes, if given, leave with FCGI_END_REQUEST in one write().
   * `now` (no other operation of this request outstanding): a small response
   * may be sent from the calling thread; the result is then the status of the
   * finish, and no Finish completion follows. undefined: it follows.
   */
  finish(slot: SlotHandle, exitStatus: number, stdout?: Buffer | Buffer[], now?: boolean): number | undefined
  /** Ends the request by closing its connection, without FCGI_END_REQUEST. */
  abort(slot: SlotHandle): void
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const load = require('node-gyp-build') as (dir: string) => unknown

// LIBFCGI_ADDON=/path/to/fcgi.node loads that build of the addon instead of
// the one node-gyp-build finds (scripts/test-asan.sh points it at the
// sanitizer build in build-asan/).
const override = process.env.LIBFCGI_ADDON
export const native = (override ? require(path.resolve(override)) : load(root)) as Native
