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
status=0
npx vitest run --reporter=default --reporter=json --outputFile=build/vitest-report.json "$@" || status=$?
# The closing line CI reads, whatever the runner: "N passed, N failed, N skipped".
node -e '
  const r = JSON.parse(require("fs").readFileSync("build/vitest-report.json", "utf8"));
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
' || true
exit "$status"
