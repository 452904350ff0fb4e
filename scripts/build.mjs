// Builds dist/markroute: src/entry.ts compiled by Bun into one executable (Bun's runtime + the
// bundle as bytecode):
//   bun build --compile --minify --bytecode --format=cjs --compile-jit-policy=100
//     --no-compile-autoload-dotenv --no-compile-autoload-bunfig src/entry.ts -> dist/markroute
// Why Bun and not a Node single executable: docs/runtime-choice.md (start-up ~30% faster, PSS per
// in-flight ADD 7 MiB against 12.6, measured in one run).
// Fully offline: the bun binary is the locked devDependency `bun` (its platform package,
// @oven/bun-<os>-<arch>, from the npm registry at `npm ci`), and without --target `bun build
// --compile` embeds the very runtime that runs it, so nothing is downloaded. The network is not
// needed; to make sure of that, the build runs with no proxy and an unroutable registry
// (BUN_CONFIG_REGISTRY) and fails if Bun tries. The executable needs what that bun binary needs:
// glibc >= 2.17 (no libstdc++) and, for 1.4.5's linux-x64 package (byte-identical to its -baseline
// one), an x86-64-v2 CPU; Bun's npm install never picks a -baseline build by itself, so check this
// again at every Bun bump (docs/runtime-choice.md).
import { spawnSync } from "node:child_process";
import { locateBun } from "./lib/bun.mjs";
import { createHash } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
process.chdir(ROOT);
const OUT = "dist/markroute";

function fail(message) {
  console.error(`build: FAILED: ${message}`);
  process.exit(1);
}
const step = (name) => console.log(`build: ${name}`);

const located = locateBun(ROOT);
if (located.error) fail(located.error);
const { bun, version } = located;
// Offline: no proxy, and any registry or download Bun might attempt goes to a closed port.
const env = {
  PATH: process.env.PATH ?? "/usr/bin:/bin",
  HOME: process.env.HOME ?? "/root",
  BUN_CONFIG_REGISTRY: "http://127.0.0.1:9/",
  NPM_CONFIG_REGISTRY: "http://127.0.0.1:9/",
  DO_NOT_TRACK: "1",
};
const r0 = spawnSync(bun, ["--version"], { encoding: "utf8", env });
if (r0.status !== 0) {
  fail(`${bun} --version: ${r0.error?.message ?? `exit ${r0.status ?? r0.signal}`} ${r0.stderr ?? ""}` +
    (r0.signal === "SIGILL" ? " (illegal instruction: this CPU lacks AVX2? Bun's -baseline build is needed)" : ""));
}
if (r0.stdout.trim() !== version) fail(`${bun} says ${r0.stdout.trim()}, the locked package is ${version}`);
step(`bun ${version} (${bun})`);

mkdirSync("dist", { recursive: true });
mkdirSync("build", { recursive: true });
// Made in a directory of its own under build/, then renamed into place: whoever runs
// dist/markroute meanwhile gets a whole one. The file name is the final one because Bun embeds
// it (the module's path, /$bunfs/root/<name>): a temporary name would change the bytes and the
// stack traces. With the same inputs the output is byte-identical from one build to the next.
const TMPDIR = `build/bun-${process.pid}`;
rmSync(TMPDIR, { recursive: true, force: true });
mkdirSync(TMPDIR, { recursive: true });
const TMP = join(TMPDIR, "markroute");
// Bun's executables read `.env` and `bunfig.toml` from the current directory by default: a
// bunfig.toml `[run] preload = ["./x.js"]` in whatever directory an operator (root) runs
// `markroute status` from, or the runtime starts the plugin in, would run x.js inside markroute as
// root, and a `.env` would set its environment (CNI_COMMAND included). Both are turned off here
// (tsconfig.json and package.json are off by default). The environment itself is the runtime's, as
// for Node: BUN_OPTIONS works like NODE_OPTIONS (keep both out of the runtime's environment).
// --compile-jit-policy=100: JavaScriptCore tiers code up to its JITs 100 times later than by default.
// A CNI call lives ~20 ms and runs most of its code once: compiling it (on JIT threads, but on the
// same 2 cores as 200 pods starting) cost ~5 ms of CPU per call and returned nothing (issue 13,
// measured: VERSION's CPU 21 -> 13 ms; ADD/DEL wall -3..8 ms, also with 1000 pods attached).
const argv = ["build", "--compile", "--minify", "--bytecode", "--format=cjs", "--compile-jit-policy=100",
  "--no-compile-autoload-dotenv", "--no-compile-autoload-bunfig", "src/entry.ts", "--outfile", TMP];
step(`bun ${argv.join(" ")}`);
const r = spawnSync(bun, argv, { encoding: "utf8", env, maxBuffer: 64 * 1024 * 1024 });
if (r.status !== 0) {
  rmSync(TMPDIR, { recursive: true, force: true });
  fail(`bun build: ${r.error?.message ?? `exit ${r.status ?? r.signal}`}\n${r.stdout}${r.stderr}`);
}
chmodSync(TMP, 0o755);

// It must start and answer VERSION: a binary that cannot never replaces the last good one.
const v = spawnSync(TMP, [], { input: JSON.stringify({ cniVersion: "1.0.0" }), encoding: "utf8", env: { PATH: env.PATH, CNI_COMMAND: "VERSION" } });
if (v.status !== 0 || !/"supportedVersions"/.test(v.stdout)) {
  rmSync(TMPDIR, { recursive: true, force: true });
  fail(`the compiled executable does not answer VERSION: exit ${v.status ?? v.signal}\n${v.stdout}${v.stderr}`);
}
// And it must not read a bunfig.toml or .env from the directory it runs in (see above).
const probe = join(TMPDIR, "cwd-probe");
mkdirSync(probe);
writeFileSync(join(probe, "bunfig.toml"), '[run]\npreload = ["./preload.js"]\n');
writeFileSync(join(probe, "preload.js"), 'process.stderr.write("PRELOADED\\n");\n');
writeFileSync(join(probe, ".env"), "CNI_COMMAND=VERSION\n");
const c = spawnSync(join(ROOT, TMP), [], { cwd: probe, input: "{}", encoding: "utf8", env: { PATH: env.PATH } });
if (/PRELOADED/.test(c.stderr) || c.status === 0) {
  rmSync(TMPDIR, { recursive: true, force: true });
  fail(`the compiled executable reads bunfig.toml or .env from its working directory (exit ${c.status}): ${c.stderr.trim().slice(0, 300)}`);
}
renameSync(TMP, OUT);
rmSync(TMPDIR, { recursive: true, force: true });
step(`done: ${OUT} (${(statSync(OUT).size / 1048576).toFixed(1)} MiB, sha256 ${createHash("sha256").update(readFileSync(OUT)).digest("hex")})`);
