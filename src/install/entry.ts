// The markroute entry of a conflist, as `markroute install` takes it (`--entry <json>` or
// `--entry-file <path>`) and as it goes into the conflist the runtime uses.
import { readFileSync } from "node:fs";
import { parseConfig } from "../config.js";
import { BINARY_NAME } from "./binary.js";
import type { NetworkFile } from "./conf-dir.js";

export type Json = Record<string, unknown>;

export const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const message = (err: unknown) => (err as Error).message;

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

/** The entry as it goes into the conflist: `type` first, and valid for the conflist's version and name. */
export function checkedEntry(entry: Json, file: NetworkFile): Json {
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
