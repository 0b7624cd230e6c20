/**
 * What the offline CLI infers from a CSV without a site file: each column's kind (from its values
 * and common SCADA tag names), its resolution and on/off behaviour, state/flow pairs (`S_x` with
 * `F_x`) as pump-state-versus-flow relations, and a meter tree when one counter advances as much
 * as the others together. `gatewarden detect --propose-site` prints it as a site file for the
 * engineer to correct; it is never a bundled site picked by column names.
 */
import { stringify } from "yaml";
import type { CsvTable } from "./csv";
import type { SignalKind } from "./kinds";
import type { SignalSpec } from "./signal-detectors";
import type { SiteConfig } from "./site";

const PREFIX: [RegExp, SignalKind][] = [
  [/^(L|LT|LVL|LEVEL)[_-]/i, "level"],
  [/^(F|FT|FLOW|Q)[_-]/i, "flow"],
  [/^(P|PT|PRESS|PRESSURE)[_-]/i, "pressure"],
  [/^(S|ST|STATUS|STATE)[_-]/i, "state"],
  [/^(V|U)_L\d/i, "voltage"],
  [/^I_L\d/i, "current"],
  [/^(PF|COSPHI)([_-]|$)/i, "power_factor"],
  [/^(KW|W)_|_KW$/i, "power"],
  [/(kwh|energy|counter|totali[sz]er)/i, "energy_counter"],
];

function finite(vals: Float64Array): number[] {
  const out: number[] = [];
  for (const v of vals) if (!Number.isNaN(v)) out.push(v);
  return out;
}

function isBinary(vals: readonly number[]): boolean {
  return vals.length > 0 && vals.every((v) => v === 0 || v === 1);
}

/** Mostly increasing, never by much backwards: a counter (exchanges and resets aside). */
function counterLike(vals: readonly number[]): boolean {
  let up = 0;
  let down = 0;
  for (let i = 1; i < vals.length; i++) {
    if (vals[i]! > vals[i - 1]!) up++;
    else if (vals[i]! < vals[i - 1]!) down++;
  }
  return up > 10 && down <= Math.max(1, up * 0.001);
}

/**
 * The register's resolution: the decimal step every reading is a multiple of (a counter with one
 * decimal: 0.1), but never more than the smallest non-zero step between consecutive readings.
 */
function resolution(vals: readonly number[]): number | undefined {
  let r = Number.POSITIVE_INFINITY;
  for (let i = 1; i < vals.length; i++) {
    const d = Math.abs(vals[i]! - vals[i - 1]!);
    if (d > 0 && d < r) r = d;
  }
  if (!Number.isFinite(r)) return undefined;
  let dec = 0;
  for (const v of vals) {
    while (dec < 9 && Math.abs(v * 10 ** dec - Math.round(v * 10 ** dec)) > 1e-6) dec++;
  }
  return Number(Math.min(r, 10 ** -dec).toPrecision(3));
}

/** Share of readings (or, for a counter, of steps) at rest. */
function idleShare(vals: readonly number[], counter: boolean): number {
  if (vals.length < 2) return 0;
  let idle = 0;
  if (counter) {
    for (let i = 1; i < vals.length; i++) if (vals[i] === vals[i - 1]) idle++;
    return idle / (vals.length - 1);
  }
  const hi = Math.max(...vals.map(Math.abs));
  for (const v of vals) if (Math.abs(v) <= 0.02 * hi) idle++;
  return idle / vals.length;
}

export interface InferredSignal extends SignalSpec {
  resolution?: number | undefined;
  intermittent?: boolean | undefined;
}

/** Kind, resolution and on/off behaviour per column, from the learning history when given (else the input). */
export function inferSignals(table: CsvTable, history?: CsvTable): Record<string, InferredSignal> {
  const out: Record<string, InferredSignal> = {};
  table.columns.forEach((name, c) => {
    const h = history?.columns.indexOf(name) ?? -1;
    const vals = finite(h >= 0 && history ? history.values[h]! : table.values[c]!);
    let kind: SignalKind = "generic";
    for (const [re, k] of PREFIX) if (re.test(name)) kind = k;
    const binary = isBinary(vals);
    if (kind === "state" && !binary) kind = "generic";
    const counter = counterLike(vals);
    if (kind === "energy_counter" && !counter) kind = "generic";
    if (kind === "generic" && binary) kind = "state";
    if (kind === "generic" && counter) kind = "energy_counter";
    if (kind === "state") {
      out[name] = { kind, range: { min: 0, max: 1 } };
      return;
    }
    const spec: InferredSignal = { kind };
    const res = resolution(vals);
    if (res !== undefined && kind === "energy_counter") spec.resolution = res;
    const idle = idleShare(vals, kind === "energy_counter");
    if (kind !== "generic" && idle >= (kind === "energy_counter" ? 0.5 : 0.3)) spec.intermittent = true;
    out[name] = spec;
  });
  return out;
}

/** Increments of a counter column over the table (blank cells skipped). */
function advance(vals: Float64Array): number {
  let total = 0;
  let prev = Number.NaN;
  for (const v of vals) {
    if (Number.isNaN(v)) continue;
    if (!Number.isNaN(prev) && v >= prev) total += v - prev;
    prev = v;
  }
  return total;
}

/**
 * The site inferred from a table: every column's signal, state/flow pairs as relations, and one
 * meter tree when the counter that advanced most advanced within 10 % of all the others together.
 */
export function inferSite(table: CsvTable, history?: CsvTable): SiteConfig {
  const columns = table.columns;
  const signals = inferSignals(table, history);
  const relations: SiteConfig["relations"] = [];
  for (const c of columns) {
    const m = /^(S|STATUS|STATE)_(.+)$/i.exec(c);
    if (!m) continue;
    const flow = columns.find((x) => new RegExp(`^(F|FLOW)_${m[2]!.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`, "i").test(x));
    if (flow) relations.push({ target: flow, states: [c], description: `${flow} against ${c}` });
  }
  const meters: SiteConfig["meters"] = [];
  const src = history ?? table;
  const counters = columns.filter((c) => signals[c]!.kind === "energy_counter" && src.columns.includes(c));
  if (counters.length >= 3) {
    const adv = counters.map((c) => [c, advance(src.values[src.columns.indexOf(c)]!)] as const).sort((a, b) => b[1] - a[1]);
    const [main, top] = adv[0]!;
    const rest = adv.slice(1);
    const sum = rest.reduce((a, [, v]) => a + v, 0);
    if (top > 0 && Math.abs(top - sum) <= 0.1 * top) {
      meters.push({ main, subs: rest.map(([c]) => c), tolerance_pct: 3, tolerance_abs: 0, window_s: 900 });
    }
  }
  const sig: SiteConfig["signals"] = {};
  for (const [id, s] of Object.entries(signals)) {
    sig[id] = { kind: s.kind, intermittent: s.intermittent ?? false, ...(s.range ? { range: s.range } : {}), ...(s.resolution ? { resolution: s.resolution } : {}) };
  }
  return { name: "inferred", utc_offset_min: 0, signals: sig, tanks: {}, relations, meters, power: [] };
}

/** The inferred site as a site file for the engineer to correct. */
export function proposeSiteYaml(site: SiteConfig, source: string): string {
  const plain = {
    name: "proposed",
    description: `inferred from ${source}: check every kind, add units, ranges, tanks, pumps, meters and power relations`,
    signals: Object.fromEntries(Object.entries(site.signals).map(([k, s]) => [k, s.intermittent ? s : (({ intermittent: _i, ...r }) => r)(s)])),
    ...(site.relations.length ? { relations: site.relations } : {}),
    ...(site.meters.length ? { meters: site.meters } : {}),
  };
  return `# Proposed by gatewarden detect --propose-site. Correct it, then pass it with --site.\n${stringify(plain)}`;
}
