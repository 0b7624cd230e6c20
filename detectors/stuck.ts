import type { Reading } from "../agent/core/readings";
import { BaseDetector } from "./_base";
import { badState, fmt, num, type Emit } from "./detector";

export interface StuckOptions {
  /** Values within this distance of the run's first value count as unchanged. */
  tolerance: number;
  /** Never report runs shorter than this. */
  min_run: number;
  /** Report when a run's surprise exceeds this multiple of the most surprising run seen in normal operation. */
  factor?: number;
  /** The register's step, if known (else learned from the changes between readings). */
  resolution?: number | undefined;
  warmup?: number;
}

interface State {
  n: number; last_ts: number | null; dt: number; ref: number; run: number; run_start: number; max_normal: number; flagged: number; changes: number;
  /** Absent in snapshots from before the repeat model: learned afresh. */
  model?: number[];
}

/**
 * Memory, in readings, of the signal's behaviour at its current operating point (the level-shift
 * detector's reference span; structural, not tuned).
 */
const SPAN = 100;
const DECAY = 1 - 1 / SPAN;
/** A change below this share of the mean change is sub-step jitter, not the register's step. */
const JITTER_SHARE = 1 / 8;

/**
 * Stuck or frozen value: a run of unchanged readings more surprising than any seen in normal
 * operation (and at least `min_run` readings long).
 *
 * How surprising a run is depends on how likely one more unchanged reading is at the signal's
 * current operating point, `p`; each unchanged reading is priced at -log2(p) bits, a run of `k`
 * at k x -log2(p). `p` is the larger of two estimates over the last ~SPAN readings (excluding the
 * run in progress, so a frozen sensor does not teach itself that repeats are normal):
 * - the share of readings that repeated the one before;
 * - what the signal's resolution allows: a reading stays on its step q while the signal's
 *   variation (sd s of its readings) keeps it in the same cell, at best (the true value mid-cell)
 *   erf(q / (2 sqrt(2) s)). A signal whose variation is comparable to one step (a flow read in
 *   1 L/min steps that sits near one value) can hold it for long stretches, which the repeat share
 *   of a burst of changes just before does not predict; the same sensor where it varies over
 *   several steps cannot. s and q are measured in blocks of SPAN readings, this one (once it has
 *   SPAN / 2) and the one before, and the larger of the two blocks' figures is used (a block
 *   that holds a change of operating point describes neither). The step is the configured
 *   resolution, else the smallest change in the block that is at least an eighth of the mean
 *   change (smaller ones are jitter below the step, such as an averaging transmitter's rounding).
 * The most surprising normal run (in bits, at the `p` in force when it happened) sets the limit:
 * `factor` (1.5) times it, turned back into a run length at the current `p`. At a steady operating
 * point this is the old rule (1.5 times the longest normal run, plus one); where repeats are more
 * likely, the allowed run grows in proportion. A signal never seen changing (at least 10 times)
 * is not reported at all.
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
  /** Surprise, in bits, of the most surprising normal run. */
  private maxBits = 0;
  /** Discounted counts of readings that repeated the one before, and of all readings (completed runs only). */
  private rz = 0;
  private rw = 0;
  /**
   * The readings of completed runs in blocks of SPAN, this one and the one before: count, mean,
   * sum of squared deviations, smallest change above jitter (Infinity: none). Blocks, not a
   * discounted average: a block after a change of operating point no longer holds the jump.
   */
  private cur: Block = newBlock();
  private prev: Block = newBlock();
  /** Mean size of a change (over the last SPAN changes). */
  private cbar = 0;
  private nChanges = 0;
  private readonly factor: number;
  constructor(point: string, private readonly opts: StuckOptions) {
    super(point, "stuck", opts.warmup ?? 100);
    this.factor = opts.factor ?? 1.5;
  }
  /**
   * What the resolution allows at best: erf(q / (2 sqrt(2) s)) in a block of at least SPAN / 2
   * readings, the larger of the two blocks' (0: no such block, or no step known).
   */
  private cellRate(): number {
    const res = this.opts.resolution;
    let best = 0;
    for (const b of [this.cur, this.prev]) {
      const q = res !== undefined && res > 0 ? res : b.q;
      if (b.n < SPAN / 2 || q === Number.POSITIVE_INFINITY) continue;
      const sd = Math.sqrt(b.m2 / b.n);
      best = Math.max(best, sd > 0 ? erf(q / (2 * Math.SQRT2 * sd)) : 1);
    }
    return best;
  }
  /** Probability that the next reading repeats the current one, at the current operating point. */
  repeatRate(): number {
    const seen = (this.rz + 0.5) / (this.rw + 1); // Krichevsky-Trofimov: never 0 or 1
    return Math.min(Math.max(seen, this.cellRate()), (this.rw + 0.5) / (this.rw + 1));
  }
  /** Surprise, in bits, of one more unchanged reading (the model changes only when a run ends). */
  private bits = 1;
  private updateBits(): void {
    this.bits = -Math.log2(this.repeatRate());
  }
  threshold(): number {
    return Math.max(this.opts.min_run, Math.ceil((this.factor * this.maxBits) / this.bits) + 1);
  }
  /** A per-class copy of BaseDetector.observe (one shape at the `step` call; see there). */
  override observe(r: Reading, emit: Emit): void {
    if (this.clock.advance(r.ts, this.n)) this.restart();
    this.step(r, this.n < this.warmup ? null : emit);
    this.n++;
  }
  /** A finished run of `k` readings at `x` (`k` - 1 repeats, then a change), in closed form. */
  private learnRun(k: number, x: number): void {
    const dk = DECAY ** k;
    const fill = (1 - dk) / (1 - DECAY); // weight of k readings, the latest counting 1
    const b = this.cur;
    const n = b.n + k;
    const delta = x - b.mean;
    b.m2 += (delta * delta * b.n * k) / n;
    b.mean += (delta * k) / n;
    b.n = n;
    const fill1 = (1 - DECAY ** (k - 1)) / (1 - DECAY);
    this.rz = this.rz * dk + fill1; // the run's first reading changed, the other k - 1 repeated
    this.rw = this.rw * dk + fill;
    if (b.n >= SPAN) {
      this.prev = b;
      this.cur = newBlock();
    }
  }
  private learnChange(c: number): void {
    this.nChanges = Math.min(this.nChanges + 1, SPAN);
    this.cbar += (c - this.cbar) / this.nChanges;
    if (c >= JITTER_SHARE * this.cbar && c < this.cur.q) this.cur.q = c;
    this.updateBits();
  }
  private noteNormal(k: number): void {
    const bits = k * this.bits;
    if (bits > this.maxBits) this.maxBits = bits;
    if (k > this.maxNormal) this.maxNormal = k;
  }
  protected step(r: Reading, emit: Emit | null): void {
    if (this.run > 0 && Math.abs(r.value - this.ref) <= this.opts.tolerance) {
      this.run++;
    } else {
      if (this.run > 0) {
        // A run reported as frozen is not normal behaviour: only its end is counted.
        if (!this.flagged) this.noteNormal(this.run);
        this.learnRun(this.flagged ? 1 : this.run, this.ref);
        this.learnChange(Math.abs(r.value - this.ref));
        this.changes = Math.min(this.changes + 1, 1_000_000);
      }
      this.ref = r.value;
      this.run = 1;
      this.runStart = r.ts;
      this.flagged = 0;
    }
    if (emit === null) {
      if (!this.flagged) this.noteNormal(this.run);
      return;
    }
    const t = this.threshold();
    if (this.run >= t && this.changes >= 10) {
      this.flagged = 1;
      const hours = (r.ts - this.runStart) / 3_600_000;
      emit({
        point: r.point, detector: "stuck", ts: r.ts, score: this.run / t, observed: r.value, expected: null,
        reason: `${r.point} frozen at ${fmt(this.ref)} for ${this.run} readings (${fmt(hours)} h); at its recent variation ` +
          `a reading repeats the one before with probability ${fmt(this.repeatRate())}, at which a normal run lasts ` +
          `at most ${t - 1} readings (the longest seen: ${this.maxNormal})`,
      });
    }
  }
  protected save(): Omit<State, "n" | "last_ts" | "dt"> {
    const inf = (x: number): number => (x < Number.POSITIVE_INFINITY ? x : 0);
    return {
      ref: this.ref, run: this.run, run_start: this.runStart, max_normal: this.maxNormal, flagged: this.flagged, changes: this.changes,
      model: [this.maxBits, this.rz, this.rw, this.cbar, this.nChanges, ...[this.cur, this.prev].flatMap((b) => [b.n, b.mean, b.m2, inf(b.q)])],
    };
  }
  protected load(s: Record<string, unknown>): void {
    this.ref = num(this.id, s.ref, "ref");
    this.run = num(this.id, s.run, "run");
    this.runStart = num(this.id, s.run_start, "run_start");
    this.maxNormal = num(this.id, s.max_normal, "max_normal");
    this.flagged = num(this.id, s.flagged, "flagged");
    this.changes = num(this.id, s.changes, "changes");
    // Snapshots from before the repeat model: learned afresh (the longest run at 1 bit a reading).
    const m = s.model === undefined ? [this.maxNormal, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] : s.model;
    const ok = (x: unknown, i: number): boolean => typeof x === "number" && Number.isFinite(x) && (x >= 0 || i === 6 || i === 10); // the means
    if (!Array.isArray(m) || m.length !== 13 || !m.every(ok)) throw badState(this.id, "model");
    const v = m as number[];
    if (v[1]! > v[2]! + 1e-9) throw badState(this.id, "model");
    [this.maxBits, this.rz, this.rw, this.cbar, this.nChanges] = v as [number, number, number, number, number];
    const block = (i: number): Block => ({ n: v[i]!, mean: v[i + 1]!, m2: v[i + 2]!, q: v[i + 3]! > 0 ? v[i + 3]! : Number.POSITIVE_INFINITY });
    this.cur = block(5);
    this.prev = block(9);
    this.updateBits();
  }
}

interface Block { n: number; mean: number; m2: number; q: number }
function newBlock(): Block {
  return { n: 0, mean: 0, m2: 0, q: Number.POSITIVE_INFINITY };
}

/** Error function (Abramowitz and Stegun 7.1.26, absolute error below 1.5e-7). */
function erf(x: number): number {
  const t = 1 / (1 + 0.3275911 * Math.abs(x));
  const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return x >= 0 ? y : -y;
}
