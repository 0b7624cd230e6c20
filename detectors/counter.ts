import type { Reading } from "../agent/pipeline";
import { BaseDetector } from "./_base";
import { SpreadTracker } from "./_stats";
import { fmt, num, numArray, numOrNull, type Emit } from "./detector";

export interface CounterOptions {
  /** Largest possible increase per second (e.g. rated power in kWh/s), if known. */
  max_rate_per_s?: number;
  /** The register wraps to 0 after this value (e.g. 4294967295 x scale). */
  rollover_at?: number;
  /** Without a configured maximum: alarm above this multiple of the learned mean rate. */
  factor?: number;
  warmup?: number;
}

interface State { n: number; last_ts: number | null; dt: number; last: number | null; prev_ts: number | null; q: number[] }

/** Counter sanity: an energy counter never runs backwards and never jumps beyond what is physically possible. */
export class CounterDetector extends BaseDetector<State> {
  readonly stateVersion = 1;
  private last: number | null = null;
  private prevTs: number | null = null;
  private readonly q = new SpreadTracker(0.005);
  constructor(point: string, private readonly opts: CounterOptions = {}) {
    super(point, "counter", opts.warmup ?? 0);
  }
  protected step(r: Reading, emit: Emit | null): void {
    const prev = this.last;
    const prevTs = this.prevTs;
    if (prev === null || prevTs === null) {
      this.last = r.value;
      this.prevTs = r.ts;
      return;
    }
    let d = r.value - prev;
    const roll = this.opts.rollover_at;
    if (d < 0 && roll !== undefined && prev > 0.9 * roll && r.value < 0.1 * roll) d += roll;
    const dt = Math.max((r.ts - prevTs) / 1000, 1e-3);
    if (emit !== null && d < 0) {
      // Keep the high-water mark: a rolled-back counter stays flagged until it passes it again.
      emit({
        point: r.point, detector: "counter", ts: r.ts, score: 1 + Math.abs(d) / Math.max(Math.abs(prev), 1) * 100,
        observed: r.value, expected: prev, strength: "physical",
        reason: `${r.point} counter ran backwards from ${fmt(prev)} to ${fmt(r.value)}`,
      });
      return;
    }
    const hard = this.opts.max_rate_per_s;
    const learned = (this.opts.factor ?? 10) * this.q.m;
    const limit = hard ?? (this.q.n >= 50 && learned > 0 ? learned : Number.POSITIVE_INFINITY);
    if (emit !== null && d / dt > limit) {
      emit({
        point: r.point, detector: "counter", ts: r.ts, score: d / dt / limit, observed: r.value,
        expected: prev + limit * dt, strength: "physical",
        reason: `${r.point} counter jumped by ${fmt(d)} in ${fmt(dt)} s; at most ${fmt(limit * dt)} is possible`,
      });
    } else if (d >= 0) {
      this.q.update(d / dt);
    }
    this.last = r.value;
    this.prevTs = r.ts;
  }
  protected override onGap(): void {
    this.last = null; // the counter may legitimately have moved on (or been reset) while offline
    this.prevTs = null;
  }
  protected save(): Omit<State, "n" | "last_ts" | "dt"> {
    return { last: this.last, prev_ts: this.prevTs, q: this.q.toJSON() };
  }
  protected load(s: Record<string, unknown>): void {
    this.last = numOrNull(this.id, s.last, "last");
    this.prevTs = numOrNull(this.id, s.prev_ts, "prev_ts");
    this.q.load(numArray(this.id, s.q, "q", 2));
    num(this.id, this.q.n, "q.n");
  }
}
