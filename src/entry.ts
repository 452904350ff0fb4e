// Process entry for the bundle and the single executable (see scripts/build.mjs).
//
// In the SEA build this module, and everything it imports, runs once at *build* time inside
// V8's snapshot builder; the resulting heap is what dist/markroute starts from. So nothing at
// module top level (here or in any src/ module) may read process.env, process.argv, process.pid,
// process.cwd(), the clock, the stdio streams, or open files/sockets: those values would be the
// build machine's, frozen. All of that happens in main(), called from the deserialized main.
import { startupSnapshot } from "node:v8";
import { main } from "./main.js";
import { rehearse } from "./rehearsal.js";

// Resolves once everything already written to `stream` has been handed to the OS.
function flush(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed || !stream.writable) return resolve();
    stream.once("error", () => resolve()); // e.g. EPIPE: the reader went away; nothing to flush to
    stream.write("", () => resolve());
  });
}

async function run(): Promise<void> {
  let code: number;
  try {
    // process.argv is [execPath, script-or-argv0, ...user args] in all three ways we run:
    // `node build/markroute.cjs a b`, `tsx src/entry.ts a b`, and the SEA `dist/markroute a b`
    // (there: [absolute execPath, argv0 as invoked, "a", "b"]).
    const result = await main(process.argv.slice(2), process.env);
    code = Number.isInteger(result) ? result : 1;
  } catch (err) {
    process.stderr.write(`markroute: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    code = 1;
  }
  process.exitCode = code;
  await Promise.all([flush(process.stdout), flush(process.stderr)]);
  // Exit even if some handle (timer, watcher) was left open: a CNI runtime waits for us.
  process.exit(code);
}

if (startupSnapshot.isBuildingSnapshot()) {
  // A failed rehearsal rejects, which fails the snapshot build: a broken binary never ships.
  void rehearse();
  startupSnapshot.setDeserializeMainFunction(() => void run());
} else {
  void run();
}
