// A small command-line parser shared by the `libfcgi` subcommands: long
// flags (`--name value`, `--name=value`), short flags (`-X POST`, `-XPOST`),
// repeatable flags (collected in order), boolean switches, and positionals.
// Every flag can also come from an environment variable; the command line
// wins. Mistakes throw a UsageError (exit status 2, message for stderr).

export class UsageError extends Error {
  readonly code = 'ERR_LIBFCGI_USAGE'
  constructor(message: string) {
    super(message)
    this.name = 'UsageError'
  }
}

export interface FlagSpec {
  /** Long name without the dashes, e.g. 'listen'. */
  name: string
  /** One-letter alias without the dash, e.g. 'X'. */
  short?: string
  /** true: a switch that takes no value. */
  boolean?: boolean
  /** true: may be given several times; the values are collected. */
  repeat?: boolean
  /** Environment variable read when the flag is not on the command line. */
  env?: string
  /** For --help: the value's placeholder and what the flag does. */
  value?: string
  help: string
}

export interface Parsed {
  /** name -> value: string, true for switches, string[] for repeatable flags. */
  flags: Map<string, string | true | string[]>
  /** Where each flag came from, for messages: '--listen' or 'LIBFCGI_LISTEN'. */
  source: Map<string, string>
  positionals: string[]
}

export function parseArgs(argv: readonly string[], specs: readonly FlagSpec[], env: NodeJS.ProcessEnv = process.env): Parsed {
  const byLong = new Map(specs.map((s) => [s.name, s]))
  const byShort = new Map(specs.filter((s) => s.short).map((s) => [s.short!, s]))
  const flags = new Map<string, string | true | string[]>()
  const source = new Map<string, string>()
  const positionals: string[] = []

  const set = (spec: FlagSpec, value: string | true, from: string): void => {
    if (spec.repeat) {
      const list = (flags.get(spec.name) as string[] | undefined) ?? []
      list.push(value as string)
      flags.set(spec.name, list)
    } else {
      flags.set(spec.name, value)
    }
    source.set(spec.name, from)
  }

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1))
      break
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=')
      const name = arg.slice(2, eq < 0 ? undefined : eq)
      const spec = byLong.get(name)
      if (!spec) throw new UsageError(`unknown option --${name}`)
      if (spec.boolean) {
        if (eq >= 0) throw new UsageError(`--${name} takes no value`)
        set(spec, true, `--${name}`)
        continue
      }
      let value: string | undefined = eq >= 0 ? arg.slice(eq + 1) : argv[++i]
      if (value === undefined) throw new UsageError(`--${name} needs a value (${spec.value ?? 'VALUE'})`)
      set(spec, value, `--${name}`)
      continue
    }
    if (arg.startsWith('-') && arg.length > 1) {
      const letter = arg[1]!
      const spec = byShort.get(letter)
      if (!spec) throw new UsageError(`unknown option -${letter}`)
      if (spec.boolean) {
        if (arg.length > 2) throw new UsageError(`-${letter} takes no value`)
        set(spec, true, `-${letter}`)
        continue
      }
      const value = arg.length > 2 ? arg.slice(2) : argv[++i]
      if (value === undefined) throw new UsageError(`-${letter} needs a value (${spec.value ?? 'VALUE'})`)
      set(spec, value, `-${letter}`)
      continue
    }
    positionals.push(arg)
  }

  for (const spec of specs) {
    if (flags.has(spec.name) || !spec.env) continue
    const value = env[spec.env]
    if (value === undefined || value === '') continue
    if (spec.boolean) {
      if (!/^(1|true|yes|on|0|false|no|off)$/i.test(value)) throw new UsageError(`${spec.env}=${value}: expected 1/0, true/false, yes/no or on/off`)
      if (/^(1|true|yes|on)$/i.test(value)) set(spec, true, spec.env)
    } else {
      set(spec, value, spec.env)
    }
  }
  return { flags, source, positionals }
}

/** The `--help` text of a command's flags, aligned. */
export function flagsHelp(specs: readonly FlagSpec[]): string {
  const left = specs.map((s) => `${s.short ? `-${s.short}, ` : '    '}--${s.name}${s.boolean ? '' : ` ${s.value ?? 'VALUE'}`}`)
  const width = Math.max(...left.map((l) => l.length)) + 2
  return specs
    .map((s, i) => `  ${left[i]!.padEnd(width)}${s.help}${s.env ? ` (env ${s.env})` : ''}`)
    .join('\n')
}

/** "30s", "1500ms", "2m", "1h", or a number of seconds -> milliseconds. */
export function parseDuration(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim())
  if (!m) throw new UsageError(`${what}: "${text}" is not a duration (e.g. 30s, 1500ms, 2m)`)
  const n = Number(m[1])
  const unit = m[2] ?? 's'
  return Math.round(n * (unit === 'ms' ? 1 : unit === 's' ? 1000 : unit === 'm' ? 60000 : 3600000))
}

/** A non-negative integer (or at least `min`). */
export function parseCount(text: string, what: string, min = 0): number {
  if (!/^\d+$/.test(text.trim())) throw new UsageError(`${what}: "${text}" is not a whole number`)
  const n = Number(text)
  if (n < min) throw new UsageError(`${what}: must be at least ${min}`)
  return n
}
