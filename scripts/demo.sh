#!/usr/bin/env bash
# The demo: builds what is missing (and installs nginx through apt when it
# can), then runs scripts/demo.mjs: examples/accept-loop.mjs behind nginx,
# a few requests, everything stopped again.
#
#   bash scripts/demo.sh [--no-nginx] [--keep]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --demo
exec node scripts/demo.mjs "$@"
