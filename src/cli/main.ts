#!/usr/bin/env node
// The `libfcgi` command: `libfcgi serve APP` runs an app under a web server,
// `libfcgi request` is a FastCGI client (health checks, scripts).
import { UsageError } from './args.js'

const USAGE = `usage: libfcgi <command> [options]

commands:
  serve APP      run a Node app (node:http listener, Express, or an object with fetch) as a FastCGI server
  request PATH   send one FastCGI request to a server and print the response (like cgi-fcgi)

libfcgi <command> --help shows the command's options.`

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  switch (command) {
    case 'serve':
      return (await import('./serve.js')).main(rest)
    case 'request':
      return (await import('./request.js')).main(rest)
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(`${USAGE}\n`)
      return command === undefined ? 2 : 0
    case '-v':
    case '--version': {
      const { createRequire } = await import('node:module')
      const pkg = createRequire(import.meta.url)('../package.json') as { version: string }
      process.stdout.write(`${pkg.version}\n`)
      return 0
    }
    default:
      throw new UsageError(`unknown command "${command}"`)
  }
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code },
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`libfcgi: ${err.message}\n(libfcgi --help for usage)\n`)
      process.exitCode = 2
      return
    }
    process.stderr.write(`libfcgi: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
    process.exitCode = 1
  },
)
