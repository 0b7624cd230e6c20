import type { Reading } from "../agent/core/readings";
import { LogHistogram } from "./_stats";
import { badState, checkVersion, fmt, num, numArray, numOrNull, obj, type Detector, type Emit } from "./detector";

/** A gap this many typical intervals long is a restart, not a step (as in the other detectors). */
const GAP_FACTOR = 50;

export interface RateOfChangeOptions {
  /** Hard limit in units per second (from the physics of the point), if known. */
  max_rate_per_s?: number;
  /** Alarm when a step exceeds this multiple of the learned 99.9th percentile step. */
  factor?: number;
  warmup?: number;
  /** Steps after which the learned distribution halves its weight (slow forgetting). */
  half_life?: number;
}

interface State { last: number | null; last_ts: number | null; hist: number[]; seen: number; q: number; dt?: number }

/**
 * Rate of change: a step between consecutive readings far beyond any step seen in normal
 * operation. The normal steps are kept in a fixed-size log-scale quantile sketch, so heavy-tailed
 * signals get a threshold from their own 99.9th percentile step, not from a mean.
 */
export class RateOfChangeDetector implements Detector<State> {
  readonly stateVersion = 2;
  readonly id: string;
  /** Previous value and time; each valid only when its flag is set (snapshot `null` otherwise). */
  private hasLast = false;
  private last = 0;
  private hasLastTs = false;
  private lastTs = 0;
  private readonly hist = new LogHistogram();
  private seen = 0;
  /** Cached 99.9th percentile (derived from the sketch, refreshed every 32 steps). */
  private q = 0;
  /** Typical interval between readings (ms): a reading after a far longer gap is not a step. */
  private dtTypical = 0;
  private readonly factor: number;
  private readonly warmup: number;
  private readonly halfLife: number;
  constructor(point: string, private readonly opts: RateOfChangeOptions = {}) {
    this.id = `${point}/rate_of_change`;
    this.factor = opts.factor ?? 3;
    this.warmup = opts.warmup ?? 200;
    this.halfLife = opts.half_life ?? 20_000;
  }
  train(r: Reading): void {
    this.step(r, null);
  }
  observe(r: Reading, emit: Emit): void {
    this.step(r, emit);
  }
  private step(r: Reading, emit: Emit | null): void {
    const prev = this.last;
    const prevTs = this.lastTs;
    const had = this.hasLast && this.hasLastTs;
    this.last = r.value;
    this.lastTs = r.ts;
    this.hasLast = this.hasLastTs = true;
    if (!had) return;
    const gap = r.ts - prevTs;
    // A new recording (time going backwards) or a restart after a long silence: the difference
    // to the last reading before it is not a rate of change.
    if (gap <= 0 || (this.dtTypical > 0 && gap > GAP_FACTOR * this.dtTypical)) return;
    this.dtTypical = this.dtTypical === 0 ? gap : this.dtTypical + 0.05 * (Math.min(gap, 4 * this.dtTypical) - this.dtTypical);
    const d = r.value - prev;
    const dt = Math.max(gap / 1000, 1e-3);
    const hard = this.opts.max_rate_per_s;
    if (emit !== null && hard !== undefined && Math.abs(d) / dt > hard) {
      emit({
        point: r.point, detector: "rate_of_change", ts: r.ts, score: Math.abs(d) / dt / hard + 1,
        observed: r.value, expected: prev + Math.sign(d) * hard * dt, strength: "physical",
        reason: `${r.point} changed by ${fmt(d)} in ${fmt(dt)} s, faster than physically possible (${fmt(hard)}/s)`,
      });
      return;
    }
    const limit = this.factor * this.q;
    if (emit !== null && this.hist.total >= this.warmup && limit > 0 && Math.abs(d) > limit) {
      emit({
        point: r.point, detector: "rate_of_change", ts: r.ts, score: Math.abs(d) / limit,
        observed: r.value, expected: prev,
        reason: `${r.point} jumped by ${fmt(d)} in one reading; 99.9 % of normal steps stay within ${fmt(this.q)}`,
      });
      return;
    }
    this.hist.add(d);
    this.seen++;
    if (this.seen % this.halfLife === 0) this.hist.decay();
    if (this.seen % 32 === 0 || this.hist.total < 64) this.q = this.hist.quantile(0.999);
  }
  snapshot(): State {
    return {
      last: this.hasLast ? this.last : null, last_ts: this.hasLastTs ? this.lastTs : null,
      hist: this.hist.toJSON(), seen: this.seen, q: this.q, dt: this.dtTypical,
    };
  }
  restore(state: State, version: number): void {
    checkVersion(this.id, this.stateVersion, version);
    const s = obj(this.id, state);
    const last = numOrNull(this.id, s.last, "last");
    this.hasLast = last !== null;
    this.last = last ?? 0;
    const lastTs = numOrNull(this.id, s.last_ts, "last_ts");
    this.hasLastTs = lastTs !== null;
    this.lastTs = lastTs ?? 0;
    try {
      this.hist.load(numArray(this.id, s.hist, "hist", 2 * LogHistogram.BINS));
    } catch {
      throw badState(this.id, "hist");
    }
    this.seen = num(this.id, s.seen, "seen");
    this.q = num(this.id, s.q, "q");
    this.dtTypical = s.dt === undefined ? 0 : num(this.id, s.dt, "dt"); // absent in older snapshots
  }
}
