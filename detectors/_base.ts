import type { Reading } from "../agent/core/readings";
/**
 * A gap at least this many typical intervals long starts a fresh warm-up; a detector whose
 * baseline adapts more slowly (a reference span of more readings) needs a gap longer than that
 * span: a short outage of a fast recording is not a new recording.
 */
export const GAP_FACTOR = 50;

import { badState, checkVersion, obj, type Detector, type Emit } from "./detector";

/**
 * Time of the previous reading and the typical interval between readings (ms). A separate
 * small object so the per-reading update runs on one object shape whatever the detector, and
 * the previous time is a plain number with a flag (no boxed number per reading).
 */
export class GapClock {
  /** False until the first reading (the snapshot's `last_ts: null`). */
  has = false;
  last = 0;
  dt = 0;
  /** Typical intervals that make a gap (at least GAP_FACTOR). */
  factor = GAP_FACTOR;
  /** Records a reading at `ts`; true when it follows a gap that starts a fresh warm-up. */
  advance(ts: number, n: number): boolean {
    const had = this.has;
    const last = this.last;
    this.has = true;
    this.last = ts;
    if (!had) return false;
    const dt = ts - last;
    if (dt <= 0) return false;
    if (this.dt > 0 && n > 10 && dt > this.factor * this.dt) return true;
    // A slow-moving typical interval that is robust to the odd long gap.
    this.dt = this.dt === 0 ? dt : this.dt + 0.05 * (Math.min(dt, 4 * this.dt) - this.dt);
    return false;
  }
}

/**
 * Shared plumbing: warm-up (readings before a detector may report), training mode, and
 * version-checked restore. Subclasses implement `step`, `save` and `load`.
 */
export abstract class BaseDetector<S> implements Detector<S> {
  abstract readonly stateVersion: number;
  readonly id: string;
  /** Readings seen since the last (re-)warm-up, training included. */
  protected n = 0;
  /** Time of the previous reading and the typical interval between readings. */
  protected readonly clock = new GapClock();
  /**
   * `memory`: the time constant, in readings, of the detector's short-term baseline; a gap
   * restarts it only when longer than that (and than GAP_FACTOR intervals): within its memory
   * the process has not moved on from what the baseline describes.
   */
  constructor(point: string, kind: string, protected readonly warmup: number, memory = 0) {
    this.id = `${point}/${kind}`;
    this.clock.factor = Math.max(GAP_FACTOR, memory);
  }
  /** `emit` is null while training: update baselines unconditionally, report nothing. */
  protected abstract step(r: Reading, emit: Emit | null): void;
  protected abstract save(): Omit<S, "n" | "last_ts" | "dt">;
  protected abstract load(s: Record<string, unknown>): void;
  /**
   * Called after a gap in the data far longer than the usual interval (a restart after days
   * offline, a new recording): forget short-term baselines so they are re-learned during a
   * fresh warm-up. Long-term knowledge (profiles, longest normal runs) is kept.
   */
  protected onGap(): void {}

  /** After maintenance: forget short-term baselines and warm up again. */
  rebaseline(): void {
    this.restart();
  }

  /** A long gap: forget short-term baselines and warm up again. */
  protected restart(): void {
    this.onGap();
    this.n = 0;
  }

  /*
   * The per-signal detectors override `observe` with a copy of this body: a method shared by
   * every subclass sees all their shapes at its call of `step` (a megamorphic call per reading),
   * a per-class copy sees one.
   */
  observe(r: Reading, emit: Emit): void {
    if (this.clock.advance(r.ts, this.n)) this.restart();
    this.step(r, this.n < this.warmup ? null : emit);
    this.n++;
  }
  train(r: Reading): void {
    if (this.clock.advance(r.ts, this.n)) this.restart();
    this.step(r, null);
    this.n++;
  }
  snapshot(): S {
    const c = this.clock;
    return { n: this.n, last_ts: c.has ? c.last : null, dt: c.dt, ...this.save() } as S;
  }
  restore(state: S, version: number): void {
    checkVersion(this.id, this.stateVersion, version);
    const s = obj(this.id, state);
    if (typeof s.n !== "number" || !Number.isSafeInteger(s.n) || s.n < 0) throw badState(this.id, "n");
    if (s.last_ts !== null && (typeof s.last_ts !== "number" || !Number.isFinite(s.last_ts))) throw badState(this.id, "last_ts");
    if (typeof s.dt !== "number" || !Number.isFinite(s.dt)) throw badState(this.id, "dt");
    this.load(s);
    this.n = s.n;
    this.clock.has = s.last_ts !== null;
    this.clock.last = s.last_ts ?? 0;
    this.clock.dt = s.dt;
  }
}
