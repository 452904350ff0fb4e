// The locked bun binary (devDependency `bun`), for the build and the bench.
import { closeSync, existsSync, openSync, readSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const isElf = (path) => {
  try {
    const fd = openSync(path, "r");
    const b = Buffer.alloc(4);
    readSync(fd, b, 0, 4, 0);
    closeSync(fd);
    return b.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
  } catch {
    return false;
  }
};

/**
 * The bun binary of the repository at `root`: { bun, version }, or { error } saying what to do.
 * Its postinstall (node_modules/bun/install.js) moves the platform package's binary over
 * node_modules/bun/bin/bun.exe (a text placeholder until then); with install scripts off it stays
 * in @oven/bun-<platform>/bin/bun. Either is fine; nothing is fetched here when neither is.
 */
export function locateBun(root) {
  const require = createRequire(join(root, "package.json"));
  let pkgDir;
  try {
    pkgDir = dirname(require.resolve("bun/package.json"));
  } catch {
    return { error: "the devDependency `bun` is not installed: run `npm ci`" };
  }
  const version = require("bun/package.json").version;
  const arch = { x64: "x64", arm64: "aarch64" }[process.arch];
  const candidates = [join(pkgDir, "bin/bun.exe")];
  for (const suffix of ["", "-musl"]) {
    try {
      candidates.push(join(dirname(require.resolve(`@oven/bun-${process.platform}-${arch}${suffix}/package.json`)), "bin/bun"));
    } catch { /* not this platform's */ }
  }
  const bun = candidates.find((p) => existsSync(p) && isElf(p));
  if (!bun) return { error: `no bun binary for ${process.platform}-${process.arch} in node_modules (looked at ${candidates.join(", ")}): run \`npm ci\`` };
  return { bun, version };
}
