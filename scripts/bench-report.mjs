// Rendering of scripts/bench-core.mjs's results: markdown tables (printed, and
// docs/benchmarks.md) and a hand-written SVG line chart of req/s by
// concurrency (docs/benchmarks-concurrency.svg). No dependencies.
import { esc, niceMax } from './lib/script-util.mjs'

export const fmt = (x, d = 0) => {
  if (!Number.isFinite(x)) return 'n/a'
  const s = x.toFixed(d)
  // Thousands separators for the big integers (req/s).
  return d === 0 && Math.abs(x) >= 1000 ? s.replace(/\B(?=(\d{3})+(?!\d))/g, ',') : s
}

export const WORKLOAD_TITLES = {
  hello: 'Hello World',
  '64k': '64 KiB response',
  '1m': '1 MiB download',
  echo: '1 MiB POST echoed back',
}

export function cellTitle(cell) {
  const keep = cell.keep ? 'keep_conn on' : 'keep_conn off'
  return `${WORKLOAD_TITLES[cell.workload]}, ${cell.conns} connection${cell.conns === 1 ? '' : 's'}, ${cell.transport === 'tcp' ? 'TCP 127.0.0.1' : 'unix socket'} upstream, ${keep}`
}

/** The table of one cell: one row per peer. */
export function cellTable(result, peers, baseKey) {
  const sized = result.cell.size > 0
  const base = result.rows[baseKey]
  const lines = [
    `| peer | req/s | ratio to ${baseKey === 'c' ? 'C' : baseKey} |${sized ? ' MiB/s |' : ''} p50 ms | p99 ms | app CPU/req (us) | peak RSS MiB | errors |`,
    `| --- | --- | --- |${sized ? ' --- |' : ''} --- | --- | --- | --- | --- |`,
  ]
  for (const p of peers) {
    const r = result.rows[p.key]
    if (!r) continue
    const note = r.note ? ` (${r.note})` : ''
    lines.push(`| ${p.name}${note} | ${fmt(r.rps)} | ${base ? fmt(r.rps / base.rps, 2) : 'n/a'} |${sized ? ` ${fmt(r.mibps, 0)} |` : ''} ${fmt(r.p50, 2)} | ${fmt(r.p99, 2)} | ${fmt(r.cpu, 1)} | ${fmt(r.rss, 1)} | ${r.errors} |`)
  }
  return lines.join('\n')
}

/**
 * The README's headline (Hello World, 32 connections): req/s, ratio to C,
 * app CPU per request and peak RSS per peer. undefined when that cell was
 * not measured.
 */
export function headlineTable(report, peers) {
  const result = report.results.find((r) => r.cell.workload === 'hello' && r.cell.conns === 32 && r.cell.keep && r.cell.transport === 'unix')
  if (!result) return undefined
  const base = result.rows.c
  const lines = ['| peer | req/s | ratio to C | app CPU per request | peak RSS |', '| --- | --- | --- | --- | --- |']
  for (const p of peers) {
    const r = result.rows[p.key]
    if (r) lines.push(`| ${p.name} | ${fmt(r.rps)} | ${base ? fmt(r.rps / base.rps, 2) : 'n/a'} | ${fmt(r.cpu, 1)} us | ${fmt(r.rss, 0)} MiB |`)
  }
  return lines.join('\n')
}

/** req/s and peak RSS by connections, one row per peer. */
export function scalingTable(scaling, peers) {
  const { conns, byPeer } = scaling
  const lines = [
    `| peer | ${conns.map((c) => `req/s @${c}`).join(' | ')} | ${conns.map((c) => `RSS MiB @${c}`).join(' | ')} |`,
    `| --- | ${conns.map(() => '---').join(' | ')} | ${conns.map(() => '---').join(' | ')} |`,
  ]
  for (const p of peers) {
    const row = byPeer[p.key]
    if (!row) continue
    lines.push(`| ${p.name} | ${conns.map((c) => fmt(row[c]?.rps)).join(' | ')} | ${conns.map((c) => fmt(row[c]?.rss, 1)).join(' | ')} |`)
  }
  return lines.join('\n')
}

export function targetsTable(targets) {
  const lines = ['| target | measured | verdict |', '| --- | --- | --- |']
  for (const t of targets) lines.push(`| ${t.name} | ${t.measured} | ${t.met === true ? 'met' : t.met === false ? '**missed**' : 'not measured'} |`)
  return lines.join('\n')
}

export function lateLine(late, lateRun, conns) {
  if (!late) return ''
  return `Event loop of the accept-loop app under ${conns} concurrent Hello World requests (${fmt(lateRun.rps)} req/s): ` +
    `a 1 ms interval timer is late by p50 ${fmt(late.timerLateP50, 2)} ms, p99 ${fmt(late.timerLateP99, 2)} ms, ` +
    `max ${fmt(late.timerLateMax, 2)} ms over ${late.timerSamples} ticks; monitorEventLoopDelay p99 ${fmt(late.loopDelayP99, 2)} ms; ` +
    `native threads ${late.stats.threads}.`
}

/** All the result tables, as printed at the end of a run. */
export function resultsMarkdown(report) {
  const out = []
  for (const r of report.results) {
    out.push(`### ${cellTitle(r.cell)}\n`)
    out.push(cellTable(r, report.peers, report.baseKey))
    if (r.footnote) out.push(`\n${r.footnote}`)
    out.push('')
  }
  if (report.scaling) {
    out.push(`### Scaling: ${WORKLOAD_TITLES.hello} by connections (unix socket, keep_conn on)\n`)
    out.push(scalingTable(report.scaling, report.peers))
    out.push('')
  }
  if (report.late) out.push(`${lateLine(report.late, report.lateRun, report.lateConns)}\n`)
  out.push('### Targets\n')
  out.push("The issue's targets, from this run's medians (Hello World, 32 connections, unix socket, keep_conn on unless stated). A missed target is reported; it does not fail the run.\n")
  out.push(targetsTable(report.targets))
  return out.join('\n')
}


const COLORS = { c: '#333333', loop: '#1f77b4', http: '#2ca02c', 'node-http': '#ff7f0e', 'node-fastcgi': '#d62728' }
const EXTRA_COLORS = ['#9467bd', '#8c564b', '#e377c2', '#17becf']

const short = (v) => (v >= 1e6 ? `${+(v / 1e6).toFixed(1)}M` : v >= 1000 ? `${+(v / 1000).toFixed(1)}k` : `${+v.toFixed(0)}`)

/**
 * A line chart of req/s by connections, one line per peer: the x axis has
 * one evenly spaced tick per concurrency measured, the y axis is linear from 0.
 */
export function concurrencySvg(scaling, peers, title, subtitle = '') {
  const W = 820, H = 470, L = 80, R = 300, T = 66, B = 64
  const pw = W - L - R, ph = H - T - B
  const { conns, byPeer } = scaling
  const shown = peers.filter((p) => byPeer[p.key])
  const max = niceMax(Math.max(...shown.flatMap((p) => conns.map((c) => byPeer[p.key][c]?.rps ?? 0))))
  const x = (i) => L + (conns.length === 1 ? pw / 2 : (i * pw) / (conns.length - 1))
  const y = (v) => T + ph - (v / max) * ph
  const o = []
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="13">`)
  o.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`)
  o.push(`<text x="${L}" y="26" font-size="16" font-weight="bold">${esc(title)}</text>`)
  if (subtitle) o.push(`<text x="${L}" y="46" font-size="12" fill="#555555">${esc(subtitle)}</text>`)
  // Horizontal grid and y labels.
  const ticks = 5
  for (let k = 0; k <= ticks; k++) {
    const v = (max * k) / ticks
    o.push(`<line x1="${L}" y1="${y(v).toFixed(1)}" x2="${L + pw}" y2="${y(v).toFixed(1)}" stroke="${k === 0 ? '#000000' : '#dddddd'}" stroke-width="1"/>`)
    o.push(`<text x="${L - 8}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${short(v)}</text>`)
  }
  o.push(`<line x1="${L}" y1="${T}" x2="${L}" y2="${T + ph}" stroke="#000000" stroke-width="1"/>`)
  conns.forEach((c, i) => {
    o.push(`<line x1="${x(i).toFixed(1)}" y1="${T + ph}" x2="${x(i).toFixed(1)}" y2="${T + ph + 5}" stroke="#000000"/>`)
    o.push(`<text x="${x(i).toFixed(1)}" y="${T + ph + 20}" text-anchor="middle">${c}</text>`)
  })
  o.push(`<text x="${L + pw / 2}" y="${H - 18}" text-anchor="middle">concurrent connections (wrk, through nginx)</text>`)
  o.push(`<text transform="translate(20 ${T + ph / 2}) rotate(-90)" text-anchor="middle">requests per second (median)</text>`)
  // One line per peer, then the legend.
  shown.forEach((p, n) => {
    const color = COLORS[p.key] ?? EXTRA_COLORS[n % EXTRA_COLORS.length]
    const pts = conns.map((c, i) => [i, byPeer[p.key][c]?.rps]).filter(([, v]) => Number.isFinite(v))
    if (pts.length > 1) o.push(`<polyline fill="none" stroke="${color}" stroke-width="2.5" points="${pts.map(([i, v]) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ')}"/>`)
    for (const [i, v] of pts) o.push(`<circle cx="${x(i).toFixed(1)}" cy="${y(v).toFixed(1)}" r="4" fill="${color}"><title>${esc(`${p.name}: ${Math.round(v)} req/s at ${conns[i]} connections`)}</title></circle>`)
    const ly = T + 10 + n * 40
    o.push(`<line x1="${L + pw + 20}" y1="${ly}" x2="${L + pw + 44}" y2="${ly}" stroke="${color}" stroke-width="2.5"/>`)
    o.push(`<circle cx="${L + pw + 32}" cy="${ly}" r="4" fill="${color}"/>`)
    // Wrap the peer's name over two lines at most.
    const words = p.name.split(' ')
    let line1 = ''
    while (words.length && (line1 + ' ' + words[0]).trim().length <= 30) line1 = (line1 + ' ' + words.shift()).trim()
    const line2 = words.join(' ')
    o.push(`<text x="${L + pw + 52}" y="${ly + 4}">${esc(line1)}</text>`)
    if (line2) o.push(`<text x="${L + pw + 52}" y="${ly + 20}" font-size="12" fill="#555555">${esc(line2)}</text>`)
  })
  o.push('</svg>')
  return o.join('\n') + '\n'
}
