// Builds dist/markroute: one Node Single Executable Application with a startup snapshot.
//   esbuild (src/entry.ts -> build/markroute.cjs) -> node --experimental-sea-config (blob with
//   snapshot) -> copy of this node, stripped -> postject the blob -> chmod 755. Fully offline.
// The blob is only valid for the exact node binary that made it, so both are process.execPath.
import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

process.chdir(fileURLToPath(new URL("..", import.meta.url)));
const OUT = "dist/markroute";
const BLOB = "build/markroute.blob";

function fail(message) {
  console.error(`build: FAILED: ${message}`);
  process.exit(1);
}

// Runs argv[0] with argv[1..] (no shell); its output is shown only if it fails.
function run(argv, { allowFailure = false } = {}) {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: "utf8" });
  const ok = !r.error && r.status === 0;
  if (!ok && !allowFailure) {
    fail(`${argv.join(" ")}: ${r.error?.message ?? `exit ${r.status ?? r.signal}`}\n${r.stdout ?? ""}${r.stderr ?? ""}`);
  }
  return { ok, missing: r.error?.code === "ENOENT" };
}

function step(name) {
  console.log(`build: ${name}`);
}

mkdirSync("build", { recursive: true });
mkdirSync("dist", { recursive: true });

step("bundle src/entry.ts -> build/markroute.cjs");
await build({
  entryPoints: ["src/entry.ts"],
  outfile: "build/markroute.cjs",
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  minify: true,
  logLevel: "warning",
  // import.meta is empty in CJS: it would silently break at run time, so refuse to build.
  logOverride: { "empty-import-meta": "error" },
}).catch((err) => fail(`esbuild: ${err.message}`));

step("snapshot + SEA blob -> " + BLOB);
writeFileSync(
  "build/sea-config.json",
  JSON.stringify(
    { main: "build/markroute.cjs", output: BLOB, useSnapshot: true, disableExperimentalSEAWarning: true },
    null,
    2,
  ) + "\n",
);
rmSync(BLOB, { force: true });
run([process.execPath, "--experimental-sea-config", "build/sea-config.json"]);

// The executable is made beside its final path and renamed into place: whoever runs dist/markroute
// meanwhile (a test, a runtime) gets the old one or the new one, never a node without its blob.
const TMP = `${OUT}.${process.pid}.tmp`;
step(`copy ${process.execPath} -> ${TMP}`);
copyFileSync(process.execPath, TMP);
chmodSync(TMP, 0o755);

const stripped = run(["strip", TMP], { allowFailure: true });
if (stripped.ok && run([TMP, "-e", "0"], { allowFailure: true }).ok) {
  step("stripped");
} else {
  console.warn(`build: warning: ${stripped.missing ? "strip not found" : "strip failed or its output does not run"}; keeping an unstripped node`);
  rmSync(TMP, { force: true });
  copyFileSync(process.execPath, TMP);
}

step("inject blob (postject)");
// (Through its CLI so LIEF's benign "Can't find string offset for section name" warnings stay quiet.)
const postject = fileURLToPath(import.meta.resolve("postject/dist/cli.js"));
run([process.execPath, postject, TMP, "NODE_SEA_BLOB", BLOB,
  "--sentinel-fuse", "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2"]);
chmodSync(TMP, 0o755);
renameSync(TMP, OUT);

step(`done: ${OUT} (${(statSync(OUT).size / 1048576).toFixed(1)} MiB)`);
