// Small helpers shared by the measuring scripts (bench-core.mjs, soak.mjs):
// flags, bounded waits, a free port, wrk's output, SVG bits.
import net from 'node:net'

/** `--name` flags and `--name value` options of `args`. */
export function options(args) {
  const flag = (name) => args.includes(`--${name}`)
  const optStr = (name, dflt) => {
    const i = args.indexOf(`--${name}`)
    return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt
  }
  const optNum = (name, dflt) => {
    const v = Number(optStr(name, dflt))
    if (!Number.isFinite(v) || v < 0) throw new Error(`--${name} wants a number`)
    return v
  }
  return { flag, optStr, optNum }
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms))
}

/** Resolves once cond() is true (polled every 20 ms); rejects after ms. */
export function waitFor(cond, ms, what) {
  const end = Date.now() + ms
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (cond()) return resolve()
      if (Date.now() > end) return reject(new Error(`timed out waiting for ${what}`))
      setTimeout(tick, 20)
    }
    tick()
  })
}

export function withTimeout(p, ms, what) {
  let t
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms) })]).finally(() => clearTimeout(t))
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer().on('error', reject).listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

const UNITS = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }

/** wrk's summary (run with --latency for p50/p99). */
export function parseWrk(out) {
  const num = (re) => { const m = re.exec(out); return m ? m[1] : undefined }
  const dur = (s) => {
    if (!s) return NaN
    const m = /([\d.]+)(us|ms|s|m)$/.exec(s)
    return m ? Number(m[1]) * { us: 0.001, ms: 1, s: 1000, m: 60000 }[m[2]] : NaN
  }
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)
  const read = /requests in [\d.]+\w+, ([\d.]+)([KMGT]?)B read/.exec(out)
  return {
    rps: Number(num(/Requests\/sec:\s+([\d.]+)/)),
    requests: Number(num(/(\d+) requests in/)),
    bytesRead: read ? Number(read[1]) * UNITS[read[2]] : NaN,
    // Anchored: the "+/- Stdev" column (e.g. "75.50%") must not pass for a percentile.
    meanMs: dur(num(/^\s*Latency\s+([\d.]+(?:us|ms|s|m))\s/m)),
    p50: dur(num(/^\s*50%\s+([\d.]+(?:us|ms|s|m))\s*$/m)),
    p99: dur(num(/^\s*99%\s+([\d.]+(?:us|ms|s|m))\s*$/m)),
    non2xx: Number(num(/Non-2xx or 3xx responses: (\d+)/) ?? 0),
    socketErrors: socketErrors ? socketErrors.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
    socketErrorText: socketErrors ? socketErrors[0] : '',
  }
}

/** Text for SVG/XML. */
export const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')

/** A round axis maximum at or above v (1, 1.2, 1.5, 2, ... x 10^n). */
export function niceMax(v) {
  if (!(v > 0)) return 1
  const p = 10 ** Math.floor(Math.log10(v))
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p
  return 10 * p
}
