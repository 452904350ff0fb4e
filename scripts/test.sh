#!/usr/bin/env bash
# Installs what the suites need, builds dist/markroute and runs every suite. Needs root: the
# suites build network namespaces (never touching the root namespace's network).
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "scripts/test.sh: run as root (the tests create network namespaces)" >&2; exit 1; }

source scripts/lib/deps.sh
install_debian_packages
install_node_modules

npm run --silent typecheck
npm run --silent build
mkdir -p build
rm -f build/vitest-report.json build/vitest-errors.json
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json=build/vitest-report.json \
  --reporter=./scripts/lib/errors-reporter.ts "$@" || status=$?
# The closing line CI reads, whatever the runner: "N passed, N failed, N skipped". Files that fail to
# load or in setup, unhandled errors and a non-zero exit after the report count as failures.
node scripts/lib/summary.mjs "$status" || { echo "0 passed, 1 failed, 0 skipped"; [ "$status" != 0 ] || status=1; }
exit "$status"
