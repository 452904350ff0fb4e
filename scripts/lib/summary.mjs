// The closing line of scripts/test.sh, the one CI reads: "N passed, N failed, N skipped".
//   node scripts/lib/summary.mjs <vitest's exit status>
// From build/vitest-report.json (vitest's JSON reporter) and build/vitest-errors.json
// (scripts/lib/errors-reporter.ts). Failed = failed tests
//   + each test file that failed with no failing test in it (it did not load, or a beforeAll/afterAll
//     threw: its tests are reported skipped or passed)
//   + each unhandled error (thrown outside any test; not in vitest's JSON report)
//   + 1 if vitest still exited non-zero (an error after the report: a globalSetup teardown's, a
//     crash, no report at all),
// so a run whose exit status is not 0 never closes with "0 failed". Each extra count is named above
// the line.
import { existsSync, readFileSync } from "node:fs";
import { relative } from "node:path";

const status = Number(process.argv[2] ?? 1);
const read = (file) => (existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : undefined);
const report = read("build/vitest-report.json");
const errors = read("build/vitest-errors.json");

let passed = 0, failed = 0, skipped = 0;
const notes = [];
if (report) {
  passed = report.numPassedTests;
  failed = report.numFailedTests;
  skipped = report.numPendingTests + report.numTodoTests;
  for (const file of report.testResults) {
    if (file.status !== "failed" || file.assertionResults.some((t) => t.status === "failed")) continue;
    failed += 1;
    notes.push(`test file failed outside its tests: ${relative(process.cwd(), file.name)}: ${file.message || "(see above)"}`);
  }
}
for (const e of errors?.unhandled ?? []) {
  failed += 1;
  notes.push(`unhandled error: ${e.split("\n")[0]}`);
}
if (status !== 0 && failed === 0) {
  failed = 1;
  notes.push(
    report
      ? `vitest exited ${status} with no failure in its report: an error outside the test files (e.g. a globalSetup teardown; see above)`
      : `vitest exited ${status} without writing build/vitest-report.json (see above)`,
  );
}
for (const n of notes) console.log(`counted as a failure: ${n}`);
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
