// Global setup: the suite writes no file outside its temp dirs. markroute's defaults on the host
// (where a netconf without stateDir or logFile would write) must not appear during a run.
import { existsSync } from 'node:fs';

const HOST_DEFAULTS = ['/var/log/markroute.log', '/var/lib/cni/markroute'];

export default function setup(): () => void {
  const there = HOST_DEFAULTS.filter((p) => existsSync(p));
  return () => {
    const made = HOST_DEFAULTS.filter((p) => existsSync(p) && !there.includes(p));
    if (made.length) throw new Error(`the suite wrote outside its temp dirs: ${made.join(', ')} (a netconf without stateDir/logFile reached the binary)`);
  };
}
