import type { Reading } from "../agent/core/readings";
import { GAP_FACTOR } from "./_base";
import { SortedWindow, SpreadTracker } from "./_stats";
import { badState, checkVersion, fmt, num, numArray, obj, type Detector, type Emit } from "./detector";

export interface GroupShiftOptions {
  window?: number;
  reference_span?: number;
  /** Threshold margin over the largest statistic seen on normal data. */
  margin?: number;
  /** Never below this mean squared standardised shift. */
  min_threshold?: number;
  relearn_after?: number;
  warmup?: number;
  /** Span, in readings, of the sustained-shift stage's long average (0 disables the stage). */
  long_window?: number;
  /** Time constant, in ticks, of the sustained-shift stage's slow reference. */
  long_reference_span?: number;
  /** A member's sustained-shift limit is never below this (in units of its normal swing). */
  long_min_threshold?: number;
  /** Members' reading steps where the site or points config gives one (else learned from the readings). */
  resolution?: Readonly<Record<string, number>>;
}

interface Member {
  win: SortedWindow; ref: number | null; spread: SpreadTracker; d: number; fresh: boolean;
  /** Sustained-shift stage: exponential average over about `long_window` readings, readings in it so far. */
  lm: number; lsize: number;
  /** Slow reference of the long-window mean, ticks it has learned from, its normal swing, latest shift. */
  base: number | null; bn: number; lspread: SpreadTracker; ld: number;
  /** Largest standardised long-window shift of this member seen on normal data. */
  lcal: number;
  /** Previous reading (NaN: none yet) and the reading step: configured, or the smallest non-zero change seen (Infinity: none yet). */
  prev: number; step: number;
}
interface MemberState {
  win: number[]; ref: number | null; spread: number[]; d: number; fresh: boolean;
  /** Absent in snapshots from before the sustained-shift stage: it starts empty. */
  lm?: number; lsize?: number; base?: number | null; bn?: number; lspread?: number[]; ld?: number; lcal?: number;
  /** Absent in snapshots from before the step floor: learned afresh (0: none yet). */
  step?: number; prev?: number | null;
}
interface State {
  n: number; cal: number; flagged: number; tick: number | null; last: number | null; dt: number; members: Record<string, MemberState>;
  flagged_long?: number;
}

/**
 * Multivariate level shift over the signals of one device (diagonal Hotelling-type statistic):
 * the mean of squared standardised shifts (robust window mean minus reference, over its normal
 * spread). A fault that moves several signals a little (a valve closing: flow, pressure and
 * temperatures) adds up even when no single signal crosses its own threshold. The threshold is
 * calibrated above the largest value seen on normal data.
 *
 * A second, sustained-shift stage catches a small shift of one signal that lasts (a partly
 * closed valve lowering flow by a few per cent for minutes): each member's exponential average
 * over a long span (one number of state, about as noisy as a plain mean over that many
 * readings) against a slow reference, in units of that difference's own normal swing (which
 * absorbs autocorrelation and slow wander, as in the level-shift detector).
 * Each member has its own limit, calibrated like the first stage's threshold (1.5 times the
 * largest value it showed in learning and warm-up, never below a floor): a temperature that
 * wanders by nature gets a wide one, a steady flow a tight one. The stage reports the member
 * furthest beyond its limit, so one signal's shift is not diluted by the unchanged ones. While
 * it reports, the references and swings are frozen.
 * A member's spread is never taken below its quantisation: a window average cannot locate a
 * level more finely than its readings' step allows (the rounding error of a step q averages q / 4
 * in absolute value, an sd of about q / sqrt(12)), so a quantised signal that sat on one value for
 * a while (a pressure read in 0.33 bar steps) does not get a spread of about 0, and a one-step move
 * is about 3 sd, not 10^10. The step is the configured resolution, else the smallest non-zero change
 * between consecutive readings (as the novelty and replay checks learn it).
 * Defaults (span 48 readings, reference span 1000 ticks, floor 11) were chosen on the public
 * SKAB valve1 runs (1 Hz pump test bed) with its anomaly-free file as learning history.
 */
export class GroupShiftDetector implements Detector<State> {
  readonly stateVersion = 1;
  readonly id: string;
  private readonly members = new Map<string, Member>();
  private n = 0;
  private cal = 0;
  private flagged = 0;
  private tick: number | null = null;
  /** Last tick and the typical interval, to start a fresh warm-up after a long gap. */
  private last: number | null = null;
  private dt = 0;
  private readonly W: number;
  private readonly alpha: number;
  private readonly margin: number;
  private readonly minT: number;
  private readonly relearn: number;
  private readonly warmup: number;
  private readonly L: number;
  private readonly alphaL: number;
  private readonly alphaW: number;
  private readonly minL: number;
  private flaggedL = 0;
  private readonly resolution: Readonly<Record<string, number>>;
  constructor(name: string, readonly points: readonly string[], opts: GroupShiftOptions = {}) {
    this.id = `group/${name}`;
    this.W = opts.window ?? 16;
    this.alpha = 1 / (opts.reference_span ?? 100);
    this.margin = opts.margin ?? 1.5;
    this.minT = opts.min_threshold ?? 9;
    this.relearn = opts.relearn_after ?? 2000;
    this.warmup = opts.warmup ?? 300;
    this.L = opts.long_window ?? 48;
    this.alphaL = 1 / (opts.long_reference_span ?? 1000);
    this.alphaW = 2 / (this.L + 1);
    this.minL = opts.long_min_threshold ?? 11;
    this.resolution = opts.resolution ?? {};
    for (const p of points) this.members.set(p, this.fresh(p));
  }
  private fresh(p: string): Member {
    const res = this.resolution[p];
    return {
      win: new SortedWindow(this.W), ref: null, spread: new SpreadTracker(0.005), d: 0, fresh: false,
      lm: 0, lsize: 0, base: null, bn: 0, lspread: new SpreadTracker(0.002), ld: 0, lcal: 0,
      prev: Number.NaN, step: res !== undefined && res > 0 ? res : Number.POSITIVE_INFINITY,
    };
  }
  /**
   * A member's short-window shift in units of its normal spread, the spread never below what its
   * reading step can resolve (q / 4 mean absolute rounding error) nor a relative 1e-9.
   */
  private z(m: Member): number {
    const q = m.step < Number.POSITIVE_INFINITY ? m.step / 4 : 0;
    return m.d / (1.25 * Math.max(m.spread.m, q, 1e-9 * (Math.abs(m.ref ?? 0) + 1) / 1.25));
  }
  observe(r: Reading, emit: Emit): void {
    this.add(r, emit);
  }
  train(r: Reading): void {
    this.add(r, null);
  }
  private add(r: Reading, emit: Emit | null): void {
    if (!this.members.has(r.point)) return;
    if (this.tick !== null && r.ts > this.tick) this.flush(emit);
    if (this.tick === null && this.last !== null && r.ts > this.last) {
      const gap = r.ts - this.last;
      if (this.dt > 0 && this.n > 10 && gap > Math.max(GAP_FACTOR, 1 / this.alpha) * this.dt) {
        for (const [p, old] of this.members) {
          const m = this.fresh(p);
          m.lcal = old.lcal; // how far this signal wanders in normal operation is long-term knowledge
          m.step = old.step;
          this.members.set(p, m);
        }
        this.n = 0;
        this.flagged = 0;
      } else {
        this.dt = this.dt === 0 ? gap : this.dt + 0.05 * (Math.min(gap, 4 * this.dt) - this.dt);
      }
    }
    this.tick = r.ts;
    const m = this.members.get(r.point)!; // after a gap reset: the fresh member, not the discarded one
    const change = Math.abs(r.value - m.prev); // NaN for the first reading: never below `step`
    if (change > 0 && change < m.step && !(r.point in this.resolution)) m.step = change;
    m.prev = r.value;
    m.win.push(r.value);
    if (this.L > 0) this.pushLong(m, r.value);
    if (!m.win.full()) return;
    const x = m.win.trimmedMean();
    if (m.ref === null) m.ref = x;
    m.d = x - m.ref;
    m.fresh = true;
  }
  private pushLong(m: Member, x: number): void {
    // A plain running mean over the first `L` readings, then exponential with weight 2 / (L + 1).
    m.lm += Math.max(this.alphaW, 1 / (m.lsize + 1)) * (x - m.lm);
    if (m.lsize < this.L) {
      m.lsize++;
      return;
    }
    if (m.base === null) m.base = m.lm;
    m.ld = m.lm - m.base;
  }
  /** A member's standardised long-window shift (0 until its swing has some history). */
  private zLong(m: Member): number {
    if (m.base === null || m.lspread.n < 30) return 0;
    return Math.min(1000, Math.abs(m.ld) / Math.max(m.lspread.m * 1.25, 1e-9 * (Math.abs(m.base) + 1)));
  }
  private limitLong(m: Member): number {
    return Math.max(this.minL, 1.5 * m.lcal);
  }
  /**
   * The latest short window still shows the member's long-window shift: its robust mean lies
   * nearer the shifted level than the usual one. The long average remembers a shift for a few
   * spans after it ended; the evidence ends when the readings are back (structural: the midpoint).
   */
  private stillShifted(m: Member): boolean {
    if (m.ref === null || m.base === null || !m.win.full()) return true;
    const recent = m.ref + m.d - m.base;
    return recent * Math.sign(m.ld) > Math.abs(m.ld) / 2;
  }
  /** Sustained-shift stage: the member furthest beyond its own limit, as [shift / limit, member]. */
  private longStat(): [number, string | null] {
    let best = 0;
    let who: string | null = null;
    for (const [p, m] of this.members) {
      const r = this.stillShifted(m) ? this.zLong(m) / this.limitLong(m) : 0;
      if (r > best) {
        best = r;
        who = p;
      }
    }
    return [best, who];
  }
  /** Every member that has readings has learned its swing over a few long windows. */
  private settledLong(): boolean {
    let any = false;
    for (const m of this.members.values()) {
      if (m.base === null) continue;
      if (m.lspread.n < 4 * this.L) return false;
      any = true;
    }
    return any;
  }
  /** Learns the slow references and swings (skipped while the stage reports: they stay frozen). */
  private learnLong(): void {
    for (const m of this.members.values()) {
      if (m.base === null) continue;
      m.lspread.update(m.ld);
      // A running mean at first, then exponential with the reference span.
      m.base += Math.max(this.alphaL, 1 / (m.bn + 2)) * m.ld;
      m.bn++;
    }
  }
  /** Evaluates the pending tick (all members' latest shifts). */
  flush(emit: Emit | null): void {
    if (this.tick === null) return;
    const ts = this.tick;
    this.tick = null;
    this.last = ts;
    let sum = 0;
    let k = 0;
    let top: [string, number] | null = null;
    for (const [p, m] of this.members) {
      if (!m.fresh || m.spread.n < 30) continue;
      const z = this.z(m);
      const z2 = Math.min(z * z, 400);
      sum += z2;
      k++;
      if (top === null || z2 > Math.abs(top[1]) ** 2) top = [p, z];
    }
    const T = k > 0 ? sum / k : 0;
    const limit = Math.max(this.minT, this.margin * this.cal);
    const training = emit === null || this.n < this.warmup;
    this.n++;
    if (this.L > 0) this.flushLong(ts, emit, training, T > limit && this.flagged < this.relearn && top !== null);
    if (!training && T > limit && this.flagged < this.relearn && top) {
      this.flagged++;
      const parts = [...this.members].filter(([, m]) => m.fresh && m.spread.n >= 30)
        .map(([p, m]) => [p, this.z(m)] as const)
        .sort((a, b) => Math.abs(b[1]) - Math.abs(a[1])).slice(0, 3)
        .map(([p, z]) => `${p} ${z > 0 ? "+" : ""}${fmt(z)} sd`).join(", ");
      emit({
        point: top[0], detector: "group_shift", ts, score: T / limit, observed: T, expected: limit,
        related: [...this.members.keys()].filter((p) => p !== top[0]),
        reason: `several signals of ${this.id.slice(6)} moved together (${parts}): combined shift ${fmt(T)} against at most ${fmt(limit)} in normal operation`,
      });
      return;
    }
    if (training && T > this.cal && this.n > 50) this.cal = Math.min(T, 100 * this.minT);
    if (this.flagged >= this.relearn) for (const m of this.members.values()) if (m.ref !== null) m.ref += m.d;
    this.flagged = 0;
    for (const m of this.members.values()) {
      if (!m.fresh || m.ref === null) continue;
      m.spread.update(m.d);
      m.ref += this.alpha * m.d;
    }
  }
  private flushLong(ts: number, emit: Emit | null, training: boolean, firstStageReports: boolean): void {
    const [S, who] = this.longStat();
    if (!training && emit !== null && S > 1 && who !== null && this.flaggedL < this.relearn) {
      this.flaggedL++;
      if (!firstStageReports) {
        const m = this.members.get(who)!;
        const lm = m.lm;
        const limit = this.limitLong(m);
        emit({
          point: who, detector: "group_shift", ts, score: S, observed: lm, expected: m.base,
          related: [...this.members.keys()].filter((p) => p !== who),
          reason: `${who} held a shifted level: averaging ${fmt(lm)} over its last ~${this.L} readings against ` +
            `a usual ${fmt(m.base)}, ${fmt(S * limit)} times its normal swing (at most ${fmt(limit)} in normal operation of ${this.id.slice(6)})`,
        });
      }
      return;
    }
    // Calibrated only once every swing has been learned over a few long windows: before that the
    // statistic measures the estimates settling, not the signals.
    if (training && this.settledLong()) for (const m of this.members.values()) m.lcal = Math.min(Math.max(m.lcal, this.zLong(m)), 100 * this.minL);
    if (this.flaggedL >= this.relearn) for (const m of this.members.values()) if (m.base !== null) m.base += m.ld;
    this.flaggedL = 0;
    this.learnLong();
  }
  snapshot(): State {
    const members: State["members"] = {};
    for (const [p, m] of this.members) {
      members[p] = {
        win: m.win.values(), ref: m.ref, spread: m.spread.toJSON(), d: m.d, fresh: m.fresh,
        lm: m.lm, lsize: m.lsize, base: m.base, bn: m.bn, lspread: m.lspread.toJSON(), ld: m.ld, lcal: m.lcal,
        step: m.step < Number.POSITIVE_INFINITY ? m.step : 0, prev: Number.isNaN(m.prev) ? null : m.prev,
      };
    }
    return { n: this.n, cal: this.cal, flagged: this.flagged, tick: this.tick, last: this.last, dt: this.dt, members, flagged_long: this.flaggedL };
  }
  restore(state: State, version: number): void {
    checkVersion(this.id, this.stateVersion, version);
    const s = obj(this.id, state);
    const members = obj(this.id, s.members);
    for (const [p, m] of this.members) {
      const e = members[p];
      if (e === undefined) {
        this.members.set(p, this.fresh(p));
        continue;
      }
      const o = obj(this.id, e);
      m.win.load(numArray(this.id, o.win, "win", this.W));
      m.ref = o.ref === null ? null : num(this.id, o.ref, "ref");
      m.spread.load(numArray(this.id, o.spread, "spread", 2));
      m.d = num(this.id, o.d, "d");
      if (typeof o.fresh !== "boolean") throw badState(this.id, "fresh");
      m.fresh = o.fresh;
      // Snapshots from before the sustained-shift stage have none of it: it starts empty.
      m.lm = o.lm === undefined ? 0 : num(this.id, o.lm, "lm");
      m.lsize = o.lsize === undefined ? 0 : num(this.id, o.lsize, "lsize");
      if (!Number.isInteger(m.lsize) || m.lsize < 0 || m.lsize > this.L) throw badState(this.id, "lsize");
      m.base = o.base === undefined || o.base === null ? null : num(this.id, o.base, "base");
      m.bn = o.bn === undefined ? 0 : num(this.id, o.bn, "bn");
      m.lspread.load(o.lspread === undefined ? [0, 0] : numArray(this.id, o.lspread, "lspread", 2));
      m.ld = o.ld === undefined ? 0 : num(this.id, o.ld, "ld");
      m.lcal = o.lcal === undefined ? 0 : num(this.id, o.lcal, "lcal");
      const step = o.step === undefined ? 0 : num(this.id, o.step, "step");
      if (step < 0) throw badState(this.id, "step");
      if (!(p in this.resolution)) m.step = step > 0 ? step : Number.POSITIVE_INFINITY;
      m.prev = o.prev === undefined || o.prev === null ? Number.NaN : num(this.id, o.prev, "prev");
    }
    this.n = num(this.id, s.n, "n");
    this.cal = num(this.id, s.cal, "cal");
    this.flagged = num(this.id, s.flagged, "flagged");
    this.tick = s.tick === null ? null : num(this.id, s.tick, "tick");
    this.last = s.last === null ? null : num(this.id, s.last, "last");
    this.dt = num(this.id, s.dt, "dt");
    this.flaggedL = s.flagged_long === undefined ? 0 : num(this.id, s.flagged_long, "flagged_long");
  }
}
