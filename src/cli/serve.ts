// `libfcgi serve`: work in progress (issue 5).
import { UsageError } from './args.js'

export async function main(_argv: string[]): Promise<number> {
  throw new UsageError('libfcgi serve is not implemented yet')
}
