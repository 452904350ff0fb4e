// Helpers shared by the unit suites (not a suite itself: vitest only collects *.test.ts).
import { expect } from 'vitest';
import { CniError } from '../../src/cni/errors.ts';

/** The CniError fn throws, for asserting its code and message; fails if fn throws anything else or nothing. */
export function cniError(fn: () => unknown): CniError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CniError);
    return err as CniError;
  }
  throw new Error('no error thrown');
}
