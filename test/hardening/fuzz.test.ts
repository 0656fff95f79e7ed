// A short, seeded run of the protocol fuzzer (scripts/fuzz.mjs) against both
// targets (the accept loop and createServer, each in a child process): the
// long run is the script itself (see docs/hardening.md).
import { spawn } from 'node:child_process'
import path from 'node:path'

import { describe, expect, it } from 'vitest'

import { assertDistFresh, ROOT } from '../lifecycle/child.js'

interface TargetReport {
  target: string
  alive: boolean
  stats: { records: number; connections: number; strict: number; strictOk: number; loose: number; mutations: Record<string, number> }
  idle: { tasks: number; workers: number; fds: number }
  after: { tasks: number; workers: number; fds: number; threads: number; idleThreads: number; connections: number; running: number; ok: boolean }
}

function runFuzz(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'scripts/fuzz.mjs'), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => { stdout += d })
    child.stderr.on('data', (d) => { stderr += d })
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`fuzz.mjs did not end within ${timeoutMs} ms: ${stdout}\n${stderr}`))
    }, timeoutMs)
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

describe('protocol fuzzer, short run', () => {
  it('14 s of valid and mutated record streams over 24 connections: alive, exact answers, no cross-request data, back to idle', async () => {
    assertDistFresh()
    const seed = '20261121'
    const { code, stdout, stderr } = await runFuzz(['--seed', seed, '--seconds', '14', '--connections', '24', '--settle', '8', '--json'], 90_000)
    const line = stdout.trim().split('\n').at(-1) ?? ''
    let summary: { ok: boolean; failures: string[]; results: TargetReport[] }
    try {
      summary = JSON.parse(line)
    } catch {
      throw new Error(`fuzz.mjs printed no summary (exit ${code}): ${stdout}\n${stderr}`)
    }
    // The failures name the connection to replay: --seed 20261121 --target T --replay N
    expect(summary.failures).toEqual([])
    expect(summary.ok).toBe(true)
    expect(code).toBe(0)
    expect(summary.results.map((r) => r.target)).toEqual(['loop', 'http'])
    for (const r of summary.results) {
      expect(r.alive).toBe(true)
      expect(r.stats.records).toBeGreaterThan(1000)
      expect(r.stats.loose).toBeGreaterThan(50)
      expect(r.stats.strictOk).toBe(r.stats.strict)
      expect(Object.keys(r.stats.mutations).length).toBeGreaterThan(15)
      expect(r.after.ok).toBe(true)
      expect(r.after.fds).toBe(r.idle.fds)
      expect(r.after.tasks - r.after.workers).toBe(r.idle.tasks - r.idle.workers)
      expect(r.after.idleThreads).toBe(r.after.threads)
      expect(r.after.connections).toBe(0)
      expect(r.after.running).toBe(0)
    }
  }, 120_000)
})
