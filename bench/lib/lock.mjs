// What the state directory's lock costs an operation: the current lock (flock(2) on
// <stateDir>/lock, src/state/lock.ts: one non-blocking flock(2) through Bun's FFI when nobody holds
// it, a child `flock --wait` only while it is held) against the one it replaced (an abstract Unix
// socket, src/state/lock.ts at OLD_LOCK_COMMIT). Each runs under the runtime that shipped it: the
// current one under the locked bun (as dist/markroute runs it), the old one under node.
// Both are bundled here at bench time with esbuild (CJS, node20, minified) into the bench's own
// temp dir; nothing is written into the tree.
// Each measurement is a fresh node process, as a CNI process would be, that requires one bundle,
// then acquires and releases the lock `perProcess` times, uncontended, on a state directory of
// its own (0700, root's), and checks once that a second acquirer really is kept out.
import { spawnSync } from "node:child_process";
import { locateBun } from "../../scripts/lib/bun.mjs";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { REPO } from "./cni.mjs";
import { runIn } from "./proc.mjs";
import { summarize } from "./stats.mjs";

/** The last commit with the abstract-socket lock (the flock one came with the next commit, 1b929b7). */
export const OLD_LOCK_COMMIT = "948c8f8";
/** The wait markroute gives a holder (src/engine.ts LOCK_TIMEOUT_MS); uncontended, it never runs out. */
const STUCK_MS = 10_000;

export const LOCKS = {
  flock: { label: "flock(2): FFI call, child `flock --wait` only while held (current, under bun)" },
  abstractSocket: { label: `abstract Unix socket (${OLD_LOCK_COMMIT}, under node)` },
};

/** esbuild, loaded when needed: without it (a devDependency) the bench fails with this message, not an import error. */
async function esbuild() {
  try {
    return await import("esbuild");
  } catch (err) {
    throw new Error(`cannot load esbuild (a devDependency: npm ci): ${err.message}`);
  }
}

const bundle = async (entry, outfile) => (await esbuild()).build({
  entryPoints: [entry], outfile, bundle: true, platform: "node", target: "node20", format: "cjs", minify: true,
  logLevel: "warning", logOverride: { "empty-import-meta": "error" },
});

const git = (args) => spawnSync("git", ["-C", REPO, ...args], { encoding: "utf8", maxBuffer: 16 * 1024 * 1024 });

/**
 * Bundles both locks and writes the driver under `dir`. Returns { locks: { key: { bundle, source } },
 * notes }: the old lock is left out, with a note, when git or the commit is not there (a shallow clone).
 */
export async function prepareLocks(dir) {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const locks = {};
  const notes = [];
  const current = join(REPO, "src/state/lock.ts");
  await bundle(current, join(dir, "flock.cjs"));
  const located = locateBun(REPO);
  if (located.error) throw new Error(`lock bench: ${located.error}`);
  locks.flock = { runtime: located.bun, bundle: join(dir, "flock.cjs"), source: { path: "src/state/lock.ts (working tree)", sha256: sha256(readFileSync(current)) } };

  // The old lock imports ../cni/errors.js and ../net/hash.js: those are taken from the same commit
  // too (the simplest way: the three files sit where the import paths point; both are unchanged
  // since, so this is no different from bundling it with the current tree's).
  const files = ["src/state/lock.ts", "src/cni/errors.ts", "src/net/hash.ts"];
  const found = git(["cat-file", "-e", `${OLD_LOCK_COMMIT}^{commit}`]);
  if (found.error || found.status !== 0) {
    notes.push(`the abstract-socket lock (${OLD_LOCK_COMMIT}) was not measured: ${found.error ? `git: ${found.error.message}` : `commit ${OLD_LOCK_COMMIT} is not in this clone (shallow?)`}`);
  } else {
    const root = join(dir, OLD_LOCK_COMMIT);
    for (const f of files) {
      const r = git(["show", `${OLD_LOCK_COMMIT}:${f}`]);
      if (r.status !== 0) throw new Error(`git show ${OLD_LOCK_COMMIT}:${f}: ${r.stderr.trim()}`);
      mkdirSync(dirname(join(root, f)), { recursive: true });
      writeFileSync(join(root, f), r.stdout);
    }
    await bundle(join(root, files[0]), join(dir, "abstract-socket.cjs"));
    const sha = git(["rev-parse", `${OLD_LOCK_COMMIT}^{commit}`]).stdout.trim();
    locks.abstractSocket = { runtime: process.execPath, bundle: join(dir, "abstract-socket.cjs"), source: { path: `src/state/lock.ts at ${sha}`, sha256: sha256(readFileSync(join(root, files[0]))) } };
  }

  for (const key of Object.keys(locks)) mkdirSync(join(dir, `state-${key}`), { mode: 0o700 });
  writeFileSync(join(dir, "driver.cjs"), DRIVER);
  return { dir, locks, notes };
}

const sha256 = (buf) => createHash("sha256").update(buf).digest("hex");

// argv: bundle, stateDir, count, stuckMs. Prints one JSON object: per acquisition, the ms to
// acquire, to release, and both; and whether a second acquirer (20 ms wait) got 11 while held.
const DRIVER = `"use strict";
const [bundle, stateDir, count, stuckMs] = process.argv.slice(2);
const { acquireLock } = require(bundle);
(async () => {
  const out = { acquireMs: [], releaseMs: [], totalMs: [] };
  for (let i = 0; i < Number(count); i++) {
    const t0 = performance.now();
    const held = await acquireLock(stateDir, Number(stuckMs));
    const t1 = performance.now();
    await held.release();
    const t2 = performance.now();
    out.acquireMs.push(t1 - t0);
    out.releaseMs.push(t2 - t1);
    out.totalMs.push(t2 - t0);
  }
  const held = await acquireLock(stateDir, Number(stuckMs));
  try { await (await acquireLock(stateDir, 20)).release(); out.excludes = false; }
  catch (err) { out.excludes = err.code === 11; }
  await held.release();
  process.stdout.write(JSON.stringify(out));
})().catch((err) => { process.stderr.write(String(err.stack || err)); process.exit(1); });
`;

/** One fresh node process in namespace `ns` acquiring and releasing lock `key` `count` times. */
export function lockProcess(prep, ns, key, count) {
  const r = runIn(ns, [prep.locks[key].runtime, join(prep.dir, "driver.cjs"), prep.locks[key].bundle, join(prep.dir, `state-${key}`), String(count), String(STUCK_MS)]);
  return { ...JSON.parse(r.stdout), processMs: r.ms };
}

/** The figures of one lock over its processes (in the order they ran). */
export function lockSummary(prep, key, runs) {
  const all = (k) => runs.flatMap((r) => r[k]);
  return {
    label: LOCKS[key].label, source: prep.locks[key].source,
    processes: runs.length, perProcess: runs[0]?.totalMs.length,
    // Per acquisition, acquire + release (every acquisition of every process).
    perAcquisition: summarize(all("totalMs")),
    acquire: summarize(all("acquireMs")),
    release: summarize(all("releaseMs")),
    // A CNI process takes the lock once: its first acquisition pays what is paid once per process.
    firstInProcess: summarize(runs.map((r) => r.totalMs[0])),
    laterInProcess: runs[0]?.totalMs.length > 1 ? summarize(runs.flatMap((r) => r.totalMs.slice(1))) : undefined,
    processMs: summarize(runs.map((r) => r.processMs)),
    excludes: runs.every((r) => r.excludes === true),
    samples: runs.map(({ acquireMs, releaseMs, totalMs, processMs }) => ({ acquireMs, releaseMs, totalMs, processMs })),
  };
}
