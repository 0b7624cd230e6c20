import type { Reading } from "../agent/core/readings";
import { checkVersion, fmt, type Detector, type Emit } from "./detector";

/** Physical range: a reading outside the configured min..max cannot be a true measurement. */
export class RangeDetector implements Detector<null> {
  readonly stateVersion = 1;
  readonly id: string;
  constructor(point: string, private readonly min: number, private readonly max: number) {
    this.id = `${point}/range`;
  }
  observe(r: Reading, emit: Emit): void {
    const v = r.value;
    if (v >= this.min && v <= this.max) return;
    const span = this.max - this.min || 1;
    const bound = v < this.min ? this.min : this.max;
    emit({
      point: r.point, detector: "range", ts: r.ts, score: 1 + (10 * Math.abs(v - bound)) / span,
      observed: v, expected: bound, strength: "physical",
      reason: `${r.point} reads ${fmt(v)}, outside its physical range ${fmt(this.min)}..${fmt(this.max)}`,
    });
  }
  snapshot(): null {
    return null;
  }
  restore(_state: null, version: number): void {
    checkVersion(this.id, this.stateVersion, version);
  }
}
