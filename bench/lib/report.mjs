// The printed table and the JSON file.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { round } from "./stats.mjs";

const pad = (s, n, right = false) => (n === 0 ? String(s) : right ? String(s).padStart(n) : String(s).padEnd(n));
const fmt = (x, d = 1) => (x === undefined || Number.isNaN(x) ? "-" : round(x, d).toFixed(d));
const kpps = (x) => `${fmt(x / 1000, 1)}k`;

function table(title, header, rows, widths) {
  const line = (cells) => cells.map((c, i) => pad(c, widths[i], i > 0)).join("  ");
  return [`${title}`, `  ${line(header)}`, ...rows.map((r) => `  ${line(r)}`)].join("\n");
}

/** Latency rows: [label, summary] with summary {median, p95, min, n}. */
export function latencyTable(title, rows) {
  return table(title, ["", "median", "p95", "min", "n"],
    rows.filter(([, s]) => s).map(([label, s]) => [label, fmt(s.median), fmt(s.p95), fmt(s.min), s.n]), [52, 8, 8, 8, 4]);
}

/**
 * Scaling rows: [label, summary, base summary, in-process summary, tool summary]; "x med" and
 * "x p95" are the row's median and p95 over those of `base` (the same backend with 0 other pods).
 */
export function scaleTable(title, rows) {
  return table(title, ["", "median", "p95", "min", "x med", "x p95", "in-proc", "tool", "n"],
    rows.map(([label, s, base, inProc, tool]) => [label, fmt(s.median), fmt(s.p95), fmt(s.min),
      fmt(s.median / base.median, 3), fmt(s.p95 / base.p95, 3), fmt(inProc?.median), fmt(tool?.median), s.n]),
    [34, 7, 7, 7, 7, 7, 7, 6, 4]);
}

/** Data-path rows: [label, summary, base summary or undefined]; "x" is rx pps over base's. */
export function datapathTable(title, rows) {
  return table(title, ["", "rx pps", "x", "best", "tx pps", "loss %", "fabric", "  runs (rx pps, in order)"],
    rows.map(([label, d, base]) => [label, kpps(d.pps), base ? fmt(d.pps / base.pps, 3) : "", kpps(d.bestPps), kpps(d.sentPps),
      fmt(d.lossPercent, 1), d.viaFabric ? "yes" : "no", `  ${d.runs.map((r) => kpps(r.pps)).join(" ")}`]),
    [34, 7, 6, 7, 7, 6, 6, 0]);
}

export function rssTable(title, rows) {
  return table(title, ["", "max MiB", "median", "n"],
    rows.map(([label, s]) => [label, fmt(s.max / 1024), fmt(s.median / 1024), s.n]), [52, 8, 8, 4]);
}

/** Load rows: [label, load figures of run.mjs load()]; lock waits are the longest single ones. */
export function loadTable(title, rows) {
  return table(title, ["", "ADD wave", "DEL wave", "lock ADD", "lock DEL", "failures"],
    rows.map(([label, l]) => [label, fmt(l.addWallMs, 0), fmt(l.delWallMs, 0), fmt(l.lockWait.ADD?.max), fmt(l.lockWait.DEL?.max), l.failures.length]),
    [34, 9, 9, 9, 9, 9]);
}

/**
 * A check: `value` against `target` with `op` ("<=", ">=" or "="); op undefined is information only.
 * Returns {name, value, target, op, pass}.
 */
export function check(name, value, op, target, unit = "") {
  const pass = op === undefined ? undefined : op === "<=" ? value <= target : op === ">=" ? value >= target : value === target;
  return { name, value, op, target, unit, pass };
}

/** A count that must stay at or under `max` (failures: 0), printed as the integer it is. */
export const countCheck = (name, value, max = 0) => ({ ...check(name, value, "<=", max), count: true });

/** A count that must be exactly `want`. */
export const exactCheck = (name, value, want) => ({ ...check(name, value, "=", want), count: true });

/** A fact that must hold, printed yes / no. */
export const flagCheck = (name, holds) => ({ name, value: holds, op: "=", target: "yes", pass: holds, flag: true });

/**
 * A target shown for information: `value` against `target` with `op`, printed with "met" or "MISS"
 * instead of PASS / FAIL; `pass` stays undefined, so it never decides the exit status.
 */
export function infoCheck(name, value, op, target, unit = "", digits = undefined) {
  const { pass: met } = check(name, value, op, target, unit);
  return { name, value, op, target, unit, info: true, met, ...(digits === undefined ? {} : { digits }) };
}

/** A heading row in the checks table. */
export const heading = (name) => ({ name, heading: true });

export function checksTable(checks) {
  const rows = checks.map((c) => c.heading ? [c.name, "", "", ""] : [
    // Ratios with 3 decimals, so a value just past its target never prints as equal to it.
    c.name, c.flag ? (c.value ? "yes" : "no") : c.count ? String(c.value) : `${fmt(c.value, c.digits ?? (c.unit ? 1 : 3))}${c.unit}`,
    c.op ? `${c.op} ${c.target}${c.unit ?? ""}` : "(info)",
    c.info ? (c.met ? "met" : "MISS") : c.pass === undefined ? "" : c.pass ? "PASS" : "FAIL",
  ]);
  return table("Targets", ["", "measured", "target", ""], rows, [56, 10, 10, 4]).replace(/ +$/gm, "");
}

export function writeJson(path, data) {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(data, (_, v) => (typeof v === "number" ? round(v, 3) : v), 2) + "\n");
}
