import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/host-untouched.ts'],
    // Namespace suites spawn many processes and need root; forks isolate them (and their
    // process.pid names their lab namespaces). Two cores here, so at most two files at once.
    pool: 'forks',
    poolOptions: { forks: { minForks: 1, maxForks: 2 } },
    testTimeout: 60_000,
    hookTimeout: 60_000,
    teardownTimeout: 30_000,
  },
});
