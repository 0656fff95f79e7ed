// 1 GiB up and 1 GiB down through a real nginx (fastcgi_keep_conn on,
// client_max_body_size 0) to a createServer() application running in a child
// process (test/http/fixtures/streaming-app.ts), which reports its RSS every
// 100 ms: the body must stream through the application, not pile up in it.
// The HTTP client streams too (generated chunks up, hashed as they come down).
// scripts/stream-rss.mjs runs the same cases and prints the figures.
import crypto from 'node:crypto'
import http from 'node:http'
import { fileURLToPath } from 'node:url'

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'

import { bundleChild } from '../helpers/bundle.js'
import { type NginxInstance, startNginx, stopAllNginx } from '../helpers/nginx.js'
import { downloadStream, MiB, startStreamingApp, type StreamingApp, uploadStream } from '../helpers/streaming.js'
import { sleep, tmpSocketPath, waitFor, withTimeout } from '../helpers/wait.js'

// 1 GiB each way takes about 3 s on the 2-core test machine (~340 MiB/s).
const SIZE = 1024 * MiB
const RSS_LIMIT = 64 * MiB
const TRANSFER_TIMEOUT = 60_000

let app: StreamingApp
let socketPath: string

beforeAll(async () => {
  const bundle = bundleChild(fileURLToPath(new URL('./fixtures/streaming-app.ts', import.meta.url)))
  socketPath = tmpSocketPath('streaming')
  app = await startStreamingApp(bundle, socketPath)
})

afterEach(async () => {
  await stopAllNginx()
})

afterAll(async () => {
  await app?.stop()
})

async function nginxFor(options: { requestBuffering: boolean; buffering: boolean }): Promise<NginxInstance> {
  return startNginx({
    upstream: { path: socketPath },
    keepConn: true,
    clientMaxBodySize: '0',
    requestBuffering: options.requestBuffering,
    buffering: options.buffering,
    upstreamTimeout: '120s',
    // With buffering on, nginx would spool up to 1 GiB of a response to a
    // temp file when the client lags; keep it to its memory buffers.
    extraLocation: options.buffering ? '            fastcgi_max_temp_file_size 0;' : undefined,
  })
}

/** Runs `transfer` after a warm-up and a gc'd baseline; returns its result and the app's RSS growth. */
async function measured<T>(warmUp: () => Promise<unknown>, transfer: () => Promise<T>): Promise<{ result: T; growth: number; baseline: number }> {
  await warmUp()
  const baseline = await app.baseline()
  const t0 = Date.now()
  const result = await transfer()
  await sleep(250) // the samples of the last moments
  const peak = app.peakSince(t0)
  expect(peak).toBeGreaterThan(0)
  return { result, growth: peak - baseline, baseline }
}

function mib(n: number): string {
  return `${(n / MiB).toFixed(1)} MiB`
}

describe('streaming through nginx, the application in a child process', () => {
  it('1 GiB upload (fastcgi_request_buffering off): read and hashed as it arrives, RSS growth < 64 MiB', { timeout: 90_000 }, async () => {
    const nginx = await nginxFor({ requestBuffering: false, buffering: true })
    const upload = async (size: number) => {
      const r = await uploadStream(`${nginx.url}/upload`, size, TRANSFER_TIMEOUT)
      const seen = await app.next('uploaded', 10_000)
      return { ...r, seen }
    }
    const { result, growth } = await measured(() => upload(32 * MiB), () => upload(SIZE))
    expect(result.status).toBe(200)
    expect(result.answer).toEqual({ bytes: SIZE, sha256: result.sha256 })
    expect(result.seen).toMatchObject({ bytes: SIZE, sha256: result.sha256 })
    expect(growth, `RSS growth ${mib(growth)}`).toBeLessThan(RSS_LIMIT)
    expect(nginx.errorLogProblems()).toEqual([])
  })

  for (const buffering of [false, true]) {
    it(`1 GiB download (fastcgi_buffering ${buffering ? 'on' : 'off'}): written with backpressure, RSS growth < 64 MiB`, { timeout: 90_000 }, async () => {
      const nginx = await nginxFor({ requestBuffering: false, buffering })
      const download = async (size: number) => {
        const r = await downloadStream(`${nginx.url}/download?size=${size}`, TRANSFER_TIMEOUT)
        const sent = await app.next('downloaded', 10_000)
        return { ...r, sent }
      }
      const { result, growth } = await measured(() => download(32 * MiB), () => download(SIZE))
      expect(result.status).toBe(200)
      expect(result.contentLength).toBe(String(SIZE))
      expect(result.bytes).toBe(SIZE)
      expect(result.sent).toMatchObject({ bytes: SIZE, complete: true, sha256: result.sha256 })
      expect(growth, `RSS growth ${mib(growth)}`).toBeLessThan(RSS_LIMIT)
      expect(nginx.errorLogProblems()).toEqual([])
    })
  }

  it('a client that stops reading: the application waits for drain, its memory stays flat, and it finishes when the client reads on', { timeout: 60_000 }, async () => {
    const nginx = await nginxFor({ requestBuffering: false, buffering: false })
    const size = 256 * MiB
    await downloadStream(`${nginx.url}/download?size=${8 * MiB}`, TRANSFER_TIMEOUT)
    await app.next('downloaded', 10_000)
    const baseline = await app.baseline()
    const t0 = Date.now()
    const downloadsBefore = app.messages.filter((m) => m.type === 'downloaded').length

    const hash = crypto.createHash('sha256')
    let bytes = 0
    let res: http.IncomingMessage | undefined
    const done = new Promise<void>((resolve, reject) => {
      const req = http.get(`${nginx.url}/download?size=${size}`, { agent: false }, (r) => {
        res = r
        r.on('data', (c: Buffer) => {
          hash.update(c)
          bytes += c.length
        })
        r.once('end', resolve)
        r.once('error', reject)
      })
      req.once('error', reject)
    })
    done.catch(() => {})
    await waitFor(() => bytes > 0, { what: 'the first bytes of the download' })
    res!.pause()
    await sleep(1500)
    // 256 MiB cannot fit in the socket and nginx buffers: had the app not
    // waited for 'drain', it would have written everything by now.
    const finishedDuringPause = app.messages.filter((m) => m.type === 'downloaded').length > downloadsBefore
    const growthDuringPause = app.peakSince(t0) - baseline
    res!.resume()
    await withTimeout(done, TRANSFER_TIMEOUT, 'the rest of the download')
    const sent = await app.next('downloaded', 10_000)
    expect(finishedDuringPause).toBe(false)
    expect(growthDuringPause, `RSS growth ${mib(growthDuringPause)}`).toBeLessThan(RSS_LIMIT)
    expect(bytes).toBe(size)
    expect(sent).toMatchObject({ bytes: size, complete: true, sha256: hash.digest('hex') })
    expect(nginx.errorLogProblems()).toEqual([])
  })
})
