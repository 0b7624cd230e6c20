/**
 * What the offline CLI infers from a CSV without a site file: each column's kind (from its values
 * and common SCADA tag names), its resolution and on/off behaviour, state/flow pairs (`S_x` with
 * `F_x`) as pump-state-versus-flow relations, a meter tree when one counter advances as much
 * as the others together, and power relations when a column reads the phases' V x I x PF.
 * `gatewarden detect --propose-site` prints it as a site file for the engineer to correct; it is
 * never a bundled site picked by column names.
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
  [/^(V|U|VOLTS?|VOLTAGE)[_-]?(L?[1-3]|[ABC]|[RST])N?([_-]|$)/i, "voltage"],
  [/^(I|AMPS?|CURR|CURRENT)[_-]?(L?[1-3]|[ABC]|[RST])([_-]|$)/i, "current"],
  [/^(PF|COS_?PHI|POWER_?FACTOR)([_-]|$|L?[1-3]$|[ABC]$)/i, "power_factor"],
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

function neverBackwards(vals: readonly number[]): boolean {
  for (let i = 1; i < vals.length; i++) if (vals[i]! < vals[i - 1]!) return false;
  return vals.length > 1;
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

/**
 * Share of readings at rest; for a counter, share of windows in which it did not move, each window
 * 4 times its median interval between moves: a coarse register on a load that never stops (a
 * shop's whole-kWh meter moving every 5-10 readings) is not idle between its steps, while a street
 * lighting or EV charger counter stands still for hours.
 */
function idleShare(vals: readonly number[], counter: boolean): number {
  if (vals.length < 2) return 0;
  let idle = 0;
  if (counter) {
    const moves: number[] = [];
    for (let i = 1; i < vals.length; i++) if (vals[i] !== vals[i - 1]) moves.push(i);
    if (moves.length < 2) return 1;
    const gaps = moves.slice(1).map((m, k) => m - moves[k]!).sort((a, b) => a - b);
    const span = Math.max(2, 4 * gaps[gaps.length >> 1]!);
    let windows = 0;
    let m = 0;
    for (let a = 1; a + span <= vals.length; a += span, windows++) {
      while (m < moves.length && moves[m]! < a) m++;
      if (m >= moves.length || moves[m]! >= a + span) idle++;
    }
    return windows ? idle / windows : 1;
  }
  const hi = Math.max(...vals.map(Math.abs));
  for (const v of vals) if (Math.abs(v) <= 0.02 * hi) idle++;
  return idle / vals.length;
}

/** Kinds whose register resolution the checks use (counter steps; the rounding of V x A x PF). */
const RESOLVED = new Set<SignalKind>(["energy_counter", "voltage", "current", "power_factor", "power"]);

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
    // A counter its name announces may have stood still all through a short history (an EV
    // charger unused for three days): it stays a counter unless it went backwards.
    if (kind === "energy_counter" && !counter && !neverBackwards(vals)) kind = "generic";
    if (kind === "generic" && binary) kind = "state";
    if (kind === "generic" && counter) kind = "energy_counter";
    if (kind === "state") {
      out[name] = { kind, range: { min: 0, max: 1 } };
      return;
    }
    const spec: InferredSignal = { kind };
    const res = resolution(vals);
    if (res !== undefined && RESOLVED.has(kind)) spec.resolution = res;
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
  const power = inferPower(src, signals, counters);
  const sig: SiteConfig["signals"] = {};
  for (const [id, s] of Object.entries(signals)) {
    sig[id] = { kind: s.kind, intermittent: s.intermittent ?? false, ...(s.range ? { range: s.range } : {}), ...(s.resolution ? { resolution: s.resolution } : {}) };
  }
  return { name: "inferred", utc_offset_min: 0, signals: sig, tanks: {}, relations, meters, power };
}

/** A column's phase: its name without the kind's tag (V_L1, I_L1 and PF_L1 are phase 1; VOLTAGE_A and COSPHI_A phase A). */
function phaseOf(name: string): string {
  return name
    .replace(/^(VOLTAGE|VOLTS?|CURRENT|CURR|AMPS?|POWER_?FACTOR|COS_?PHI|PF|V|U|I)[_-]?/i, "")
    .toUpperCase()
    .replace(/^L(?=[1-3])/, "")
    .replace(/^([1-3ABCRST])N(?=$|[_-])/, "$1");
}

/** Median and median absolute deviation of the finite values. */
function medianMad(xs: number[]): [number, number] {
  const sorted = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (!sorted.length) return [Number.NaN, Number.NaN];
  const med = sorted[sorted.length >> 1]!;
  const dev = sorted.map((x) => Math.abs(x - med)).sort((a, b) => a - b);
  return [med, dev[dev.length >> 1]!];
}

/** A factor within 5 % of a power of ten is that power of ten (0.001 for W to kW); else 3 digits. */
function tidyFactor(f: number): number {
  const ten = 10 ** Math.round(Math.log10(f));
  return Math.abs(f / ten - 1) <= 0.05 ? ten : Number(f.toPrecision(3));
}

/** Relative spread a power column may have around sum(V x I x PF) times its factor to be taken for that power. */
const POWER_MATCH = 0.02;
/** Rows of the learning history a power column's match is judged on (evenly spread). */
const MATCH_ROWS = 20_000;
/** Relative spread of a counter's advance around the summed power for it to be that meter's energy. */
const ENERGY_MATCH = 0.05;

/**
 * Power relations when the voltage, current and power factor columns pair up by phase and a
 * column reads their product times one factor (its median ratio, with half its readings within
 * POWER_MATCH of it): the product summed over the phases (a meter's total active power) or one
 * phase's (per-phase power). The numbers decide, not the power column's name. An energy counter
 * whose advance over 15-minute windows matches the total power summed over the window (within
 * ENERGY_MATCH) is the same meter's energy. The power columns' kind becomes `power`.
 */
function inferPower(t: CsvTable, signals: Record<string, InferredSignal>, counters: readonly string[]): SiteConfig["power"] {
  const col = (c: string): Float64Array => t.values[t.columns.indexOf(c)]!;
  const ofKind = (k: string): string[] => t.columns.filter((c) => signals[c]?.kind === k);
  type Phase = { v: string; i: string; pf?: string };
  const phases: Phase[] = [];
  for (const v of ofKind("voltage")) {
    const i = ofKind("current").find((c) => phaseOf(c) === phaseOf(v));
    if (!i) continue;
    const pf = ofKind("power_factor").find((c) => phaseOf(c) === phaseOf(v));
    phases.push({ v, i, ...(pf ? { pf } : {}) });
  }
  const withPf = phases.filter((p) => p.pf !== undefined);
  const use: Phase[] = withPf.length === phases.length ? phases : phases.map(({ v, i }) => ({ v, i }));
  if (!use.length || use.length > 3) return [];
  const n = t.ts.length;
  const productOf = (ps: readonly Phase[]): Float64Array => {
    const out = new Float64Array(n);
    for (let r = 0; r < n; r++) for (const p of ps) out[r]! += col(p.v)[r]! * col(p.i)[r]! * (p.pf ? col(p.pf)[r]! : 1);
    return out;
  };
  const taken = new Set(use.flatMap((p) => [p.v, p.i, ...(p.pf ? [p.pf] : [])]));
  // Targets: the product summed over the phases, and each phase's own (with more than one phase).
  const targets: Phase[][] = [use, ...(use.length > 1 ? use.map((p) => [p]) : [])];
  const products = targets.map(productOf);
  /** How closely column `c` reads `product` times one factor: [factor, relative spread], or null. */
  const match = (c: string, product: Float64Array): [number, number] | null => {
    const v = col(c);
    const ratios: number[] = [];
    // At most MATCH_ROWS rows, evenly spread (a year at one reading a minute is 525,600).
    const stride = Math.max(1, Math.ceil(n / MATCH_ROWS));
    let rows = 0;
    for (let r = 0; r < n; r += stride, rows++) if (product[r]! > 0 && Number.isFinite(v[r]!)) ratios.push(v[r]! / product[r]!);
    if (ratios.length < Math.max(30, rows / 2)) return null;
    const [med, mad] = medianMad(ratios);
    return med > 0 && mad / med <= POWER_MATCH ? [med, mad / med] : null;
  };
  // Each column goes to the target it reads most closely (on a balanced feeder one phase's power
  // is nearly a share of the total too), and each target to its closest column.
  const chosen = new Map<number, { c: string; factor: number; spread: number }>();
  for (const c of t.columns) {
    const kind = signals[c]?.kind;
    if (taken.has(c) || kind === "state" || kind === "energy_counter") continue;
    let best: { k: number; factor: number; spread: number } | null = null;
    products.forEach((product, k) => {
      const m = match(c, product);
      if (m && (best === null || m[1] < best.spread)) best = { k, factor: m[0], spread: m[1] };
    });
    if (best === null) continue;
    const { k, factor, spread } = best;
    const held = chosen.get(k);
    if (!held || spread < held.spread) chosen.set(k, { c, factor, spread });
  }
  const out: SiteConfig["power"] = [];
  for (const [k, power] of [...chosen].sort((a, b) => a[0] - b[0])) {
    const ps = targets[k]!;
    const res = resolution(finite(col(power.c)));
    signals[power.c] = { kind: "power", ...(res !== undefined ? { resolution: res } : {}) };
    const relation: SiteConfig["power"][number] = {
      power: power.c, voltage: ps.map((p) => p.v), current: ps.map((p) => p.i),
      ...(ps[0]!.pf ? { power_factor: ps.map((p) => p.pf!) } : {}),
      phases: 1, scale: tidyFactor(power.factor), tolerance_pct: 0, energy_per_power_hour: 1, window_s: 900,
    };
    if (k === 0) {
      const energy = energyOf(t, col(power.c), counters.map((c) => [c, col(c)] as const));
      if (energy) Object.assign(relation, { energy: energy.c, energy_per_power_hour: tidyFactor(energy.factor) });
    }
    out.push(relation);
  }
  return out;
}

/** The counter whose advance over 15-minute windows is the power summed over them (readings average over the interval that ends at their time). */
function energyOf(t: CsvTable, p: Float64Array, counters: readonly (readonly [string, Float64Array])[]): { c: string; factor: number } | null {
  let best: { c: string; factor: number; spread: number } | null = null;
  for (const [c, e] of counters) {
    const ratios: number[] = [];
    let t0 = -1;
    let sum = 0;
    for (let r = 1; r < t.ts.length; r++) {
      if (!Number.isFinite(e[r]!) || !Number.isFinite(p[r]!) || !Number.isFinite(e[r - 1]!)) {
        t0 = -1;
        continue;
      }
      if (t0 < 0) {
        t0 = r - 1;
        sum = 0;
      }
      sum += (p[r]! * (t.ts[r]! - t.ts[r - 1]!)) / 3_600_000;
      if (t.ts[r]! - t.ts[t0]! < 900_000) continue;
      const d = e[r]! - e[t0]!;
      if (sum > 0 && d > 0) ratios.push(d / sum);
      t0 = r;
      sum = 0;
    }
    if (ratios.length < 10) continue;
    const [med, mad] = medianMad(ratios);
    if (!(med > 0) || mad / med > ENERGY_MATCH) continue;
    if (best === null || mad / med < best.spread) best = { c, factor: med, spread: mad / med };
  }
  return best;
}

/** The inferred site as a site file for the engineer to correct. */
export function proposeSiteYaml(site: SiteConfig, source: string): string {
  const plain = {
    name: "proposed",
    description: `inferred from ${source}: check every kind, add units, ranges, tanks, pumps, meters and power relations`,
    signals: Object.fromEntries(Object.entries(site.signals).map(([k, s]) => [k, s.intermittent ? s : (({ intermittent: _i, ...r }) => r)(s)])),
    ...(site.relations.length ? { relations: site.relations } : {}),
    ...(site.meters.length ? { meters: site.meters } : {}),
    ...(site.power.length ? { power: site.power } : {}),
  };
  return `# Proposed by gatewarden detect --propose-site. Correct it, then pass it with --site.\n${stringify(plain)}`;
}
