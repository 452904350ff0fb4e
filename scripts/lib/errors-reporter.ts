// A vitest reporter for scripts/test.sh: writes the run's unhandled errors (thrown outside any test,
// e.g. by a timer after its test ended) to build/vitest-errors.json. Vitest's JSON report leaves
// them out, yet they fail the run; scripts/lib/summary.mjs counts each one as a failure.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Reporter, TestModule, TestRunEndReason, Vitest } from 'vitest/node';

type RunError = { name?: string; message?: string };

export default class ErrorsReporter implements Reporter {
  private file = 'build/vitest-errors.json';

  onInit(ctx: Vitest): void {
    this.file = resolve(ctx.config.root, this.file);
  }

  onTestRunEnd(_modules: ReadonlyArray<TestModule>, errors: ReadonlyArray<RunError>, reason: TestRunEndReason): void {
    mkdirSync(dirname(this.file), { recursive: true });
    const unhandled = errors.map((e) => `${e.name ?? 'Error'}: ${e.message ?? String(e)}`);
    writeFileSync(this.file, JSON.stringify({ reason, unhandled }));
  }
}
