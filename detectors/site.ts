/**
 * Site physics: checks that span several points. Attacks that hide in one signal break the
 * consistency between signals (BATADAL: the winning entries relied on it).
 *
 * Readings are gathered per timestamp (a "tick"); a tick is evaluated when a later reading
 * arrives or when `flush` is called (the offline CLI flushes at the end of every row).
 */
import type { Reading } from "../agent/pipeline";
import { parseYamlFile } from "../agent/config/issues";
import { DaemonError } from "../agent/errors";
import { badState, checkVersion, fmt, num, numArray, obj, type Detector, type Emit, type Finding } from "./detector";
import { siteSchema, type RelationConfig, type SiteConfig, type TankConfig } from "./site-schema";

export { siteSchema, type SiteConfig } from "./site-schema";

/** Parses and validates a site file's text. Throws DaemonError SITE_INVALID naming file, line and key of each problem. */
export function parseSite(text: string, file = "site"): SiteConfig {
  return parseYamlFile(text, file, siteSchema, "SITE_INVALID");
}

/** Every point id a site file mentions. */
export function sitePoints(site: SiteConfig): Set<string> {
  const s = new Set<string>();
  for (const t of Object.values(site.tanks)) {
    s.add(t.level);
    t.inflows.forEach((p) => s.add(p));
    t.outflows.forEach((p) => s.add(p));
    t.controls.forEach((c) => s.add(c.actuator));
  }
  for (const r of site.relations) {
    s.add(r.target);
    r.states.forEach((p) => s.add(p));
    if (r.regressor) s.add(r.regressor);
  }
  for (const m of site.meters) [m.main, ...m.subs].forEach((p) => s.add(p));
  for (const p of site.power) [p.power, p.voltage, p.current, p.power_factor].forEach((x) => x && s.add(x));
  return s;
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
 * Counters: what the main meter advanced over a window against what its sub-meters advanced.
 * A counter that went backwards (a reset, a rollover, a rollback the counter detector reports)
 * starts a new window instead of a false balance alarm.
 */
class MeterIncrementCheck implements Check {
  readonly key: string;
  private t0: number | null = null;
  private base: number[] = [];
  /** The last window's imbalance, reported on every tick until a window balances again, so a
   * lasting imbalance is one incident, not one per window. */
  private open: Omit<Finding, "ts"> | null = null;
  constructor(private readonly m: SiteConfig["meters"][number]) {
    this.key = `meter_increments:${m.main}`;
  }
  evaluate(now: Values, _p: Values | null, _dt: number, ts: number, emit: Emit | null): void {
    const ids = [this.m.main, ...this.m.subs];
    const cur: number[] = [];
    for (const id of ids) {
      const v = now.get(id);
      if (v === undefined) return;
      cur.push(v);
    }
    if (this.t0 === null || ts < this.t0 || cur.some((v, i) => v < this.base[i]!)) {
      this.t0 = ts;
      this.base = cur;
      this.open = null;
      return;
    }
    if (ts - this.t0 >= this.m.window_s * 1000) this.closeWindow(cur, ts);
    if (emit !== null && this.open) emit({ ...this.open, ts });
  }
  private closeWindow(cur: number[], ts: number): void {
    const dMain = cur[0]! - this.base[0]!;
    let dSubs = 0;
    for (let i = 1; i < cur.length; i++) dSubs += cur[i]! - this.base[i]!;
    const minutes = Math.round((ts - this.t0!) / 60_000);
    this.t0 = ts;
    this.base = cur;
    const tol = (Math.abs(dMain) * this.m.tolerance_pct) / 100 + this.m.tolerance_abs;
    const diff = Math.abs(dMain - dSubs);
    this.open =
      diff <= tol || (tol <= 0 && diff === 0)
        ? null
        : {
            point: this.m.main, detector: "meter_balance", score: diff / Math.max(tol, 1e-9), observed: dMain, expected: dSubs,
            related: this.m.subs, strength: "physical",
            reason: `over the last ${minutes} min main meter ${this.m.main} advanced ${fmt(dMain)} but its sub-meters (${this.m.subs.join(", ")}) advanced ${fmt(dSubs)} together, beyond the ${this.m.tolerance_pct} % tolerance`,
          };
  }
  save(): number[] {
    return this.t0 === null ? [] : [this.t0, ...this.base];
  }
  load(s: number[]): void {
    this.open = null;
    if (s.length !== 2 + this.m.subs.length) {
      this.t0 = null;
      this.base = [];
      return;
    }
    this.t0 = s[0]!;
    this.base = s.slice(1);
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

/** Active power against volts x amps x power factor (x sqrt 3 for three-phase line values). */
class PowerCheck implements Check {
  readonly key: string;
  constructor(private readonly p: SiteConfig["power"][number]) {
    this.key = `power:${p.power}`;
  }
  evaluate(now: Values, _p: Values | null, _dt: number, ts: number, emit: Emit | null): void {
    const P = now.get(this.p.power);
    const V = now.get(this.p.voltage);
    const I = now.get(this.p.current);
    const pf = this.p.power_factor === undefined ? 1 : now.get(this.p.power_factor);
    if (P === undefined || V === undefined || I === undefined || pf === undefined || emit === null) return;
    const exp = V * I * pf * (this.p.phases === 3 ? Math.sqrt(3) : 1) * this.p.scale;
    const tol = (Math.max(Math.abs(exp), Math.abs(P)) * this.p.tolerance_pct) / 100 + 1e-9;
    const diff = Math.abs(P - exp);
    if (diff <= tol) return;
    emit({
      point: this.p.power, detector: "power_balance", ts, score: diff / tol, observed: P, expected: exp,
      related: [this.p.voltage, this.p.current, ...(this.p.power_factor ? [this.p.power_factor] : [])], strength: "physical",
      reason: `${this.p.power} reads ${fmt(P)} but ${this.p.voltage} x ${this.p.current}${this.p.power_factor ? ` x ${this.p.power_factor}` : ""} gives ${fmt(exp)}`,
    });
  }
  save(): number[] {
    return [];
  }
  load(): void {}
}

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

  /** `kindOf` tells meter checks which points are counters (compared by increments). */
  constructor(
    readonly site: SiteConfig,
    kindOf: (point: string) => string | undefined = () => undefined,
  ) {
    this.id = `site/${site.name}`;
    this.points = sitePoints(site);
    for (const [tid, t] of Object.entries(site.tanks)) {
      if (t.controls.length) this.checks.push(new ControlCheck(tid, t));
      if (t.inflows.length + t.outflows.length > 0) this.checks.push(new TankBalanceCheck(tid, t));
    }
    for (const r of site.relations) this.checks.push(new RelationCheck(r));
    for (const m of site.meters) {
      const increments = (m.compare ?? (kindOf(m.main) === "energy_counter" ? "increments" : "values")) === "increments";
      this.checks.push(increments ? new MeterIncrementCheck(m) : new MeterCheck(m));
    }
    for (const p of site.power) this.checks.push(new PowerCheck(p));
  }

  observe(r: Reading, emit: Emit): void {
    this.add(r, emit, false);
  }
  train(r: Reading): void {
    this.add(r, null, true);
  }
  private add(r: Reading, emit: Emit | null, training: boolean): void {
    if (!this.points.has(r.point)) return;
    if (this.tick !== null && r.ts > this.tick) this.flush(emit);
    if (this.tick === null || r.ts > this.tick) this.tick = r.ts;
    this.pendingTraining = training;
    if (r.quality === "good") this.now.set(r.point, r.value);
  }
  /** Evaluates the pending tick. `emit` null (or a training tick) updates models only. */
  flush(emit: Emit | null): void {
    const ts = this.tick;
    if (ts === null) return;
    const dtS = this.prevTs === null ? 0 : (ts - this.prevTs) / 1000;
    const e = this.pendingTraining ? null : emit;
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
