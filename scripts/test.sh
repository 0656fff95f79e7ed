#!/usr/bin/env bash
# Runs the test suite from any state of the clone: scripts/setup.sh --test
# first (system packages, npm ci, the addon, dist/ — only what is missing or
# out of date), then vitest. Arguments go to vitest:
#
#   bash scripts/test.sh                         everything
#   bash scripts/test.sh test/unit               one directory
#   bash scripts/test.sh -t 'keep-conn'          tests by name
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=$SECONDS
bash scripts/setup.sh --test
set +e
npx --no vitest run "$@"
rc=$?
set -e
if (( rc == 0 )); then
  echo "test.sh: all tests passed ($(( SECONDS - start )) s)"
else
  echo "test.sh: FAILED (vitest exit code $rc, $(( SECONDS - start )) s)"
fi
exit $rc
