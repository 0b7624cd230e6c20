import type { Reading } from "../agent/core/readings";
import { BaseDetector } from "./_base";
import { SortedWindow, SpreadTracker } from "./_stats";
import { fmt, num, numArray, type Emit } from "./detector";

export interface LevelShiftOptions {
  /** Readings in the short (median) window. */
  window?: number;
  /** Time constant, in readings, of the reference level. */
  reference_span?: number;
  /** Alarm when |short mean - reference| exceeds this multiple of its normal mean absolute value. */
  factor?: number;
  /** Accept a new level after this many consecutive flagged readings. */
  relearn_after?: number;
  /** Report a shift for its first this many readings only (a persisting level is not re-reported). */
  report_for?: number;
  warmup?: number;
}

interface State {
  n: number; last_ts: number | null; dt: number; win: number[]; ref: number | null; q: number[]; flagged: number; last: number | null; step: number;
  /** The learning history's normal swing (absent in older snapshots: none). */
  q_learned?: number;
}

/**
 * Robust level shift: the interquartile mean of the last `window` readings against a slowly tracked
 * reference level. The threshold is calibrated on the statistic's own normal spread (mean
 * |short mean - reference| in normal operation), which accounts for autocorrelation. The spread
 * learned from the learning history is a floor: a quiet live stretch (a few hundred readings of
 * a new recording) shows less of the signal's normal wander than days of history do.
 */
export class LevelShiftDetector extends BaseDetector<State> {
  readonly stateVersion = 1;
  private readonly win: SortedWindow;
  /** Reference level, valid when `hasRef` (snapshot `null` otherwise). */
  private hasRef = false;
  private ref = 0;
  private readonly q = new SpreadTracker(0.005);
  private flagged = 0;
  /** The normal swing at the end of the learning history: live data never narrows it below that. */
  private qLearned = 0;
  /** Previous value and the mean size of non-zero steps: a quantised signal's resolution floor. */
  private hasLast = false;
  private last = 0;
  private stepSize = 0;
  private readonly alpha: number;
  private readonly factor: number;
  private readonly relearn: number;
  private readonly reportFor: number;
  /**
   * Set by the engine while a site relation of this point is broken: the shift contradicts the
   * physics, so it is not the new normal; it keeps being reported and is never accepted.
   */
  disputed = false;
  constructor(point: string, opts: LevelShiftOptions = {}) {
    super(point, "level_shift", opts.warmup ?? 300, opts.reference_span ?? 100);
    this.win = new SortedWindow(opts.window ?? 16);
    this.alpha = 1 / (opts.reference_span ?? 100);
    this.factor = opts.factor ?? 8;
    this.relearn = opts.relearn_after ?? 500;
    // One short window's worth of readings: structural (the shift is then fully inside the window).
    this.reportFor = opts.report_for ?? opts.window ?? 16;
  }
  override train(r: Reading): void {
    super.train(r);
    this.qLearned = this.q.m;
  }
  /** A per-class copy of BaseDetector.observe (one shape at the `step` call; see there). */
  override observe(r: Reading, emit: Emit): void {
    if (this.clock.advance(r.ts, this.n)) this.restart();
    this.step(r, this.n < this.warmup ? null : emit);
    this.n++;
  }
  protected step(r: Reading, emit: Emit | null): void {
    const hadPrev = this.hasLast;
    const prevValue = this.last;
    this.hasLast = true;
    this.last = r.value;
    this.win.push(r.value);
    if (!this.win.full()) return;
    const m = this.win.trimmedMean();
    if (!this.hasRef) {
      this.hasRef = true;
      this.ref = m;
      return;
    }
    const d = m - this.ref;
    // A shift smaller than a quarter of the signal's usual step is quantisation, not a shift.
    const limit = this.factor * Math.max(this.q.m, this.qLearned, this.stepSize / 4, 1e-9 * (Math.abs(this.ref) + 1));
    if (emit !== null && Math.abs(d) > limit && (this.flagged < this.relearn || this.disputed)) {
      // A shift is reported while it is new; a level that persists is the signal's new normal
      // and is not reported again (it is accepted after `relearn_after` readings), unless it
      // breaks a site relation: then it is reported, and never accepted, while that lasts.
      if (this.disputed) this.flagged = Math.min(this.flagged + 1, this.relearn - 1);
      else this.flagged++;
      if (this.flagged > this.reportFor && !this.disputed) return;
      emit({
        point: r.point, detector: "level_shift", ts: r.ts, score: Math.abs(d) / limit, observed: m, expected: this.ref,
        reason: `${r.point} level moved to ${fmt(m)} (robust mean of last ${this.win.capacity}); ` +
          `its usual level is ${fmt(this.ref)} and its normal swing is ${fmt(this.q.m)}`,
      });
      return;
    }
    if (this.flagged >= this.relearn) {
      // The new level is accepted: it is the reference now, not a deviation to learn from.
      this.ref = m;
      this.flagged = 0;
    } else {
      this.flagged = 0;
      this.q.update(d);
      this.ref += this.alpha * d;
    }
    if (hadPrev && r.value !== prevValue) {
      const a = Math.abs(r.value - prevValue);
      this.stepSize = this.stepSize === 0 ? a : this.stepSize + 0.01 * (Math.min(a, 4 * this.stepSize) - this.stepSize);
    }
  }
  protected override onGap(): void {
    this.win.load([]);
    this.hasRef = false;
    this.ref = 0;
    // The normal swing is the signal's, not the recording's: kept, like other long-term knowledge
    // (re-learned from a few hundred readings, it understates the slow wander of a long history).
    this.flagged = 0;
    this.hasLast = false;
    this.last = 0;
  }
  protected save(): Omit<State, "n" | "last_ts" | "dt"> {
    return {
      win: this.win.values(), ref: this.hasRef ? this.ref : null, q: this.q.toJSON(), flagged: this.flagged,
      last: this.hasLast ? this.last : null, step: this.stepSize, q_learned: this.qLearned,
    };
  }
  protected load(s: Record<string, unknown>): void {
    this.win.load(numArray(this.id, s.win, "win", this.win.capacity));
    const ref = s.ref === null ? null : num(this.id, s.ref, "ref");
    this.hasRef = ref !== null;
    this.ref = ref ?? 0;
    this.q.load(numArray(this.id, s.q, "q", 2));
    this.flagged = num(this.id, s.flagged, "flagged");
    const last = s.last === null ? null : num(this.id, s.last, "last");
    this.hasLast = last !== null;
    this.last = last ?? 0;
    this.stepSize = num(this.id, s.step, "step");
    this.qLearned = s.q_learned === undefined ? 0 : num(this.id, s.q_learned, "q_learned");
  }
}
