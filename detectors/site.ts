/**
 * Site physics: checks that span several points. Attacks that hide in one signal break the
 * consistency between signals (BATADAL: the winning entries relied on it).
 *
 * Readings are gathered per timestamp (a "tick"); a tick is evaluated when a later reading
 * arrives or when `flush` is called (the offline CLI flushes at the end of every row).
 */
import type { Reading } from "../agent/core/readings";
import { LineCounter, parseDocument } from "yaml";
import { lineOf, parseYamlFile, type ConfigIssue } from "../agent/core/issues";
import { closest } from "../agent/core/suggest";
import { DaemonError } from "../agent/core/errors";
import { badState, checkVersion, fmt, num, numArray, obj, type Detector, type Emit, type Finding } from "./detector";
import { siteSchema, type RelationConfig, type SiteConfig, type TankConfig } from "./site-schema";

export { siteSchema, type SiteConfig } from "./site-schema";

/** Parses and validates a site file's text. Throws DaemonError SITE_INVALID naming file, line and key of each problem. */
export function parseSite(text: string, file = "site"): SiteConfig {
  return parseYamlFile(text, file, siteSchema, "SITE_INVALID");
}

/** A point id a site file names, and the key path that names it (`relations.0.states.1`). */
export interface SiteName {
  point: string;
  path: (string | number)[];
}

/** Every point id a site file names, one entry per mention, in file order of the sections. */
export function siteNames(site: SiteConfig): SiteName[] {
  const out: SiteName[] = [];
  const add = (point: string, ...path: (string | number)[]) => out.push({ point, path });
  const each = (v: string | string[] | undefined, ...path: (string | number)[]) => {
    if (typeof v === "string") add(v, ...path);
    else v?.forEach((p, j) => add(p, ...path, j));
  };
  for (const [p, sig] of Object.entries(site.signals)) {
    add(p, "signals", p);
    if (sig.reset_register !== undefined) add(sig.reset_register, "signals", p, "reset_register");
  }
  for (const [id, t] of Object.entries(site.tanks)) {
    add(t.level, "tanks", id, "level");
    each(t.inflows, "tanks", id, "inflows");
    each(t.outflows, "tanks", id, "outflows");
    t.controls.forEach((c, j) => add(c.actuator, "tanks", id, "controls", j, "actuator"));
  }
  site.relations.forEach((r, i) => {
    add(r.target, "relations", i, "target");
    each(r.states, "relations", i, "states");
    each(r.regressor, "relations", i, "regressor");
  });
  site.meters.forEach((m, i) => {
    add(m.main, "meters", i, "main");
    each(m.subs, "meters", i, "subs");
  });
  site.power.forEach((p, i) => {
    for (const k of ["power", "voltage", "current", "power_factor", "energy"] as const) each(p[k], "power", i, k);
  });
  return out;
}

/** Every point id the site's checks read (what `signals` describes is not read by them). */
export function sitePoints(site: SiteConfig): Set<string> {
  return new Set(siteNames(site).filter((n) => n.path[0] !== "signals").map((n) => n.point));
}

/**
 * Names in a site file that are not among `known` (the configured points, or a CSV's columns): a
 * misspelt name would silently disable its check. One issue per mention, naming the site file,
 * the line and the key, with the known name it most likely means.
 */
export function unknownSiteNames(site: SiteConfig, text: string, file: string, known: ReadonlySet<string>, among: string): ConfigIssue[] {
  const bad = siteNames(site).filter((n) => !known.has(n.point));
  if (!bad.length) return [];
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc });
  return bad.map(({ point, path }) => {
    const near = closest(point, known);
    const keys = path.map(String);
    const line = lineOf(doc, lc, keys, path[0] === "signals" && path.length === 2);
    return { file, path: keys.join("."), ...(line ? { line } : {}), code: "unknown_point", message: `${point} is not ${among}${near ? ` (did you mean ${near}?)` : ""}` };
  });
}

type Values = ReadonlyMap<string, number>;

interface Check {
  readonly key: string;
  evaluate(now: Values, prev: Values | null, dtS: number, ts: number, emit: Emit | null): void;
  save(): number[];
  load(s: number[]): void;
}

/** Level rules from the PLC program: a pump running above its stop level, or idle below its start level. */
class ControlCheck implements Check {
  readonly key: string;
  constructor(private readonly tankId: string, private readonly t: TankConfig) {
    this.key = `control:${tankId}`;
  }
  evaluate(now: Values, _p: Values | null, _dt: number, ts: number, emit: Emit | null): void {
    const level = now.get(this.t.level);
    if (level === undefined || emit === null) return;
    const m = this.t.control_margin_m;
    for (const c of this.t.controls) {
      const s = now.get(c.actuator);
      if (s === undefined) continue;
      const on = s > 0.5;
      const excess = on ? level - (c.off_above + m) : c.on_below - m - level;
      if (excess <= 0) continue;
      emit({
        point: this.t.level, detector: "control_rule", ts, score: 1 + excess / Math.max(m, 0.01), observed: level,
        expected: on ? c.off_above : c.on_below, related: [c.actuator], strength: "physical",
        reason: on
          ? `${c.actuator} is running while tank ${this.tankId} level ${this.t.level} reads ${fmt(level)} m, above its stop level ${fmt(c.off_above)} m: the level reading or the PLC thresholds have been altered`
          : `${c.actuator} is off while tank ${this.tankId} level ${this.t.level} reads ${fmt(level)} m, below its start level ${fmt(c.on_below)} m: the level reading or the PLC thresholds have been altered`,
      });
    }
  }
  save(): number[] {
    return [];
  }
  load(): void {}
}

/**
 * Tank mass balance: level change against (inflow - outflow) / area. The unmetered draw
 * (district demand) is learned as an hour-of-day profile; a CUSUM of the standardised
 * imbalance catches a level reading that drifts away from what the flows say.
 */
class TankBalanceCheck implements Check {
  readonly key: string;
  private readonly mean = new Float64Array(24);
  private readonly dev = new Float64Array(24);
  private readonly cnt = new Float64Array(24);
  private sp = 0;
  private sn = 0;
  constructor(private readonly tankId: string, private readonly t: TankConfig, private readonly h = 12, private readonly kappa = 1) {
    this.key = `balance:${tankId}`;
  }
  evaluate(now: Values, prev: Values | null, dtS: number, ts: number, emit: Emit | null): void {
    if (prev === null || dtS <= 0) return;
    const l1 = now.get(this.t.level);
    const l0 = prev.get(this.t.level);
    if (l1 === undefined || l0 === undefined) return;
    let net = 0;
    for (const [list, sign] of [[this.t.inflows, 1], [this.t.outflows, -1]] as const) {
      for (const p of list) {
        const a = now.get(p);
        const b = prev.get(p);
        if (a === undefined || b === undefined) return;
        net += (sign * (a + b)) / 2;
      }
    }
    const pumped = (net * this.t.flow_to_l_per_s * 0.001 * dtS) / this.t.area_m2;
    const e = l1 - l0 - pumped;
    const b = Math.floor(ts / 3_600_000) % 24;
    const c = this.cnt[b]!;
    const m = this.mean[b]!;
    const sd = Math.max(this.dev[b]! * 1.25, 1e-3);
    const z = Math.max(-8, Math.min(8, (e - m) / sd));
    if (emit !== null && c >= 10) {
      this.sp = Math.max(0, this.sp + z - this.kappa);
      this.sn = Math.max(0, this.sn - z - this.kappa);
      const s = Math.max(this.sp, this.sn);
      if (s > this.h) {
        const rising = l1 - l0;
        emit({
          point: this.t.level, detector: "tank_balance", ts, score: s / this.h, observed: rising, expected: pumped + m,
          related: [...this.t.inflows, ...this.t.outflows], strength: "physical",
          reason: `tank ${this.tankId} level ${this.t.level} changed ${fmt(rising)} m in ${fmt(dtS / 3600)} h while inflow minus outflow says ${fmt(pumped + m)} m: readings or flows are being falsified`,
        });
        if (s > 1.25 * this.h) {
          this.sp = Math.min(this.sp, 1.25 * this.h);
          this.sn = Math.min(this.sn, 1.25 * this.h);
        }
        return;
      }
    }
    const w = Math.max(1 / (c + 1), 0.02);
    this.mean[b] = m + w * (e - m);
    this.dev[b] = c === 0 ? 0 : this.dev[b]! + w * (Math.abs(e - m) - this.dev[b]!);
    this.cnt[b] = c + 1;
  }
  save(): number[] {
    return [this.sp, this.sn, ...this.mean, ...this.dev, ...this.cnt];
  }
  load(s: number[]): void {
    if (s.length !== 2 + 72) throw new Error("length");
    this.sp = s[0]!;
    this.sn = s[1]!;
    this.mean.set(s.slice(2, 26));
    this.dev.set(s.slice(26, 50));
    this.cnt.set(s.slice(50, 74));
  }
}

/**
 * Pump or valve state against flow and pressure: for each combination of the states, the
 * target follows a line in the regressor (e.g. a tank level), learned by exponentially
 * weighted least squares. A pump at 70 % speed or a pressure that ignores a pump stop shows
 * up as a residual far beyond its normal spread.
 */
class RelationCheck implements Check {
  readonly key: string;
  private readonly keys: number;
  /** Per state combination: count, mx, my, vxx, cxy, dev (8 slots each, 2 spare). */
  private readonly st: Float64Array;
  /** One CUSUM pair over the standardised residual, whatever the state combination. */
  private sp = 0;
  private sn = 0;
  constructor(private readonly r: RelationConfig, private readonly factor = 8, private readonly h = 16, private readonly kappa = 1.5) {
    this.key = `relation:${r.target}`;
    this.keys = 1 << r.states.length;
    this.st = new Float64Array(this.keys * 8);
  }
  evaluate(now: Values, _p: Values | null, _dt: number, ts: number, emit: Emit | null): void {
    const y = now.get(this.r.target);
    if (y === undefined) return;
    let k = 0;
    for (let i = 0; i < this.r.states.length; i++) {
      const s = now.get(this.r.states[i]!);
      if (s === undefined) return;
      if (s > 0.5) k |= 1 << i;
    }
    const x = this.r.regressor === undefined ? 0 : now.get(this.r.regressor);
    if (x === undefined) return;
    const o = k * 8;
    const st = this.st;
    const c = st[o]!;
    const mx = st[o + 1]!, my = st[o + 2]!, vxx = st[o + 3]!, cxy = st[o + 4]!, dev = st[o + 5]!;
    const slope = vxx > 1e-9 ? cxy / vxx : 0;
    const pred = my + slope * (x - mx);
    const res = y - pred;
    const scale = Math.max(dev * 1.25, 1e-3 * (Math.abs(my) + 1));
    const z = Math.max(-10, Math.min(10, res / scale));
    if (emit !== null && c >= 24) {
      this.sp = Math.max(0, this.sp + z - this.kappa);
      this.sn = Math.max(0, this.sn - z - this.kappa);
      const cs = Math.max(this.sp, this.sn) / this.h;
      const score = Math.max(Math.abs(z) / this.factor, cs);
      if (score > 1) {
        const states = this.r.states.map((s, i) => `${s}=${k & (1 << i) ? "on" : "off"}`).join(", ");
        emit({
          point: this.r.target, detector: "state_vs_flow", ts, score, observed: y, expected: pred,
          related: [...this.r.states, ...(this.r.regressor ? [this.r.regressor] : [])], strength: "physical",
          reason: `${this.r.target} reads ${fmt(y)} where ${states}${this.r.regressor ? ` and ${this.r.regressor}=${fmt(x)}` : ""} ` +
            `make ${fmt(pred)} +/- ${fmt(scale)} expected: the equipment state and the measurement disagree`,
        });
        if (cs > 1.25) {
          this.sp = Math.min(this.sp, 1.25 * this.h);
          this.sn = Math.min(this.sn, 1.25 * this.h);
        }
        return;
      }
    }
    const w = Math.max(1 / (c + 1), 0.01);
    const dx = x - mx;
    const nmx = mx + w * dx;
    const nmy = my + w * (y - my);
    st[o + 3] = (1 - w) * (vxx + w * dx * dx);
    st[o + 4] = (1 - w) * (cxy + w * dx * (y - my));
    st[o + 1] = nmx;
    st[o + 2] = nmy;
    if (c > 0) st[o + 5] = dev + w * (Math.abs(res) - dev);
    st[o] = c + 1;
  }
  save(): number[] {
    return [this.sp, this.sn, ...this.st];
  }
  load(s: number[]): void {
    if (s.length !== this.st.length + 2) throw new Error("length");
    this.sp = s[0]!;
    this.sn = s[1]!;
    this.st.set(s.slice(2));
  }
}

/**
 * A residual per window that should stay near zero, learned as a small linear model over
 * features of the window, with a two-sided CUSUM over the standardised residual. The model and
 * the spread are learned from normal history (and from live windows that raise nothing), so
 * losses, auxiliaries and meter gain errors become a learned tolerance, not a guess.
 */
/**
 * One step of a window model's spread: the mean |x|, a running mean over its first 100 windows,
 * then exponential, each value capped at 4 times the spread once 20 are in.
 */
function trackMeanAbs(dev: number, x: number, n: number): number {
  return dev + Math.max(1 / (n + 1), 0.01) * (Math.min(Math.abs(x), n > 20 ? 4 * dev : Infinity) - dev);
}

class WindowResidual {
  /** Normal equations of the exponentially weighted least squares fit (k features). */
  private readonly xtx: Float64Array;
  private readonly xty: Float64Array;
  private readonly coef: Float64Array;
  /** Mean absolute residual (robust spread) and windows seen. */
  dev = 0;
  n = 0;
  sp = 0;
  sn = 0;
  constructor(private readonly k: number, private readonly forget = 0.995) {
    this.xtx = new Float64Array(k * k);
    this.xty = new Float64Array(k);
    this.coef = new Float64Array(k);
  }
  /**
   * Advances the CUSUM pair by one standardised residual. While alarming, a window back within
   * WINDOW_END spreads of normal is the end of the evidence: the sums restart (hysteresis is the
   * incident's close_after).
   */
  advance(z: number): void {
    if (Math.max(this.sp, this.sn) > WINDOW_H && Math.abs(z) < WINDOW_END) {
      this.sp = this.sn = 0;
      return;
    }
    this.sp = Math.min(1.5 * WINDOW_H, Math.max(0, this.sp + z - WINDOW_KAPPA));
    this.sn = Math.min(1.5 * WINDOW_H, Math.max(0, this.sn - z - WINDOW_KAPPA));
  }
  predict(x: readonly number[]): number {
    let y = 0;
    for (let i = 0; i < this.k; i++) y += this.coef[i]! * x[i]!;
    return y;
  }
  /** Learns from a normal window. */
  learn(x: readonly number[], y: number): void {
    if (this.n > 0) this.dev = trackMeanAbs(this.dev, y - this.predict(x), this.n);
    const k = this.k;
    for (let i = 0; i < k; i++) {
      this.xty[i] = this.forget * this.xty[i]! + x[i]! * y;
      for (let j = 0; j < k; j++) this.xtx[i * k + j] = this.forget * this.xtx[i * k + j]! + x[i]! * x[j]!;
    }
    this.solve();
    this.n++;
  }
  /** Gaussian elimination with a small ridge (k <= 3). */
  private solve(): void {
    const k = this.k;
    const a = Array.from({ length: k }, (_, i) => [...Array.from({ length: k }, (_, j) => this.xtx[i * k + j]! + (i === j ? 1e-9 * (this.xtx[i * k + i]! + 1) : 0)), this.xty[i]!]);
    for (let c = 0; c < k; c++) {
      let p = c;
      for (let r = c + 1; r < k; r++) if (Math.abs(a[r]![c]!) > Math.abs(a[p]![c]!)) p = r;
      [a[c], a[p]] = [a[p]!, a[c]!];
      const d = a[c]![c]!;
      if (Math.abs(d) < 1e-300) return;
      for (let r = 0; r < k; r++) {
        if (r === c) continue;
        const f = a[r]![c]! / d;
        for (let j = c; j <= k; j++) a[r]![j]! -= f * a[c]![j]!;
      }
    }
    for (let i = 0; i < k; i++) this.coef[i] = a[i]![k]! / a[i]![i]!;
  }
  save(): number[] {
    return [this.dev, this.n, this.sp, this.sn, ...this.xtx, ...this.xty, ...this.coef];
  }
  load(s: readonly number[]): void {
    const k = this.k;
    if (s.length !== 4 + k * k + 2 * k) throw new Error("length");
    [this.dev, this.n, this.sp, this.sn] = s as [number, number, number, number];
    this.xtx.set(s.slice(4, 4 + k * k));
    this.xty.set(s.slice(4 + k * k, 4 + k * k + k));
    this.coef.set(s.slice(4 + k * k + k));
  }
}

/**
 * Drift allowance and decision interval of the windowed CUSUMs, in learned spreads. Tuned on the
 * feeder simulator's dev seeds (101-103): allowance 1, interval 8.
 */
const WINDOW_KAPPA = 1;
const WINDOW_H = 8;
/**
 * While alarming, a window back within this many learned spreads of normal ends the evidence.
 * Chosen on the feeder dev seeds and their variants (0.5 before: after an attack the sums then
 * decayed by half a spread a window, and with whole-kWh counters the alarm outlasted it by hours).
 */
const WINDOW_END = 1;
/**
 * A meter tree's window lasts until the main meter has advanced this many times its counters'
 * rounding (the rounding is then at most a tenth of what the window compares), or for this many
 * `window_s` spans (see MeterIncrementCheck). Chosen on the feeder dev seeds with counters in
 * whole kWh (5, 10 and 20 tried).
 */
const WINDOW_MIN_QUANTA = 10;
const WINDOW_MAX_SPANS = 8;
/** Normal windows before a window check may report. */
const WINDOW_MIN_LEARNED = 24;

/**
 * Counters: what the main meter advanced over a window against what its sub-meters advanced.
 * The difference (losses, unmetered auxiliaries, gain errors) is learned as
 * a x hours + b x main advance + c x main advance^2 / hours (constant load, share, I^2 R losses).
 * A counter that is unknown (offline, blank) suspends the check; its window simply spans the
 * outage, since counters keep counting. A counter that went backwards (an exchange, a reset, a
 * rollback the counter detector reports) starts a new window instead of a false balance alarm.
 */
class MeterIncrementCheck implements Check {
  readonly key: string;
  private t0: number | null = null;
  private base: number[] = [];
  private readonly model = new WindowResidual(3);
  /** The last window's finding, repeated on every tick until a window balances again. */
  private open: Omit<Finding, "ts"> | null = null;
  constructor(private readonly m: SiteConfig["meters"][number], private readonly res: number) {
    this.key = `meter_increments:${m.main}`;
  }
  evaluate(now: Values, _p: Values | null, _dt: number, ts: number, emit: Emit | null): void {
    const ids = [this.m.main, ...this.m.subs];
    const cur: number[] = [];
    for (const id of ids) {
      const v = now.get(id);
      if (v === undefined) {
        if (emit !== null && this.open) emit({ ...this.open, ts });
        return;
      }
      cur.push(v);
    }
    if (this.t0 === null || ts < this.t0 || cur.some((v, i) => v < this.base[i]! - this.res)) {
      this.t0 = ts;
      this.base = cur;
      return;
    }
    if (this.windowDone(cur[0]! - this.base[0]!, ts - this.t0)) this.closeWindow(cur, ts, emit === null);
    if (emit !== null && this.open) emit({ ...this.open, ts });
  }
  /** Each counter's reading is off by up to one step at each end of a window: the sum's spread. */
  private quantisation(): number {
    return (this.res * (this.m.subs.length + 1)) / 2;
  }
  /**
   * A window closes after `window_s` once the main meter has advanced WINDOW_MIN_QUANTA times
   * what the counters' resolution blurs (else after WINDOW_MAX_SPANS windows' time): with
   * counters in whole kWh a 15-minute window is mostly rounding, and an 8 kW bypass would stay
   * inside it window after window.
   */
  private windowDone(dMain: number, ms: number): boolean {
    const span = this.m.window_s * 1000;
    return ms >= span && (Math.abs(dMain) >= WINDOW_MIN_QUANTA * this.quantisation() || ms >= WINDOW_MAX_SPANS * span);
  }
  private closeWindow(cur: number[], ts: number, training: boolean): void {
    const dMain = cur[0]! - this.base[0]!;
    let dSubs = 0;
    for (let i = 1; i < cur.length; i++) dSubs += cur[i]! - this.base[i]!;
    const hours = (ts - this.t0!) / 3_600_000;
    const minutes = Math.round(hours * 60);
    this.t0 = ts;
    this.base = cur;
    const x = [hours, dMain, (dMain * dMain) / Math.max(hours, 1e-6)];
    const y = dMain - dSubs;
    const md = this.model;
    const expected = md.predict(x);
    // Quantisation: each counter's reading is off by up to one step at each end of the window.
    const sd = Math.max(md.dev * 1.25, this.quantisation(), (Math.abs(dMain) * this.m.tolerance_pct) / 100 / 4, this.m.tolerance_abs / 4, 1e-9);
    const z = Math.max(-10, Math.min(10, (y - expected) / sd));
    if (training || md.n < WINDOW_MIN_LEARNED) {
      md.learn(x, y);
      return;
    }
    md.advance(z);
    const score = Math.max(md.sp, md.sn) / WINDOW_H;
    if (score <= 1) {
      this.open = null;
      // Only windows well inside the model teach it (tuned on the feeder dev seeds: 3 let a slow
      // under-reading sub-meter be absorbed for hours).
      if (Math.abs(z) < 1) md.learn(x, y);
      return;
    }
    const missing = md.sp > md.sn;
    this.open = {
      point: this.m.main, detector: "meter_balance", score, observed: dMain - y, expected: dMain - expected,
      related: this.m.subs, strength: "physical",
      reason: `over the last ${minutes} min main meter ${this.m.main} advanced ${fmt(dMain)} and its sub-meters (${this.m.subs.join(", ")}) ` +
        `${fmt(dSubs)} together, where losses and auxiliaries learned from normal operation leave ${fmt(dMain - expected)} +/- ${fmt(sd)} ` +
        `for them: ${missing ? "energy is passing unmetered (a bypass or an under-reading sub-meter)" : "the sub-meters read more than the main meter"}`,
    };
  }
  save(): number[] {
    return [...this.model.save(), ...(this.t0 === null ? [] : [this.t0, ...this.base])];
  }
  load(s: number[]): void {
    this.open = null;
    const k = this.model.save().length;
    this.model.load(s.slice(0, k));
    const rest = s.slice(k);
    if (rest.length !== 2 + this.m.subs.length) {
      this.t0 = null;
      this.base = [];
      return;
    }
    this.t0 = rest[0]!;
    this.base = rest.slice(1);
  }
}

/** Sub-meters against the main meter. */
class MeterCheck implements Check {
  readonly key: string;
  constructor(private readonly m: SiteConfig["meters"][number]) {
    this.key = `meters:${m.main}`;
  }
  evaluate(now: Values, _p: Values | null, _dt: number, ts: number, emit: Emit | null): void {
    const main = now.get(this.m.main);
    if (main === undefined || emit === null) return;
    let sum = 0;
    for (const s of this.m.subs) {
      const v = now.get(s);
      if (v === undefined) return;
      sum += v;
    }
    const tol = (Math.abs(main) * this.m.tolerance_pct) / 100 + this.m.tolerance_abs;
    const diff = Math.abs(main - sum);
    if (diff <= tol || tol <= 0 && diff === 0) return;
    emit({
      point: this.m.main, detector: "meter_balance", ts, score: diff / Math.max(tol, 1e-9), observed: main, expected: sum,
      related: this.m.subs, strength: "physical",
      reason: `main meter ${this.m.main} reads ${fmt(main)} but its sub-meters (${this.m.subs.join(", ")}) sum to ${fmt(sum)}, beyond the ${this.m.tolerance_pct} % tolerance`,
    });
  }
  save(): number[] {
    return [];
  }
  load(): void {}
}

/** Half a register step relative to the value it rounds (0 without a step). */
const half = (x: number, step: number): number => (step > 0 && x !== 0 ? step / 2 / Math.abs(x) : 0);

const list = (x: string | string[] | undefined): string[] => (x === undefined ? [] : Array.isArray(x) ? x : [x]);

/**
 * Active power against volts x amps x power factor (per phase and summed, or x sqrt 3 for one
 * line voltage and current). The ratio of the two is learned (meter class, averaging), and so is
 * its normal spread; a reading beyond 8 spreads, or a CUSUM of smaller deviations, is a finding.
 * The configured `tolerance_pct` is the floor of the spread.
 */
class PowerCheck implements Check {
  readonly key: string;
  private readonly V: string[];
  private readonly I: string[];
  private readonly PF: string[];
  private g = 1;
  private dev = 0;
  private n = 0;
  private sp = 0;
  private sn = 0;
  /** Register steps of each phase's V, A and PF (0: none given). */
  private readonly steps: { v: number; a: number; pf: number }[];
  /** Relative rounding of the latest V x A x PF (from the readings' resolutions). */
  private rounding = 0;
  constructor(private readonly p: SiteConfig["power"][number], private readonly resP: number, res: (point: string) => number = () => 0) {
    this.key = `power:${p.power}`;
    this.V = list(p.voltage);
    this.I = list(p.current);
    this.PF = list(p.power_factor);
    this.steps = this.V.map((v, k) => ({ v: res(v), a: res(this.I[k]!), pf: this.PF.length ? res(this.PF[k]!) : 0 }));
  }
  /**
   * V x A x PF summed over the phases, and (in `rounding`) how far its readings' rounding can move
   * it, relatively: half a step of each factor over its value, weighted by the phase's share. At
   * night a current of a few amperes in 0.01 A steps and a power factor in 0.001 steps move the
   * product by about 0.1 %, which a ratio learned over a few quiet days would take for a fault.
   */
  private expected(now: Values): number | undefined {
    let e = 0;
    let r = 0;
    for (let k = 0; k < this.V.length; k++) {
      const v = now.get(this.V[k]!);
      const a = now.get(this.I[k]!);
      const pf = this.PF.length ? now.get(this.PF[k]!) : 1;
      if (v === undefined || a === undefined || pf === undefined) return undefined;
      const term = v * a * pf;
      e += term;
      const st = this.steps[k]!;
      r += Math.abs(term) * (half(v, st.v) + half(a, st.a) + half(pf, st.pf));
    }
    this.rounding = e !== 0 ? r / Math.abs(e) : 0;
    return e * (this.p.phases === 3 && this.V.length === 1 ? Math.sqrt(3) : 1) * this.p.scale;
  }
  evaluate(now: Values, _p: Values | null, _dt: number, ts: number, emit: Emit | null): void {
    const P = now.get(this.p.power);
    const exp = this.expected(now);
    if (P === undefined || exp === undefined) return;
    const mag = Math.max(Math.abs(exp), Math.abs(P));
    if (mag <= 4 * this.resP) return; // no load: nothing to compare
    const rr = P / Math.max(Math.abs(exp), 1e-12) - this.g;
    const floor = Math.max(this.resP / mag + this.rounding, this.n < WINDOW_MIN_LEARNED ? this.p.tolerance_pct / 100 : 0);
    const sd = Math.max(this.dev * 1.25, floor, 1e-6);
    const z = Math.max(-10, Math.min(10, rr / sd));
    if (emit !== null && this.n < 100 && this.p.tolerance_pct > 0 && Math.abs(rr) * 100 > this.p.tolerance_pct) {
      // Not learned yet: the configured tolerance is the limit.
      emit(this.finding(P, exp, (Math.abs(rr) * 100) / this.p.tolerance_pct, sd, ts));
      return;
    }
    if (emit !== null && this.n >= 100) {
      this.sp = Math.min(1.25 * POWER_H, Math.max(0, this.sp + z - POWER_KAPPA));
      this.sn = Math.min(1.25 * POWER_H, Math.max(0, this.sn - z - POWER_KAPPA));
      const score = Math.max(Math.abs(z) / POWER_FACTOR, Math.max(this.sp, this.sn) / POWER_H);
      if (score > 1) {
        emit(this.finding(P, exp, score, sd, ts));
        return;
      }
    }
    if (Math.abs(z) > 4 && this.n >= 100) return;
    const w = Math.max(1 / (this.n + 1), 0.002);
    this.g += w * rr;
    if (this.n > 0) this.dev += w * (Math.abs(rr) - this.dev);
    this.n++;
  }
  private finding(P: number, exp: number, score: number, sd: number, ts: number): Finding {
    const terms = this.V.map((v, k) => `${v} x ${this.I[k]}${this.PF.length ? ` x ${this.PF[k]}` : ""}`).join(" + ");
    return {
      point: this.p.power, detector: "power_balance", ts, score, observed: P, expected: exp * this.g,
      related: [...this.V, ...this.I, ...this.PF], strength: "physical",
      reason: `${this.p.power} reads ${fmt(P)} but ${terms} gives ${fmt(exp * this.g)} (ratio ${fmt(P / exp)}, normally ${fmt(this.g)} +/- ${fmt(sd)}): a power, voltage or current reading is false`,
    };
  }
  save(): number[] {
    return [this.g, this.dev, this.n, this.sp, this.sn];
  }
  load(s: number[]): void {
    if (s.length === 0) return;
    if (s.length !== 5) throw new Error("length");
    [this.g, this.dev, this.n, this.sp, this.sn] = s as [number, number, number, number, number];
  }
}

/**
 * Power readings against the energy counter of the same meter: what the counter advanced over
 * a window against the mean power times the window. A replayed, frozen or drifting power reading
 * no longer adds up to the energy the meter counted (and a counter that stops, to the power).
 */
class EnergyPowerCheck implements Check {
  readonly key: string;
  private t0: number | null = null;
  private e0 = 0;
  private integral = 0;
  private lastP: number | null = null;
  private lastTs = 0;
  /** Typical interval between readings, ms (0: not yet seen). */
  private dt = 0;
  private readonly model = new WindowResidual(2);
  /**
   * The power readings are samples of a load that changes between them, so the energy summed
   * from them misses what happened in between: more when the readings moved a lot (an evening
   * ramp, appliances switching, readings every few minutes) than on a steady night. A window's
   * spread therefore has a part in proportion to its `moves` (the sum of |change of power| x
   * interval between readings): mean moves per window, and mean |residual| / (moves + that mean).
   */
  private moves = 0;
  private meanMoves = 0;
  private moveDev = 0;
  private open: Omit<Finding, "ts"> | null = null;
  constructor(private readonly p: SiteConfig["power"][number], private readonly energy: string, private readonly resE: number) {
    this.key = `energy_power:${energy}`;
  }
  evaluate(now: Values, _p: Values | null, _dt: number, ts: number, emit: Emit | null): void {
    const P = now.get(this.p.power);
    const E = now.get(this.energy);
    if (P === undefined || E === undefined) {
      this.t0 = null; // an unknown stretch: start a new window when both are back
      this.lastP = null;
      if (emit !== null && this.open) emit({ ...this.open, ts });
      return;
    }
    // A reading that did not come (a missed poll) leaves an interval the summed power can only
    // guess at: the window starts afresh after it, as after an unknown stretch.
    const gap = this.lastP === null ? 0 : ts - this.lastTs;
    const missed = this.dt > 0 && gap > 1.5 * this.dt;
    if (gap > 0) this.dt = this.dt === 0 ? gap : this.dt + 0.05 * (Math.min(gap, 4 * this.dt) - this.dt);
    if (this.t0 === null || ts < this.t0 || E < this.e0 - this.resE || this.lastP === null || missed) {
      this.t0 = ts;
      this.e0 = E;
      this.integral = 0;
      this.moves = 0;
      this.lastP = P;
      this.lastTs = ts;
      return;
    }
    // Readings average over the interval that ends at their time stamp.
    this.integral += P * ((ts - this.lastTs) / 3_600_000) * this.p.energy_per_power_hour;
    this.moves += Math.abs(P - this.lastP) * ((ts - this.lastTs) / 3_600_000) * Math.abs(this.p.energy_per_power_hour);
    this.lastP = P;
    this.lastTs = ts;
    if (ts - this.t0 >= this.p.window_s * 1000) this.closeWindow(E, ts, emit === null);
    if (emit !== null && this.open) emit({ ...this.open, ts });
  }
  private closeWindow(E: number, ts: number, training: boolean): void {
    const dE = E - this.e0;
    const fromP = this.integral;
    const moves = this.moves;
    this.moves = 0;
    const minutes = Math.round((ts - this.t0!) / 60_000);
    this.t0 = ts;
    this.e0 = E;
    this.integral = 0;
    const x = [fromP, minutes / 60];
    const md = this.model;
    const expected = md.predict(x);
    const sd = Math.max(md.dev * 1.25, this.moveDev * 1.25 * (moves + this.meanMoves), this.resE, 1e-9);
    const z = Math.max(-10, Math.min(10, (dE - expected) / sd));
    if (training || md.n < WINDOW_MIN_LEARNED) {
      this.learn(x, dE, expected, moves);
      return;
    }
    md.advance(z);
    const score = Math.max(md.sp, md.sn) / WINDOW_H;
    if (score <= 1) {
      this.open = null;
      if (Math.abs(z) < 3) this.learn(x, dE, expected, moves);
      return;
    }
    this.open = {
      point: this.p.power, detector: "energy_balance", score, observed: fromP, expected: dE,
      related: [this.energy], strength: "physical",
      reason: `over the last ${minutes} min ${this.energy} counted ${fmt(dE)} where the ${this.p.power} readings add up to ${fmt(fromP)} ` +
        `(normally ${fmt(expected)} +/- ${fmt(sd)}): the power readings or the counter are false (replayed, frozen or altered)`,
    };
  }
  private learn(x: number[], dE: number, expected: number, moves: number): void {
    const md = this.model;
    const scale = moves + this.meanMoves;
    if (md.n > 0 && scale > 0) this.moveDev = trackMeanAbs(this.moveDev, (dE - expected) / scale, md.n);
    this.meanMoves += Math.max(1 / (md.n + 1), 0.01) * (moves - this.meanMoves);
    md.learn(x, dE);
  }
  save(): number[] {
    return [...this.model.save(), this.meanMoves, this.moveDev];
  }
  load(s: number[]): void {
    this.open = null;
    this.t0 = null;
    this.lastP = null;
    if (!s.length) return;
    // Snapshots from before the spread of moves hold the model alone: that part is learned afresh.
    const k = s.length - 2;
    if (k === this.model.save().length) {
      this.model.load(s.slice(0, k));
      this.meanMoves = s[k]!;
      this.moveDev = s[k + 1]!;
    } else {
      this.model.load(s);
      this.meanMoves = 0;
      this.moveDev = 0;
    }
  }
}

/** Power check constants: instant factor, CUSUM allowance and interval, in learned spreads (as the relation check). */
const POWER_FACTOR = 8;
const POWER_KAPPA = 1.5;
const POWER_H = 16;

/** A value this many typical intervals old is unknown. */
const STALE_INTERVALS = 3;

interface SiteState { tick: number | null; now: [string, number][]; prev: [string, number][] | null; prev_ts: number | null; checks: Record<string, number[]> }

/** All physics checks of one site, as one detector over every point the site file names. */
export class SiteDetector implements Detector<SiteState> {
  readonly stateVersion = 1;
  readonly id: string;
  readonly points: ReadonlySet<string>;
  private readonly checks: Check[] = [];
  private tick: number | null = null;
  private now = new Map<string, number>();
  private prev: Map<string, number> | null = null;
  private prevTs: number | null = null;
  /** Set while the pending tick is training data. */
  private pendingTraining = false;
  /** Time of each point's last good reading and its typical interval (ms; derived, not saved). */
  private readonly seen = new Map<string, number>();
  private readonly interval = new Map<string, number>();

  /** `kindOf` tells meter checks which points are counters (compared by increments). */
  constructor(
    readonly site: SiteConfig,
    kindOf: (point: string) => string | undefined = () => undefined,
  ) {
    const res = (p: string): number => site.signals[p]?.resolution ?? 0;
    this.id = `site/${site.name}`;
    this.points = sitePoints(site);
    for (const [tid, t] of Object.entries(site.tanks)) {
      if (t.controls.length) this.checks.push(new ControlCheck(tid, t));
      if (t.inflows.length + t.outflows.length > 0) this.checks.push(new TankBalanceCheck(tid, t));
    }
    for (const r of site.relations) this.checks.push(new RelationCheck(r));
    for (const m of site.meters) {
      const increments = (m.compare ?? (kindOf(m.main) === "energy_counter" ? "increments" : "values")) === "increments";
      this.checks.push(increments ? new MeterIncrementCheck(m, Math.max(res(m.main), ...m.subs.map(res))) : new MeterCheck(m));
    }
    for (const p of site.power) {
      this.checks.push(new PowerCheck(p, res(p.power), res));
      if (p.energy) this.checks.push(new EnergyPowerCheck(p, p.energy, res(p.energy)));
    }
  }

  observe(r: Reading, emit: Emit): void {
    this.add(r, emit, false);
  }
  train(r: Reading): void {
    this.add(r, null, true);
  }
  /** A blank or bad reading: the point's value is unknown from now on, never its last value. */
  unknown(point: string): void {
    this.now.delete(point);
  }
  private add(r: Reading, emit: Emit | null, training: boolean): void {
    if (!this.points.has(r.point)) return;
    if (this.tick !== null && r.ts > this.tick) this.flush(emit);
    if (this.tick === null || r.ts > this.tick) this.tick = r.ts;
    this.pendingTraining = training;
    if (r.quality !== "good") {
      this.now.delete(r.point);
      return;
    }
    this.now.set(r.point, r.value);
    const last = this.seen.get(r.point);
    if (last !== undefined && r.ts > last) {
      const d = r.ts - last;
      const typ = this.interval.get(r.point) ?? 0;
      this.interval.set(r.point, typ === 0 ? d : typ + 0.05 * (Math.min(d, 4 * typ) - typ));
    }
    this.seen.set(r.point, r.ts);
  }
  /** Values not refreshed for STALE_INTERVALS of their typical interval are unknown, not stale. */
  private expire(ts: number): void {
    for (const p of this.now.keys()) {
      const last = this.seen.get(p);
      const typ = this.interval.get(p);
      if (last !== undefined && typ !== undefined && typ > 0 && ts - last > STALE_INTERVALS * typ) this.now.delete(p);
    }
  }
  /** Evaluates the pending tick. `emit` null (or a training tick) updates models only. */
  flush(emit: Emit | null): void {
    const ts = this.tick;
    if (ts === null) return;
    const dtS = this.prevTs === null ? 0 : (ts - this.prevTs) / 1000;
    const e = this.pendingTraining ? null : emit;
    this.expire(ts);
    for (const c of this.checks) c.evaluate(this.now, this.prev, dtS, ts, e);
    this.prev = this.now;
    this.prevTs = ts;
    this.now = new Map(this.prev);
    this.tick = null;
  }
  snapshot(): SiteState {
    const checks: Record<string, number[]> = {};
    for (const c of this.checks) checks[c.key] = c.save();
    return { tick: this.tick, now: [...this.now], prev: this.prev ? [...this.prev] : null, prev_ts: this.prevTs, checks };
  }
  restore(state: SiteState, version: number): void {
    checkVersion(this.id, this.stateVersion, version);
    const s = obj(this.id, state);
    const pairs = (v: unknown, what: string): Map<string, number> => {
      if (!Array.isArray(v)) throw badState(this.id, what);
      return new Map(v.map((p: unknown) => {
        if (!Array.isArray(p) || typeof p[0] !== "string") throw badState(this.id, what);
        return [p[0], num(this.id, p[1], what)] as [string, number];
      }));
    };
    this.tick = s.tick === null ? null : num(this.id, s.tick, "tick");
    this.now = pairs(s.now, "now");
    this.prev = s.prev === null ? null : pairs(s.prev, "prev");
    this.prevTs = s.prev_ts === null ? null : num(this.id, s.prev_ts, "prev_ts");
    const checks = obj(this.id, s.checks);
    for (const c of this.checks) {
      try {
        c.load(numArray(this.id, checks[c.key] ?? [], c.key, 100_000));
      } catch (e) {
        throw e instanceof DaemonError ? e : badState(this.id, c.key);
      }
    }
  }
}
