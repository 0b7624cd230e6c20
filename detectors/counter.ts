import type { Reading } from "../agent/core/readings";
import { BaseDetector } from "./_base";
import { fmt, num, numOrNull, type Emit } from "./detector";

export interface CounterOptions {
  /** Largest possible increase per second (e.g. rated power in kWh/s), if known. */
  max_rate_per_s?: number;
  /** The register wraps to 0 after this value (e.g. 4294967295 x scale). */
  rollover_at?: number;
  /** Smallest step the register shows (0.1 for one decimal); learned when not given. */
  resolution?: number;
  /** Without a configured maximum: alarm above this multiple of the highest rate seen in normal operation. */
  factor?: number;
  warmup?: number;
}

interface State {
  n: number; last_ts: number | null; dt: number; last: number | null; prev_ts: number | null;
  peak: number; res: number;
}

/** A reading this many typical intervals after the previous one follows an outage of the meter. */
const OFFLINE_INTERVALS = 3;
/**
 * A counter restarting at most this share of its previous reading (plus a few steps) after an
 * outage is a new meter (an exchange), not a rollback: structural, a new register starts near 0.
 */
const NEW_METER_SHARE = 0.01;

/**
 * Counter sanity: an energy counter never runs backwards and never jumps beyond what is
 * physically possible.
 *
 * The jump limit is the configured maximum rate, else `factor` times the highest rate seen in
 * normal operation (a peak, not a mean: a counter that is idle most of the day, like street
 * lighting or an EV charger, has a mean rate far below its rate when on). Until the counter has
 * been seen moving there is no learned limit. Rates are taken over at least the typical reading
 * interval and allow one resolution step, so a quantised counter's single step is never a jump.
 *
 * A register wraps at its configured `rollover_at`, else at the next power of ten (an N-digit
 * display) when the wrapped increase is one the counter could have made.
 *
 * A meter exchanged while offline comes back near zero: that re-baselines (exchanges are routine
 * work); inside a maintenance window, or when the counter's reset register announces the reset,
 * the engine suppresses the finding (marked `reset`) and the counter is followed from its new
 * value. Any other step backwards is a finding.
 */
export class CounterDetector extends BaseDetector<State> {
  readonly stateVersion = 2;
  private last: number | null = null;
  private prevTs: number | null = null;
  private peak = 0;
  private res: number;
  constructor(point: string, private readonly opts: CounterOptions = {}) {
    super(point, "counter", opts.warmup ?? 0);
    this.res = opts.resolution ?? 0;
  }
  protected step(r: Reading, emit: Emit | null): void {
    const prev = this.last;
    const prevTs = this.prevTs;
    this.last = r.value;
    this.prevTs = r.ts;
    if (prev === null || prevTs === null) return;
    let d = r.value - prev;
    const roll = this.opts.rollover_at;
    const typical = this.clock.dt > 0 ? this.clock.dt : r.ts - prevTs;
    const gap = r.ts - prevTs;
    if (d < 0 && roll !== undefined && prev > 0.9 * roll && r.value < 0.1 * roll) d += roll;
    else if (d < 0 && roll === undefined) d += this.decimalWrap(prev, r.value, Math.max(gap, typical, 1) / 1000);
    if (d !== 0 && this.opts.resolution === undefined) {
      const a = Math.abs(d);
      if (this.res === 0 || a < this.res) this.res = a;
    }
    if (d < 0) {
      if (Math.abs(d) <= this.res * 0.5 + 1e-12) return; // register jitter below one step
      const offline = typical > 0 && gap > OFFLINE_INTERVALS * typical;
      const fresh = r.value <= NEW_METER_SHARE * Math.abs(prev) + 10 * this.res;
      if ((offline && fresh) || emit === null) return;
      // The step is the evidence: reported once (the incident's hysteresis keeps it open a
      // while), then the counter is followed from its new value.
      emit({
        point: r.point, detector: "counter", ts: r.ts, score: 1 + (Math.abs(d) / Math.max(Math.abs(prev), 1)) * 100,
        observed: r.value, expected: prev, strength: "physical", reset: fresh,
        reason: fresh
          ? `${r.point} counter was reset from ${fmt(prev)} to ${fmt(r.value)} while online and outside any maintenance window`
          : `${r.point} counter ran backwards from ${fmt(prev)} to ${fmt(r.value)}`,
      });
      return;
    }
    const dt = Math.max(gap, typical, 1) / 1000;
    // One resolution step is the smallest change the register can show.
    // (Less than 1 % of a step beyond it is the float arithmetic of scaled registers.)
    const excess = d - this.res;
    const rate = excess > 0.01 * this.res + 1e-12 ? excess / dt : 0;
    const hard = this.opts.max_rate_per_s;
    const limit = this.jumpLimit();
    if (emit !== null && rate > limit) {
      emit({
        point: r.point, detector: "counter", ts: r.ts, score: rate / limit, observed: r.value,
        expected: prev + limit * dt + this.res, strength: "physical",
        reason: `${r.point} counter jumped by ${fmt(d)} in ${fmt(gap / 1000)} s; at most ${fmt(limit * dt + this.res)} is possible` +
          (hard === undefined ? ` (${this.opts.factor ?? 4} x the highest rate seen, ${fmt(this.peak * 3600)}/h)` : ""),
      });
      return;
    }
    // Over a gap the rate is an average: it cannot show a higher peak than the shortest steps did.
    if (gap <= 2 * typical && rate > this.peak) this.peak = rate;
  }
  /**
   * Without a configured `rollover_at`, a register that shows N digits wraps at 10^N: a step from
   * within 1 % of the next power of ten to within 1 % of 0 whose wrapped increase the counter
   * could have made (at most the jump limit over the interval, one step allowed) is that wrap,
   * not a reset. Returns what to add to the step (0: no wrap). A reset from anywhere else, or one
   * the rate could not explain, stays a finding.
   */
  private decimalWrap(prev: number, value: number, seconds: number): number {
    if (!(prev > 0) || value < 0) return 0;
    const wrap = 10 ** Math.ceil(Math.log10(prev));
    if (prev < 0.99 * wrap || value > 0.01 * wrap) return 0;
    // Without a limit (never seen moving faster than one step per reading) the 1 % bands alone decide.
    return value + wrap - prev <= this.jumpLimit() * seconds + 1.01 * this.res ? wrap : 0;
  }
  /** Largest rate per second: the configured maximum, else `factor` x the peak seen (none until it has moved). */
  private jumpLimit(): number {
    return this.opts.max_rate_per_s ?? (this.peak > 0 ? (this.opts.factor ?? 4) * this.peak : Number.POSITIVE_INFINITY);
  }
  protected override onGap(): void {
    // Time continues; the next step is judged against the outage rules above.
  }
  protected save(): Omit<State, "n" | "last_ts" | "dt"> {
    return { last: this.last, prev_ts: this.prevTs, peak: this.peak, res: this.res };
  }
  protected load(s: Record<string, unknown>): void {
    this.last = numOrNull(this.id, s.last, "last");
    this.prevTs = numOrNull(this.id, s.prev_ts, "prev_ts");
    this.peak = num(this.id, s.peak, "peak");
    this.res = num(this.id, s.res, "res");
  }
}
