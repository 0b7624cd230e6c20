import type { Reading } from "../agent/pipeline";
/** A gap this many typical intervals long starts a fresh warm-up. */
const GAP_FACTOR = 50;

import { badState, checkVersion, obj, type Detector, type Emit } from "./detector";

/**
 * Shared plumbing: warm-up (readings before a detector may report), training mode, and
 * version-checked restore. Subclasses implement `step`, `save` and `load`.
 */
export abstract class BaseDetector<S> implements Detector<S> {
  abstract readonly stateVersion: number;
  readonly id: string;
  /** Readings seen since the last (re-)warm-up, training included. */
  protected n = 0;
  /** Time of the previous reading and the typical interval between readings (ms). */
  protected lastTs: number | null = null;
  protected dtTypical = 0;
  constructor(point: string, kind: string, protected readonly warmup: number) {
    this.id = `${point}/${kind}`;
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

  private gap(r: Reading): void {
    const last = this.lastTs;
    this.lastTs = r.ts;
    if (last === null) return;
    const dt = r.ts - last;
    if (dt <= 0) return;
    if (this.dtTypical > 0 && this.n > 10 && dt > GAP_FACTOR * this.dtTypical) {
      this.onGap();
      this.n = 0;
      return;
    }
    // A slow-moving typical interval that is robust to the odd long gap.
    this.dtTypical = this.dtTypical === 0 ? dt : this.dtTypical + 0.05 * (Math.min(dt, 4 * this.dtTypical) - this.dtTypical);
  }

  observe(r: Reading, emit: Emit): void {
    this.gap(r);
    this.step(r, this.n < this.warmup ? null : emit);
    this.n++;
  }
  train(r: Reading): void {
    this.gap(r);
    this.step(r, null);
    this.n++;
  }
  snapshot(): S {
    return { n: this.n, last_ts: this.lastTs, dt: this.dtTypical, ...this.save() } as S;
  }
  restore(state: S, version: number): void {
    checkVersion(this.id, this.stateVersion, version);
    const s = obj(this.id, state);
    if (typeof s.n !== "number" || !Number.isSafeInteger(s.n) || s.n < 0) throw badState(this.id, "n");
    if (s.last_ts !== null && (typeof s.last_ts !== "number" || !Number.isFinite(s.last_ts))) throw badState(this.id, "last_ts");
    if (typeof s.dt !== "number" || !Number.isFinite(s.dt)) throw badState(this.id, "dt");
    this.load(s);
    this.n = s.n;
    this.lastTs = s.last_ts;
    this.dtTypical = s.dt;
  }
}
