/**
 * What the offline CLI infers from a CSV without a site file: each column's kind (from its
 * values and common SCADA tag prefixes), a bundled site whose points are all present, and
 * state/flow pairs (`S_x` with `F_x`) as pump-state-versus-flow relations.
 */
import type { CsvTable } from "./csv";
import type { SignalKind } from "./kinds";
import type { SignalSpec } from "./signal-detectors";
import { parseSite, sitePoints, type SiteConfig } from "./site";
import { BUNDLED_SITES } from "./sites/index";

const PREFIX: [RegExp, SignalKind][] = [
  [/^(L|LT|LVL|LEVEL)[_-]/i, "level"],
  [/^(F|FT|FLOW|Q)[_-]/i, "flow"],
  [/^(P|PT|PRESS|PRESSURE)[_-]/i, "pressure"],
  [/^(S|ST|STATUS|STATE)[_-]/i, "state"],
  [/(kwh|energy|counter|totali[sz]er)/i, "energy_counter"],
];

function isBinary(vals: Float64Array): boolean {
  let any = false;
  for (const v of vals) {
    if (Number.isNaN(v)) continue;
    if (v !== 0 && v !== 1) return false;
    any = true;
  }
  return any;
}

function nonDecreasing(vals: Float64Array): boolean {
  let prev = Number.NEGATIVE_INFINITY;
  for (const v of vals) {
    if (Number.isNaN(v)) continue;
    if (v < prev) return false;
    prev = v;
  }
  return true;
}

/** Kind and range per column, from the learning history when given (else the input). */
export function inferSignals(table: CsvTable, history?: CsvTable): Record<string, SignalSpec> {
  const out: Record<string, SignalSpec> = {};
  table.columns.forEach((name, c) => {
    const h = history?.columns.indexOf(name) ?? -1;
    const vals = h >= 0 && history ? history.values[h]! : table.values[c]!;
    let kind: SignalKind = "generic";
    for (const [re, k] of PREFIX) if (re.test(name)) kind = k;
    const binary = isBinary(vals);
    if (kind === "state" && !binary) kind = "generic";
    if (kind === "energy_counter" && !nonDecreasing(vals)) kind = "generic";
    if (kind === "generic" && binary) kind = "state";
    out[name] = kind === "state" ? { kind, range: { min: 0, max: 1 } } : { kind };
  });
  return out;
}

/** A bundled site every one of whose points is a column, plus S_x/F_x pairs not already covered. */
export function inferSite(columns: readonly string[]): { site: SiteConfig | undefined; source: string } {
  const cols = new Set(columns);
  for (const [name, text] of Object.entries(BUNDLED_SITES)) {
    const site = parseSite(text, `bundled site ${name}`);
    if ([...sitePoints(site)].every((p) => cols.has(p))) return { site, source: `bundled site ${name}` };
  }
  const relations: SiteConfig["relations"] = [];
  for (const c of columns) {
    const m = /^(S|STATUS|STATE)_(.+)$/i.exec(c);
    if (!m) continue;
    const flow = columns.find((x) => new RegExp(`^(F|FLOW)_${m[2]!.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`, "i").test(x));
    if (flow) relations.push({ target: flow, states: [c], description: `${flow} against ${c}` });
  }
  if (relations.length === 0) return { site: undefined, source: "none" };
  return {
    site: { name: "inferred", utc_offset_min: 0, tanks: {}, relations, meters: [], power: [] },
    source: `inferred: ${relations.length} state/flow pairs`,
  };
}
