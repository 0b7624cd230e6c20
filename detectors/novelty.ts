import type { Reading } from "../agent/core/readings";
import { BaseDetector } from "./_base";
import { badState, fmt, numOrNull, type Emit } from "./detector";

export interface NoveltyOptions {
  /**
   * Report a reading beyond the highest (or lowest) value ever seen by more than this share of
   * the signal's whole historical span (max - min).
   */
  margin?: number;
  /** Readings before reporting: the envelope needs a representative stretch first. */
  warmup?: number;
}

interface State {
  n: number; last_ts: number | null; dt: number; lo: number | null; hi: number | null; since: number | null;
  /** Previous value and the resolution (smallest non-zero change seen; 0: none yet). Absent in older snapshots. */
  last?: number | null; res?: number;
}

/**
 * The envelope must span at least a day of history before it reports: a signal's range over a
 * few minutes or hours (a short test run, a fresh install) has not seen its daily cycle yet.
 */
const MIN_HISTORY_MS = 86_400_000;

/**
 * Novelty against everything seen so far: the signal's historical envelope (lowest and highest
 * value since it was first seen, learning history included). A reading that leaves it by more
 * than `margin` of its span is something the signal has never done, whatever its short-term
 * statistics say; many real incidents (a runaway, a failure, a spoofed value) look exactly like
 * that. The envelope then widens to take the reading in, so a signal that keeps rising alarms
 * again only when it goes a further margin beyond: alarms are self-limiting (each one widens
 * the envelope, so their number grows with the log of the span, not with time). A slow ramp
 * whose steps stay inside the margin widens the envelope without alarming: that is the drift
 * detector's case. Five numbers of
 * state, O(1) per reading.
 *
 * A quantised signal (a sensor or register with a coarse resolution) cannot leave its envelope by
 * less than one resolution step: a reading one step beyond the highest value is the smallest change
 * the signal can show, as much the rounding of a value just past the old extreme as something new.
 * The margin is therefore never below one and a half times the signal's resolution (halfway to the
 * second step, so a value written with rounded decimals is classed the same either way: one step
 * beyond never alarms, two do), the resolution being the smallest non-zero change between
 * consecutive readings the signal has shown (it can only shrink, so no reading can widen it); for a
 * signal with a fine resolution that floor is far below the margin and changes nothing.
 *
 * Constants: margin 0.05 and warm-up 300 readings were chosen on the public NAB corpus (event F1
 * was flat for margins 0.02 to 0.05 and warm-ups 150 to 300). The resolution floor's 1.5 steps is
 * structural (halfway between one step and two), not tuned on any data set; one step of the public
 * SKAB valve1 runs' quantised pressure (0.33) past its learned maximum is what it stops reporting.
 */
export class NoveltyDetector extends BaseDetector<State> {
  readonly stateVersion = 1;
  private lo: number | null = null;
  private hi: number | null = null;
  /** Time of the first reading in the envelope. */
  private since: number | null = null;
  /**
   * Previous value (NaN: none yet) and the resolution, the smallest non-zero step (Infinity: none
   * yet; 0 in the snapshot). NaN and Infinity keep the per-reading update to one comparison.
   */
  private last = Number.NaN;
  private res = Number.POSITIVE_INFINITY;
  private readonly margin: number;
  constructor(point: string, opts: NoveltyOptions = {}) {
    super(point, "novelty", opts.warmup ?? 300);
    this.margin = opts.margin ?? 0.05;
  }
  /** A per-class copy of BaseDetector.observe (one shape at the `step` call; see there). */
  override observe(r: Reading, emit: Emit): void {
    if (this.clock.advance(r.ts, this.n)) this.restart();
    this.step(r, this.n < this.warmup ? null : emit);
    this.n++;
  }
  protected step(r: Reading, emit: Emit | null): void {
    const x = r.value;
    const step = Math.abs(x - this.last); // NaN for the first reading: never below `res`
    this.last = x;
    if (step < this.res && step > 0) this.res = step;
    const lo = this.lo;
    const hi = this.hi;
    if (lo === null || hi === null || this.since === null) {
      this.lo = this.hi = x;
      this.since = r.ts;
      return;
    }
    if (x >= lo && x <= hi) return;
    const span = hi - lo;
    if (emit !== null && r.ts - this.since >= MIN_HISTORY_MS && span > 1e-9 * (Math.abs(hi) + Math.abs(lo) + 1)) {
      const bound = x > hi ? hi : lo;
      const score = Math.abs(x - bound) / Math.max(this.margin * span, this.res < Number.POSITIVE_INFINITY ? 1.5 * this.res : 0);
      if (score > 1) {
        emit({
          point: r.point, detector: "novelty", ts: r.ts, score, observed: x, expected: bound,
          reason: `${r.point} at ${fmt(x)} is ${x > hi ? "above the highest" : "below the lowest"} value it has ever had ` +
            `(${fmt(bound)}; historical range ${fmt(lo)}..${fmt(hi)})`,
        });
      }
    }
    if (x > hi) this.hi = x;
    else this.lo = x;
  }
  protected save(): Omit<State, "n" | "last_ts" | "dt"> {
    return {
      lo: this.lo, hi: this.hi, since: this.since,
      last: Number.isNaN(this.last) ? null : this.last, res: this.res < Number.POSITIVE_INFINITY ? this.res : 0,
    };
  }
  protected load(s: Record<string, unknown>): void {
    const lo = numOrNull(this.id, s.lo, "lo");
    const hi = numOrNull(this.id, s.hi, "hi");
    const since = numOrNull(this.id, s.since, "since");
    if ((lo === null) !== (hi === null) || (lo === null) !== (since === null) || (lo !== null && hi !== null && lo > hi)) throw badState(this.id, "lo/hi");
    this.lo = lo;
    this.hi = hi;
    this.since = since;
    // Snapshots from before the resolution floor have neither: it is learned afresh.
    const last = s.last === undefined ? null : numOrNull(this.id, s.last, "last");
    this.last = last ?? Number.NaN;
    const res = s.res === undefined ? 0 : numOrNull(this.id, s.res, "res");
    if (res === null || res < 0) throw badState(this.id, "res");
    this.res = res > 0 ? res : Number.POSITIVE_INFINITY;
  }
}
