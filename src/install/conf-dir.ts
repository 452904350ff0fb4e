// The CNI conf dir as the container runtime reads it (which file is the network it uses), and
// markroute's entry put into that conflist or taken out of every one. Every write goes through a
// temporary file, fsync and rename (fs/atomic.ts): kubelet and the runtime see the old file or the
// new one. The original of a file markroute changes is kept once, as <file>.markroute-backup.
import { lstatSync, readFileSync, readdirSync, rmSync, statSync, type Stats } from "node:fs";
import { basename, dirname, extname, join } from "node:path";
import { fsyncDir, replaceFile, sweepTemporaries } from "../fs/atomic.js";
import { BINARY_NAME } from "./binary.js";
import { checkedEntry, isObject, type Json } from "./entry.js";

export const DEFAULT_CONF_DIR = "/etc/cni/net.d";
export const BACKUP_SUFFIX = ".markroute-backup";
/** The files libcni's users (containerd, CRI-O, kubelet's dockershim) load from the conf dir. */
export const CONF_EXTENSIONS = [".conf", ".conflist", ".json"];

const CONF_TMP_MARK = ".markroute-tmp-";
const confTmpPid = (name: string) => (name.startsWith(".") && name.includes(CONF_TMP_MARK) ? name.slice(name.lastIndexOf(CONF_TMP_MARK) + CONF_TMP_MARK.length) : undefined);
const message = (err: unknown) => (err as Error).message;
const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;

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

function writeConf(path: string, text: string, mode: number): void {
  replaceFile(path, text, { tmp: join(dirname(path), `.${basename(path)}${CONF_TMP_MARK}${process.pid}`), mode, durable: true });
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

export interface EntryInstalled { path: string; action: "inserted" | "replaced" | "unchanged"; convertedFrom?: string; backup?: string }

/** Inserts (or replaces in place) markroute's entry in the conflist the runtime uses. */
export function installEntry(confDir: string, rawEntry: Json): EntryInstalled {
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
    writeConf(backup, file.text, file.mode);
    backupWritten = true;
  }
  writeConf(target, render(list, file.text), file.mode);
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
 * Takes markroute's entries out of every conflist of the conf dir (new pods stop calling it).
 * `stateDir` is the first entry's, for the uninstall that follows.
 */
export function removeEntries(confDir: string): { conflists: { path: string; action: "removed" | "unchanged" }[]; stateDir?: string } {
  sweepTemporaries(confDir, confTmpPid);
  const conflists: { path: string; action: "removed" | "unchanged" }[] = [];
  let stateDir: string | undefined;
  for (const file of networkFiles(confDir).loaded) {
    const ours = file.list.plugins.filter(isMarkroute);
    if (ours.length === 0) continue;
    stateDir ??= ours.map((p) => p.stateDir).find((d): d is string => typeof d === "string");
    assertRegular(file.path);
    const list = { ...file.list, plugins: file.list.plugins.filter((p) => !isMarkroute(p)) };
    if (list.plugins.length === 0) throw new Error(`${file.path} holds only markroute entries; remove it by hand`);
    writeConf(file.path, render(list, file.text), file.mode);
    conflists.push({ path: file.path, action: "removed" });
  }
  return { conflists, ...(stateDir !== undefined ? { stateDir } : {}) };
}
