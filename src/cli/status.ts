// The status page of `libfcgi serve` (PHP-FPM's pm.status_path): JSON by
// default, Prometheus text with `?format=prometheus` (or `?prometheus`).

export interface WorkerStats {
  pid: number
  /** ms since the epoch */
  startedAt: number
  /** requests answered (ended or dropped) */
  requests: number
  /** requests being answered now */
  active: number
  /** the most requests answered at once since the worker started */
  maxActive: number
  /** requests that took at least the slow threshold */
  slow: number
  /** requests the worker serves in parallel at most (--max-conns) */
  slots: number
}

export interface StatusData {
  /** the supervisor's start, ms since the epoch */
  startedAt?: number
  /** worker processes started since the supervisor started (replacements included) */
  startedWorkers?: number
  reloads?: number
  workers: WorkerStats[]
}

export function renderStatus(data: unknown, url: string): { type: string; body: string } {
  const d = data as StatusData
  const workers = d.workers ?? []
  const sum = (f: (w: WorkerStats) => number): number => workers.reduce((n, w) => n + f(w), 0)
  const startedAt = d.startedAt ?? Math.min(...workers.map((w) => w.startedAt))
  const query = url.includes('?') ? url.slice(url.indexOf('?') + 1) : ''
  const params = new URLSearchParams(query)
  if (params.get('format') === 'prometheus' || params.has('prometheus') || params.has('openmetrics')) {
    const lines: string[] = []
    const metric = (name: string, type: string, help: string, samples: Array<[string, number]>): void => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
      for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`)
    }
    const per = (f: (w: WorkerStats) => number): Array<[string, number]> => workers.map((w) => [`{worker="${w.pid}"}`, f(w)])
    metric('libfcgi_start_time_seconds', 'gauge', 'When the server started (unix time).', [['', Math.floor(startedAt / 1000)]])
    metric('libfcgi_workers', 'gauge', 'Worker processes serving.', [['', workers.length]])
    metric('libfcgi_requests_total', 'counter', 'Requests answered, by worker.', per((w) => w.requests))
    metric('libfcgi_active_requests', 'gauge', 'Requests being answered now, by worker.', per((w) => w.active))
    metric('libfcgi_idle_slots', 'gauge', 'Requests a worker could still take at once, by worker.', per((w) => Math.max(0, w.slots - w.active)))
    metric('libfcgi_max_active_requests', 'gauge', 'Most requests answered at once since the worker started, by worker.', per((w) => w.maxActive))
    metric('libfcgi_slow_requests_total', 'counter', 'Requests slower than the slow threshold, by worker.', per((w) => w.slow))
    return { type: 'text/plain; version=0.0.4; charset=utf-8', body: `${lines.join('\n')}\n` }
  }
  const body = {
    startTime: new Date(startedAt).toISOString(),
    startSince: Math.floor((Date.now() - startedAt) / 1000),
    workers: workers.length,
    startedWorkers: d.startedWorkers ?? workers.length,
    reloads: d.reloads ?? 0,
    acceptedRequests: sum((w) => w.requests),
    activeRequests: sum((w) => w.active),
    idleSlots: sum((w) => Math.max(0, w.slots - w.active)),
    maxActiveRequests: sum((w) => w.maxActive),
    slowRequests: sum((w) => w.slow),
    perWorker: workers.map((w) => ({ pid: w.pid, startTime: new Date(w.startedAt).toISOString(), requests: w.requests, active: w.active, idleSlots: Math.max(0, w.slots - w.active), maxActive: w.maxActive, slow: w.slow })),
  }
  return { type: 'application/json', body: `${JSON.stringify(body, null, 2)}\n` }
}
