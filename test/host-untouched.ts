// Global setup: the suite writes no file outside its temp dirs. markroute's defaults on the host
// (where a netconf without stateDir or logFile would write) must not appear or change during a run.
import { statSync } from 'node:fs';

const HOST_DEFAULTS = ['/var/log/markroute.log', '/var/lib/cni/markroute'];

/** What a path is now: absent, or its size and modification time (a write changes one of them). */
const stateOf = (path: string): string => {
  try {
    const st = statSync(path);
    return `${st.size}/${st.mtimeMs}`;
  } catch {
    return 'absent';
  }
};

export default function setup(): () => void {
  const before = new Map(HOST_DEFAULTS.map((p) => [p, stateOf(p)]));
  return () => {
    const written = HOST_DEFAULTS.filter((p) => stateOf(p) !== before.get(p));
    if (written.length) throw new Error(`the suite wrote outside its temp dirs: ${written.join(', ')} (a netconf without stateDir/logFile reached the binary)`);
  };
}
