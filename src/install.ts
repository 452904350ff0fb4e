// Putting markroute on a node and taking it off (`markroute install` / `markroute uninstall`, run by
// the DaemonSet's init container and the uninstall Job in deploy/): the binary into the CNI bin
// directory, its entry into the conflist the container runtime uses. Every write is
// write-fsync-rename, so kubelet and the runtime see the old file or the new one, never half of one.
// Only node:fs here and modules the binary already loads: every pod start loads this code.
import {
  closeSync, constants, fchmodSync, fstatSync, fsyncSync, lstatSync, openSync, readFileSync, readSync, readdirSync,
  renameSync, rmSync, statSync, writeSync, type Stats,
} from "node:fs";
import { basename, dirname, extname, join } from "node:path";
import type { Command } from "commander";
import { DEFAULT_STATE_DIR, parseConfig } from "./config.js";
import { withState, type ChangeSummary } from "./engine.js";

export const BINARY_NAME = "markroute";
export const BACKUP_SUFFIX = ".markroute-backup";
export const DEFAULT_BIN_DIR = "/opt/cni/bin";
export const DEFAULT_CONF_DIR = "/etc/cni/net.d";
/** The files libcni's users (containerd, CRI-O, kubelet's dockershim) load from the conf dir. */
export const CONF_EXTENSIONS = [".conf", ".conflist", ".json"];

const BIN_TMP_PREFIX = `.${BINARY_NAME}.tmp-`;
const CONF_TMP_MARK = ".markroute-tmp-";

type Json = Record<string, unknown>;

export interface InstallOptions {
  binDir: string;
  confDir: string;
  /** The markroute entry of the conflist (`type` is "markroute"; added when missing). */
  entry: Json;
  /** The executable to install; this one by default. */
  source?: string;
}

export interface InstallReport {
  binary: { path: string; action: "installed" | "unchanged" };
  conflist: { path: string; action: "inserted" | "replaced" | "unchanged"; convertedFrom?: string; backup?: string };
}

export interface UninstallOptions {
  binDir: string;
  confDir: string;
  /** Default: the stateDir of the markroute entry found in the conflist, else /var/lib/cni/markroute. */
  stateDir?: string;
}

export interface UninstallReport {
  conflists: { path: string; action: "removed" | "unchanged" }[];
  stateDir: string;
  /** Attachments whose kernel objects were removed. */
  attachments: string[];
  summary?: ChangeSummary;
  binary: { path: string; action: "removed" | "absent" };
}

const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;
const message = (err: unknown) => (err as Error).message;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** The entry from `--entry <json>` or `--entry-file <path>`, as a JSON object. */
export function readEntry(opts: { entry?: string; entryFile?: string }): Json {
  if ((opts.entry === undefined) === (opts.entryFile === undefined)) {
    throw new Error("give the markroute conflist entry with exactly one of --entry <json> and --entry-file <path>");
  }
  let text = opts.entry;
  const where = opts.entryFile ?? "--entry";
  if (opts.entryFile !== undefined) {
    try {
      text = readFileSync(opts.entryFile, "utf8");
    } catch (err) {
      throw new Error(`cannot read the entry file ${opts.entryFile}: ${message(err)}`);
    }
  }
  let entry: unknown;
  try {
    entry = JSON.parse(text!);
  } catch (err) {
    throw new Error(`${where}: not JSON: ${message(err)}`);
  }
  if (!isObject(entry)) throw new Error(`${where}: must be a JSON object (the markroute entry of a conflist's plugins)`);
  return entry;
}

// ---- the conflist ------------------------------------------------------------------------

/** One network configuration file of the conf dir, as the runtime would load it. */
export interface NetworkFile {
  path: string;
  /** The file as found. */
  text: string;
  mode: number;
  /** As a conflist: a single-plugin .conf/.json is converted the way libcni's ConfListFromConf does. */
  list: Json & { plugins: Json[] };
  /** A single-plugin .conf/.json (it must be rewritten as a .conflist to hold a chain). */
  single: boolean;
}

/** Why libcni would skip this file, or the file as a conflist. */
function loadNetworkFile(path: string): NetworkFile | string {
  let text: string;
  let st: Stats;
  try {
    st = statSync(path);
    if (!st.isFile()) return "not a regular file";
    text = readFileSync(path, "utf8");
  } catch (err) {
    return message(err);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return `not JSON (${message(err)})`;
  }
  if (!isObject(parsed)) return "not a JSON object";
  const mode = st.mode & 0o7777;
  if (extname(path) === ".conflist") {
    if (typeof parsed.name !== "string" || parsed.name === "") return "a conflist without a name";
    if (!Array.isArray(parsed.plugins)) return "a conflist without a plugins list";
    if (parsed.plugins.length === 0) return "a conflist with no plugins";
    if (!parsed.plugins.every((p) => isObject(p) && typeof p.type === "string" && p.type !== "")) return "a conflist with a plugin without a type";
    return { path, text, mode, list: parsed as NetworkFile["list"], single: false };
  }
  // A .conf/.json without a type is skipped by the runtimes (it may be a conflist under the wrong name).
  if (typeof parsed.type !== "string" || parsed.type === "") return "a network configuration without a type";
  const { cniVersion, name, ...plugin } = parsed;
  const list: Json = { ...(cniVersion !== undefined ? { cniVersion } : {}), name, plugins: [plugin] };
  return { path, text, mode, list: list as NetworkFile["list"], single: true };
}

/** The files of the conf dir the runtime considers, in the order it does (sorted by name). */
function networkFiles(confDir: string): { loaded: NetworkFile[]; skipped: string[] } {
  let names: string[];
  try {
    names = readdirSync(confDir);
  } catch (err) {
    if (errno(err) === "ENOENT") throw new Error(`CNI conf dir ${confDir} does not exist: is this the node's conf dir (containerd's conf_dir, CRI-O's network_dir)?`);
    throw new Error(`cannot list the CNI conf dir ${confDir}: ${message(err)}`);
  }
  const loaded: NetworkFile[] = [];
  const skipped: string[] = [];
  for (const name of names.filter((n) => CONF_EXTENSIONS.includes(extname(n))).sort()) {
    const file = loadNetworkFile(join(confDir, name));
    if (typeof file === "string") skipped.push(`${name}: ${file}`);
    else loaded.push(file);
  }
  return { loaded, skipped };
}

/**
 * The network configuration the runtime uses: the first file, in lexicographic order, of the
 * conf dir's *.conf, *.conflist and *.json that loads (containerd's go-cni and CRI-O skip the
 * others, and use only the first network by default).
 */
export function findConflist(confDir: string): NetworkFile {
  const { loaded, skipped } = networkFiles(confDir);
  const first = loaded[0];
  if (!first) {
    throw new Error(`no usable CNI network configuration in ${confDir}${skipped.length ? ` (skipped: ${skipped.join("; ")})` : " (no *.conf, *.conflist or *.json)"}: ` +
      "markroute is chained after the node's main plugin; install that first");
  }
  return first;
}

const isMarkroute = (p: Json) => p.type === BINARY_NAME;
const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/**
 * The plugins with `entry` in place: an existing markroute entry is replaced where it stands
 * (further ones dropped), else the entry goes right after the main plugin (the first).
 */
export function withEntry(plugins: Json[], entry: Json): Json[] {
  const at = plugins.findIndex(isMarkroute);
  if (at < 0) return [plugins[0]!, entry, ...plugins.slice(1)];
  return plugins.flatMap((p, i) => (i === at ? [entry] : isMarkroute(p) ? [] : [p]));
}

/** The indentation the file uses (its first indented line's), so a rewrite keeps its look. */
function indentOf(text: string): string | number {
  const m = /\n([ \t]+)\S/.exec(text);
  return m ? m[1]! : 2;
}

const render = (list: Json, like: string) => JSON.stringify(list, null, indentOf(like)) + "\n";

/** The entry as it goes into the conflist: `type` first, and valid for the conflist's version and name. */
function checkedEntry(entry: Json, file: NetworkFile): Json {
  if (entry.type !== undefined && entry.type !== BINARY_NAME) {
    throw new Error(`the entry's type is ${JSON.stringify(entry.type)}; it must be "${BINARY_NAME}"`);
  }
  const { type: _type, ...fields } = entry;
  const full = { type: BINARY_NAME, ...fields };
  try {
    parseConfig({ cniVersion: file.list.cniVersion ?? "1.0.0", name: file.list.name, ...full });
  } catch (err) {
    throw new Error(`the markroute entry is not valid in ${file.path} (network ${String(file.list.name)}, cniVersion ${String(file.list.cniVersion)}): ${message(err)}`);
  }
  return full;
}

// ---- files -------------------------------------------------------------------------------

function fsyncDir(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes `fill`'s output to `tmp`, fsyncs it, renames it over `path` and fsyncs the directory:
 * whoever opens `path` gets the old file or the whole new one. The tmp file never outlives a failure.
 */
function replaceAtomically(path: string, tmp: string, mode: number, fill: (fd: number) => void): void {
  try {
    rmSync(tmp, { force: true });
    const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
    try {
      fill(fd);
      fchmodSync(fd, mode); // the umask must not decide what kubelet may execute
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    fsyncDir(dirname(path));
  } catch (err) {
    try {
      rmSync(tmp, { force: true });
    } catch {
      // what is in the way is named by the error below
    }
    throw new Error(`cannot write ${path}: ${message(err)}`);
  }
}

const confTmp = (path: string) => join(dirname(path), `.${basename(path)}${CONF_TMP_MARK}${process.pid}`);

function writeText(path: string, text: string, mode: number): void {
  replaceAtomically(path, confTmp(path), mode, (fd) => void writeSync(fd, text));
}

/** Refuses to replace a symlink or anything but a regular file (a rename would silently replace the link). */
function assertRegular(path: string): void {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch (err) {
    if (errno(err) === "ENOENT") return;
    throw new Error(`cannot inspect ${path}: ${message(err)}`);
  }
  if (!st.isFile()) throw new Error(`${path} is ${st.isSymbolicLink() ? "a symlink" : "not a regular file"}; markroute edits only regular files, edit it by hand`);
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errno(err) === "EPERM";
  }
};

/** Removes temporary files of installers that died before their rename (never a live one's). */
function sweepTemporaries(dir: string, isOurs: (name: string) => string | undefined): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(isOurs(name));
    if (!Number.isInteger(pid) || pid <= 0 || (pid !== process.pid && alive(pid))) continue;
    try {
      rmSync(join(dir, name), { force: true });
    } catch {
      // best effort: what cannot go fails this run's own write, loudly, if it is in its way
    }
  }
}

const binTmpPid = (name: string) => (name.startsWith(BIN_TMP_PREFIX) ? name.slice(BIN_TMP_PREFIX.length) : undefined);
const confTmpPid = (name: string) => (name.startsWith(".") && name.includes(CONF_TMP_MARK) ? name.slice(name.lastIndexOf(CONF_TMP_MARK) + CONF_TMP_MARK.length) : undefined);

/** Whether two files hold the same bytes (read in chunks: the executable is ~90 MB). */
function sameContent(a: string, b: string): boolean {
  let fa: number | undefined;
  let fb: number | undefined;
  try {
    fa = openSync(a, "r");
    fb = openSync(b, "r");
    if (fstatSync(fa).size !== fstatSync(fb).size) return false;
    const ba = Buffer.allocUnsafe(1 << 20);
    const bb = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const na = readSync(fa, ba, 0, ba.length, null);
      const nb = readSync(fb, bb, 0, bb.length, null);
      if (na !== nb || ba.compare(bb, 0, nb, 0, na) !== 0) return false;
      if (na === 0) return true;
    }
  } catch {
    return false;
  } finally {
    if (fa !== undefined) closeSync(fa);
    if (fb !== undefined) closeSync(fb);
  }
}

/** Copies `source` to `<binDir>/markroute` through `<binDir>/.markroute.tmp-<pid>`, mode 0755. */
export function installBinary(source: string, binDir: string): InstallReport["binary"] {
  const path = join(binDir, BINARY_NAME);
  let dir: Stats;
  try {
    dir = statSync(binDir);
  } catch (err) {
    throw new Error(`CNI bin dir ${binDir} ${errno(err) === "ENOENT" ? "does not exist" : `cannot be used: ${message(err)}`}: is this the node's CNI bin dir (containerd's bin_dir)?`);
  }
  if (!dir.isDirectory()) throw new Error(`CNI bin dir ${binDir} is not a directory`);
  let src: number;
  try {
    src = openSync(source, "r");
  } catch (err) {
    throw new Error(`cannot read the executable to install, ${source}: ${message(err)}`);
  }
  try {
    sweepTemporaries(binDir, binTmpPid);
    const installed = (() => {
      try {
        const st = lstatSync(path);
        return st.isFile() && (st.mode & 0o777) === 0o755;
      } catch {
        return false;
      }
    })();
    if (installed && sameContent(source, path)) return { path, action: "unchanged" };
    const buf = Buffer.allocUnsafe(1 << 20);
    replaceAtomically(path, join(binDir, `${BIN_TMP_PREFIX}${process.pid}`), 0o755, (fd) => {
      let position = 0;
      for (;;) {
        const n = readSync(src, buf, 0, buf.length, position);
        if (n === 0) break;
        for (let off = 0; off < n;) off += writeSync(fd, buf, off, n - off);
        position += n;
      }
    });
    return { path, action: "installed" };
  } finally {
    closeSync(src);
  }
}

/** Inserts (or replaces in place) markroute's entry in the conflist the runtime uses. */
export function installEntry(confDir: string, rawEntry: Json): InstallReport["conflist"] {
  sweepTemporaries(confDir, confTmpPid);
  const file = findConflist(confDir);
  const entry = checkedEntry(rawEntry, file);
  const plugins = withEntry(file.list.plugins, entry);
  if (!file.single && sameJson(plugins, file.list.plugins)) return { path: file.path, action: "unchanged" };
  const action = file.list.plugins.some(isMarkroute) ? "replaced" : "inserted";
  const list = { ...file.list, plugins };
  // A single-plugin file cannot hold a chain: it becomes <name>.conflist, which must then be what the runtime loads.
  const target = file.single ? join(confDir, `${basename(file.path, extname(file.path))}.conflist`) : file.path;
  if (file.single) {
    const others = networkFiles(confDir).loaded.filter((f) => f.path !== file.path);
    const existing = others.find((f) => f.path === target);
    if (existing) throw new Error(`cannot convert ${file.path} to a conflist: ${target} exists already; merge them by hand`);
    const ahead = others.find((f) => basename(f.path) < basename(target));
    if (ahead) throw new Error(`cannot convert ${file.path} to ${target}: ${ahead.path} would then come first and be the network the runtime uses`);
  }
  assertRegular(file.path);
  assertRegular(target);
  const backup = `${file.path}${BACKUP_SUFFIX}`;
  // The backup is the original before markroute's first change: written once, never overwritten.
  let backupWritten = false;
  try {
    lstatSync(backup);
  } catch (err) {
    if (errno(err) !== "ENOENT") throw new Error(`cannot inspect ${backup}: ${message(err)}`);
    writeText(backup, file.text, file.mode);
    backupWritten = true;
  }
  writeText(target, render(list, file.text), file.mode);
  if (file.single) {
    // The runtime now loads the conflist; the single-plugin file would come first: it goes (its backup stays).
    try {
      rmSync(file.path);
      fsyncDir(confDir);
    } catch (err) {
      throw new Error(`wrote ${target} but cannot remove ${file.path}, which the runtime would load instead: ${message(err)}`);
    }
  }
  return {
    path: target, action,
    ...(file.single ? { convertedFrom: file.path } : {}),
    ...(backupWritten ? { backup } : {}),
  };
}

/**
 * Installs the binary, then the conflist entry: kubelet must never find an entry for a binary
 * that is not there. The entry is checked (and the conflist found) before anything changes.
 */
export function install(opts: InstallOptions): InstallReport {
  checkedEntry(opts.entry, findConflist(opts.confDir));
  const binary = installBinary(opts.source ?? process.execPath, opts.binDir);
  const conflist = installEntry(opts.confDir, opts.entry);
  return { binary, conflist };
}

/**
 * Takes markroute off the node: its entry out of every conflist of the conf dir (new pods stop
 * calling it), then every recorded attachment's kernel objects, then the binary. Each step is
 * idempotent; a failure stops before the binary goes, so a retry (or the runtime's DELs) still can.
 */
export async function uninstall(opts: UninstallOptions): Promise<UninstallReport> {
  sweepTemporaries(opts.confDir, confTmpPid);
  const conflists: UninstallReport["conflists"] = [];
  let entryStateDir: string | undefined;
  for (const file of networkFiles(opts.confDir).loaded) {
    const ours = file.list.plugins.filter(isMarkroute);
    if (ours.length === 0) continue;
    entryStateDir ??= ours.map((p) => p.stateDir).find((d): d is string => typeof d === "string");
    assertRegular(file.path);
    const list = { ...file.list, plugins: file.list.plugins.filter((p) => !isMarkroute(p)) };
    if (list.plugins.length === 0) throw new Error(`${file.path} holds only markroute entries; remove it by hand`);
    writeText(file.path, render(list, file.text), file.mode);
    conflists.push({ path: file.path, action: "removed" });
  }

  const stateDir = opts.stateDir ?? entryStateDir ?? DEFAULT_STATE_DIR;
  let attachments: string[] = [];
  let summary: ChangeSummary | undefined;
  let present = true;
  try {
    lstatSync(stateDir);
  } catch (err) {
    if (errno(err) !== "ENOENT") throw new Error(`cannot inspect the state directory ${stateDir}: ${message(err)}`);
    present = false; // never used on this node: nothing recorded, nothing to remove
  }
  if (present) {
    ({ attachments, summary } = await withState(stateDir, (tx) => {
      const ids = tx.records().map((r) => r.id);
      for (const id of ids) tx.remove(id);
      const left = tx.records().map((r) => r.id);
      if (left.length) throw new Error(`attachments still recorded in ${stateDir} after removal: ${left.join(", ")}`);
      return { attachments: ids, summary: tx.summary };
    }));
  }

  const path = join(opts.binDir, BINARY_NAME);
  sweepTemporaries(opts.binDir, binTmpPid);
  let action: UninstallReport["binary"]["action"] = "removed";
  try {
    lstatSync(path);
    rmSync(path);
  } catch (err) {
    if (errno(err) !== "ENOENT") throw new Error(`cannot remove ${path}: ${message(err)}`);
    action = "absent";
  }
  return { conflists, stateDir, attachments, ...(summary ? { summary } : {}), binary: { path, action } };
}

// ---- the CLI ------------------------------------------------------------------------------

/** `markroute install` and `markroute uninstall`, added to the CLI's program. */
export function addInstallCommands(program: Command): void {
  program.command("install")
    .description("put markroute on this node: the binary into the CNI bin dir (write, then rename) and its entry into the conflist the runtime uses, after the main plugin; running it again changes nothing")
    .option("--bin-dir <dir>", "CNI bin dir", DEFAULT_BIN_DIR)
    .option("--conf-dir <dir>", "CNI conf dir", DEFAULT_CONF_DIR)
    .option("--entry <json>", "markroute's conflist entry, as JSON")
    .option("--entry-file <path>", "markroute's conflist entry, in a JSON file")
    .option("--source <file>", "the executable to install (default: this one)")
    .action((opts: { binDir: string; confDir: string; entry?: string; entryFile?: string; source?: string }) => {
      const report = install({ binDir: opts.binDir, confDir: opts.confDir, entry: readEntry(opts), ...(opts.source ? { source: opts.source } : {}) });
      const c = report.conflist;
      console.log([
        `binary ${report.binary.path}: ${report.binary.action}`,
        `conflist ${c.path}: markroute entry ${c.action}${c.convertedFrom ? ` (converted from ${c.convertedFrom})` : ""}`,
        ...(c.backup ? [`backup of the original: ${c.backup}`] : []),
      ].join("\n"));
    });

  program.command("uninstall")
    .description("take markroute off this node: its entry out of the conflists, every recorded attachment's kernel objects (as DEL would), then the binary")
    .option("--bin-dir <dir>", "CNI bin dir", DEFAULT_BIN_DIR)
    .option("--conf-dir <dir>", "CNI conf dir", DEFAULT_CONF_DIR)
    .option("--state-dir <dir>", `state directory (default: the conflist entry's stateDir, else ${DEFAULT_STATE_DIR})`)
    .action(async (opts: { binDir: string; confDir: string; stateDir?: string }) => {
      const report = await uninstall({ binDir: opts.binDir, confDir: opts.confDir, ...(opts.stateDir ? { stateDir: opts.stateDir } : {}) });
      console.log([
        ...(report.conflists.length ? report.conflists.map((c) => `conflist ${c.path}: markroute entry ${c.action}`) : [`conflists in ${opts.confDir}: no markroute entry`]),
        `state ${report.stateDir}: ${report.attachments.length} attachment(s) removed${report.attachments.length ? `: ${report.attachments.join(", ")}` : ""}`,
        ...(report.summary?.removed.length ? [`kernel objects removed: ${report.summary.removed.join(", ")}`] : []),
        ...(report.summary?.recoveryError ? [`warning: healing an earlier operation's leftovers failed: ${report.summary.recoveryError}`] : []),
        `binary ${report.binary.path}: ${report.binary.action}`,
      ].join("\n"));
    });
}
