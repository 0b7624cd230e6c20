import type { Reading } from "../agent/core/readings";
import { BaseDetector } from "./_base";
import { fmt, num, type Emit } from "./detector";

export interface StuckOptions {
  /** Values within this distance of the run's first value count as unchanged. */
  tolerance: number;
  /** Never report runs shorter than this. */
  min_run: number;
  /** Report when a run exceeds this multiple of the longest run seen in normal operation. */
  factor?: number;
  warmup?: number;
}

interface State { n: number; last_ts: number | null; dt: number; ref: number; run: number; run_start: number; max_normal: number; flagged: number; changes: number }

/**
 * Stuck or frozen value: a run of unchanged readings longer than any seen in normal operation
 * (and at least `min_run`). Learning the longest normal run keeps naturally flat signals quiet,
 * and a signal never seen changing (at least 10 times) is not reported at all.
 */
export class StuckDetector extends BaseDetector<State> {
  readonly stateVersion = 1;
  private ref = 0;
  private run = 0;
  private runStart = 0;
  private maxNormal = 0;
  private flagged = 0;
  /** Times the value has changed: a signal never seen alive cannot be reported frozen. */
  private changes = 0;
  private readonly factor: number;
  constructor(point: string, private readonly opts: StuckOptions) {
    super(point, "stuck", opts.warmup ?? 100);
    this.factor = opts.factor ?? 1.5;
  }
  threshold(): number {
    return Math.max(this.opts.min_run, Math.ceil(this.factor * this.maxNormal) + 1);
  }
  /** A per-class copy of BaseDetector.observe (one shape at the `step` call; see there). */
  override observe(r: Reading, emit: Emit): void {
    if (this.clock.advance(r.ts, this.n)) this.restart();
    this.step(r, this.n < this.warmup ? null : emit);
    this.n++;
  }
  protected step(r: Reading, emit: Emit | null): void {
    if (this.run > 0 && Math.abs(r.value - this.ref) <= this.opts.tolerance) {
      this.run++;
    } else {
      if (!this.flagged && this.run > this.maxNormal) this.maxNormal = this.run;
      if (this.run > 0) this.changes = Math.min(this.changes + 1, 1_000_000);
      this.ref = r.value;
      this.run = 1;
      this.runStart = r.ts;
      this.flagged = 0;
    }
    if (emit === null) {
      if (this.run > this.maxNormal && !this.flagged) this.maxNormal = this.run;
      return;
    }
    const t = this.threshold();
    if (this.run >= t && this.changes >= 10) {
      this.flagged = 1;
      const hours = (r.ts - this.runStart) / 3_600_000;
      emit({
        point: r.point, detector: "stuck", ts: r.ts, score: this.run / t, observed: r.value, expected: null,
        reason: `${r.point} frozen at ${fmt(this.ref)} for ${this.run} readings (${fmt(hours)} h); ` +
          `in normal operation it never stayed unchanged for more than ${this.maxNormal}`,
      });
    }
  }
  protected save(): Omit<State, "n" | "last_ts" | "dt"> {
    return { ref: this.ref, run: this.run, run_start: this.runStart, max_normal: this.maxNormal, flagged: this.flagged, changes: this.changes };
  }
  protected load(s: Record<string, unknown>): void {
    this.ref = num(this.id, s.ref, "ref");
    this.run = num(this.id, s.run, "run");
    this.runStart = num(this.id, s.run_start, "run_start");
    this.maxNormal = num(this.id, s.max_normal, "max_normal");
    this.flagged = num(this.id, s.flagged, "flagged");
    this.changes = num(this.id, s.changes, "changes");
  }
}
