#!/usr/bin/env bash
# Runs tests against the ASan/UBSan build of the addon (`npm run test:asan`):
# builds it first (scripts/build-asan.sh), then vitest with
#   LIBFCGI_ADDON  pointing at build-asan/build/Release/fcgi.node (src/native.ts)
#   LD_PRELOAD     libasan and libubsan: node itself is not instrumented, and
#                  the ASan runtime must come first in the process
#   ASAN_OPTIONS   detect_leaks=0: LeakSanitizer would report V8's and Node's
#                  own allocations at exit (leaks are checked with valgrind,
#                  scripts/valgrind/run.sh, with a node-only suppression file)
# Every sanitizer report goes to a file under $ASAN_LOG_DIR (log_path), not
# only to stderr, which vitest or a test's child process may swallow. The
# script fails when vitest fails or when any report was written.
#
#   bash scripts/test-asan.sh                       test/native test/integration test/http test/hardening
#   bash scripts/test-asan.sh test/native/abort.test.ts
#   ASAN_SKIP_BUILD=1 bash scripts/test-asan.sh     reuse the existing build
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z ${ASAN_SKIP_BUILD:-} || ! -f build-asan/build/Release/fcgi.node ]]; then
  bash scripts/build-asan.sh || exit 1
fi
# dist/ carries src/native.ts (with the LIBFCGI_ADDON override) for the tests
# that start bundled apps.
if [[ ! -f dist/index.js ]] || [[ -n $(find src tsup.config.ts -newer dist/index.js -print -quit) ]]; then
  npx --no tsup >/dev/null || exit 1
fi

logdir=${ASAN_LOG_DIR:-$(mktemp -d /tmp/libfcgi-asan.XXXXXX)}
mkdir -p "$logdir"
export LIBFCGI_ADDON=$PWD/build-asan/build/Release/fcgi.node
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
# abort_on_error=0/halt_on_error=1: a memory error ends the process with status
# 1 after writing its report. UBSan continues after a report (each is logged).
# quarantine_size_mb=16 (default 256): freed blocks wait in ASan's quarantine
# before reuse, which adds up to the quarantine's size to a process's RSS; the
# streaming tests' "RSS growth < 64 MiB" checks would fail on that alone.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:log_path=$logdir/asan:symbolize=1:quarantine_size_mb=16:allow_user_segv_handler=1"
export UBSAN_OPTIONS="print_stacktrace=1:log_path=$logdir/ubsan"

if (( $# == 0 )); then set -- test/native test/integration test/http test/hardening; fi
echo "test-asan: vitest run $* (sanitizer logs: $logdir)"
npx --no vitest run "$@"
rc=$?
# Reports from other programs the tests start (nginx, apache, ...) inherit
# LD_PRELOAD too; a report names its process in its file name (.PID) and its
# stack: every one is printed and counted.
reports=$(find "$logdir" -type f -size +0 | sort)
if [[ -n $reports ]]; then
  echo "test-asan: sanitizer reports:"
  for f in $reports; do echo "=== $f"; cat "$f"; done
fi
n=$(printf '%s' "$reports" | grep -c . || true)
if (( rc == 0 && n == 0 )); then
  echo "test-asan: clean (vitest passed, no sanitizer report)"
else
  echo "test-asan: FAILED (vitest exit $rc, $n sanitizer report file(s) in $logdir)"
  exit 1
fi
