// Uncaught exceptions and unhandled rejections during a test, collected so
// that a test can assert there were none (instead of vitest failing the run
// without saying which test caused them).
import { afterEach, beforeEach, expect } from 'vitest'

import { sleep } from './wait.js'

export interface UncaughtTracker {
  /** What was raised so far in the current test. */
  readonly errors: readonly unknown[]
  /** Waits `settleMs` (default: not at all) for late errors, then expects none. */
  expectNone(settleMs?: number): Promise<void>
}

/**
 * Collects the uncaught errors of each test of the calling file: registers a
 * beforeEach that starts listening and an afterEach that stops.
 *
 * vitest runs afterEach hooks in reverse order of registration: call this
 * after registering the file's clean-up afterEach, so that listening stops
 * before the clean-up and errors raised there still reach vitest.
 */
export function trackUncaught(): UncaughtTracker {
  let errors: unknown[] = []
  const onUncaught = (err: unknown): void => { errors.push(err) }

  beforeEach(() => {
    errors = []
    process.on('uncaughtException', onUncaught)
    process.on('unhandledRejection', onUncaught)
  })

  afterEach(() => {
    process.off('uncaughtException', onUncaught)
    process.off('unhandledRejection', onUncaught)
  })

  return {
    get errors() { return errors },
    async expectNone(settleMs = 0) {
      if (settleMs > 0) await sleep(settleMs)
      expect(errors).toEqual([])
    },
  }
}
