// Loading the APP module of `libfcgi serve` (in its workers, its --check
// process, and in CGI mode in the command's own process).
import { pathToFileURL } from 'node:url'

import type { IncomingMessage, ServerResponse } from '../http/server.js'
import { fetchListener, type FetchHandler } from '../http/fetch.js'

type Listener = (req: IncomingMessage, res: ServerResponse) => unknown

/** The app module's request listener (a function, e.g. Express) or fetch handler (e.g. Hono). */
export async function loadApp(app: string): Promise<Listener> {
  let mod: unknown
  try {
    mod = await import(pathToFileURL(app).href)
  } catch (err) {
    const e = new Error(`cannot load ${app}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
    throw Object.assign(e, { code: 'ERR_LIBFCGI_APP_LOAD' })
  }
  // ESM default export, CommonJS module.exports (as `default`), or a
  // transpiled module's `exports.default`.
  let candidate = (mod as { default?: unknown }).default ?? mod
  if (candidate && typeof candidate === 'object' && 'default' in candidate && typeof candidate !== 'function') {
    const inner = (candidate as { default: unknown }).default
    if (typeof inner === 'function' || (inner && typeof (inner as { fetch?: unknown }).fetch === 'function')) candidate = inner
  }
  if (typeof candidate === 'function') return candidate as Listener
  if (candidate && typeof (candidate as { fetch?: unknown }).fetch === 'function') {
    const target = candidate as { fetch: FetchHandler }
    return fetchListener((request, context) => target.fetch(request, context))
  }
  const e = new Error(`${app} must export (default or module.exports) a request listener (req, res) => ..., such as an Express app, or an object with a fetch(request) method, such as a Hono app`)
  throw Object.assign(e, { code: 'ERR_LIBFCGI_APP_EXPORT' })
}
