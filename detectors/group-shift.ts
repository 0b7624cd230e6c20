import type { Reading } from "../agent/pipeline";
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
}

interface Member { win: SortedWindow; ref: number | null; spread: SpreadTracker; d: number; fresh: boolean }
interface State { n: number; cal: number; flagged: number; tick: number | null; last: number | null; dt: number; members: Record<string, { win: number[]; ref: number | null; spread: number[]; d: number; fresh: boolean }> }

/**
 * Multivariate level shift over the signals of one device (diagonal Hotelling-type statistic):
 * the mean of squared standardised shifts (robust window mean minus reference, over its normal
 * spread). A fault that moves several signals a little (a valve closing: flow, pressure and
 * temperatures) adds up even when no single signal crosses its own threshold. The threshold is
 * calibrated above the largest value seen on normal data.
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
  constructor(name: string, readonly points: readonly string[], opts: GroupShiftOptions = {}) {
    this.id = `group/${name}`;
    this.W = opts.window ?? 16;
    this.alpha = 1 / (opts.reference_span ?? 100);
    this.margin = opts.margin ?? 1.5;
    this.minT = opts.min_threshold ?? 9;
    this.relearn = opts.relearn_after ?? 2000;
    this.warmup = opts.warmup ?? 300;
    for (const p of points) this.members.set(p, this.fresh());
  }
  private fresh(): Member {
    return { win: new SortedWindow(this.W), ref: null, spread: new SpreadTracker(0.005), d: 0, fresh: false };
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
      if (this.dt > 0 && this.n > 10 && gap > 50 * this.dt) {
        for (const p of this.members.keys()) this.members.set(p, this.fresh());
        this.n = 0;
        this.flagged = 0;
      } else {
        this.dt = this.dt === 0 ? gap : this.dt + 0.05 * (Math.min(gap, 4 * this.dt) - this.dt);
      }
    }
    this.tick = r.ts;
    const m = this.members.get(r.point)!; // after a gap reset: the fresh member, not the discarded one
    m.win.push(r.value);
    if (!m.win.full()) return;
    const x = m.win.trimmedMean();
    if (m.ref === null) m.ref = x;
    m.d = x - m.ref;
    m.fresh = true;
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
      const z = m.d / Math.max(m.spread.m * 1.25, 1e-9 * (Math.abs(m.ref ?? 0) + 1));
      const z2 = Math.min(z * z, 400);
      sum += z2;
      k++;
      if (top === null || z2 > Math.abs(top[1]) ** 2) top = [p, z];
    }
    const T = k > 0 ? sum / k : 0;
    const limit = Math.max(this.minT, this.margin * this.cal);
    const training = emit === null || this.n < this.warmup;
    this.n++;
    if (!training && T > limit && this.flagged < this.relearn && top) {
      this.flagged++;
      const parts = [...this.members].filter(([, m]) => m.fresh && m.spread.n >= 30)
        .map(([p, m]) => [p, m.d / Math.max(m.spread.m * 1.25, 1e-12)] as const)
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
  snapshot(): State {
    const members: State["members"] = {};
    for (const [p, m] of this.members) members[p] = { win: m.win.values(), ref: m.ref, spread: m.spread.toJSON(), d: m.d, fresh: m.fresh };
    return { n: this.n, cal: this.cal, flagged: this.flagged, tick: this.tick, last: this.last, dt: this.dt, members };
  }
  restore(state: State, version: number): void {
    checkVersion(this.id, this.stateVersion, version);
    const s = obj(this.id, state);
    const members = obj(this.id, s.members);
    for (const [p, m] of this.members) {
      const e = members[p];
      if (e === undefined) {
        this.members.set(p, this.fresh());
        continue;
      }
      const o = obj(this.id, e);
      m.win.load(numArray(this.id, o.win, "win", this.W));
      m.ref = o.ref === null ? null : num(this.id, o.ref, "ref");
      m.spread.load(numArray(this.id, o.spread, "spread", 2));
      m.d = num(this.id, o.d, "d");
      if (typeof o.fresh !== "boolean") throw badState(this.id, "fresh");
      m.fresh = o.fresh;
    }
    this.n = num(this.id, s.n, "n");
    this.cal = num(this.id, s.cal, "cal");
    this.flagged = num(this.id, s.flagged, "flagged");
    this.tick = s.tick === null ? null : num(this.id, s.tick, "tick");
    this.last = s.last === null ? null : num(this.id, s.last, "last");
    this.dt = num(this.id, s.dt, "dt");
  }
}
