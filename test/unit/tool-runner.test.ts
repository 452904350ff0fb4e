// The node's tool runner (src/kernel/exec.ts): argv only, a tool's own words back, and a tool that
// hangs killed at the timeout with "try again later" (code 11) instead of holding the lock forever.
import { describe, expect, test } from 'vitest';
import { CniError, ErrorCode } from '../../src/cni/errors.ts';
import { nodeRunner } from '../../src/kernel/exec.ts';

describe('nodeRunner', () => {
  const runner = nodeRunner(300);

  test('runs argv as given and returns status, stdout and stderr', () => {
    expect(runner.run(['printf', '%s|', 'a b', '$(x)'])).toEqual({ status: 0, stdout: 'a b|$(x)|', stderr: '' });
    expect(runner.run(['false']).status).toBe(1);
  });

  test('a tool still running at the timeout is killed: code 11, naming the tool and the time', () => {
    const started = Date.now();
    let err: unknown;
    try {
      runner.run(['sleep', '5']);
    } catch (e) {
      err = e;
    }
    expect(Date.now() - started).toBeLessThan(3000);
    expect(err).toBeInstanceOf(CniError);
    expect((err as CniError).code).toBe(ErrorCode.tryAgainLater);
    expect((err as CniError).message).toBe('sleep 5 did not finish within 0.3 s and was killed; the next operation repairs what it left');
  });

  test('a tool that is not installed: code 50 (plugin not available) naming it', () => {
    expect(() => runner.run(['markroute-no-such-tool'])).toThrow(expect.objectContaining({ code: ErrorCode.pluginNotAvailable, message: 'markroute-no-such-tool is not installed on this node' }));
  });
});
