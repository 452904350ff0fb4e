// Process entry of the executable (see scripts/build.mjs): the CNI plugin when CNI_COMMAND is set,
// else the CLI for people. Exits as soon as the answer is out, whatever handles are left open.
import { writeSync } from "node:fs";
import { main } from "./main.js";

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
    // process.argv is [runtime, script or executable, ...user args] however it is run:
    // `dist/markroute a b` (Bun's compiled executable) and `bun src/entry.ts a b` alike.
    const result = await main(process.argv.slice(2), process.env);
    code = Number.isInteger(result) ? result : 1;
  } catch (err) {
    try {
      writeSync(2, `markroute: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    } catch {
      // stderr is gone: the exit status says it
    }
    code = 1;
  }
  process.exitCode = code;
  // A CNI call writes its result with write(2) (src/main.ts) and never opens the streams, which
  // cost start-up to load; people's commands write through them, so they are flushed.
  if (process.env.CNI_COMMAND === undefined) await Promise.all([flush(process.stdout), flush(process.stderr)]);
  // Exit even if some handle (timer, watcher) was left open: a CNI runtime waits for us.
  process.exit(code);
}

void run();
