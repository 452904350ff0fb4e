// CNI error codes (SPEC.md "Error codes"); 100+ are markroute's own.
export const ErrorCode = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnvironment: 4,
  ioFailure: 5,
  decodeFailure: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  pluginNotAvailable: 50,
  limitedConnectivity: 51,
  /** A kernel tool (iptables-restore, ipset, ip) refused a change. */
  kernelOperation: 100,
  /** The state directory or a record in it cannot be used. */
  stateStore: 101,
  /** The node lacks what the plan needs (uplink, default gateway). */
  nodeNotReady: 102,
  /** CHECK found installed objects missing. */
  checkFailed: 103,
  /** A bug: an exception markroute did not expect. The message says where. */
  internal: 110,
} as const;

export class CniError extends Error {
  constructor(
    readonly code: number,
    msg: string,
    readonly details = "",
  ) {
    super(msg);
  }

  toJSON(cniVersion: string): object {
    return { cniVersion, code: this.code, msg: this.message, ...(this.details ? { details: this.details } : {}) };
  }
}
