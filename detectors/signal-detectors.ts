/** Builds the per-signal detector set for one point from its kind and configuration. */
import { CounterDetector } from "./counter";
import type { Detector } from "./detector";
import { EwmaCusumDetector } from "./ewma-cusum";
import { KIND_DEFAULTS, type SignalKind } from "./kinds";
import { LevelShiftDetector } from "./level-shift";
import { NoveltyDetector } from "./novelty";
import { RangeDetector } from "./range";
import { RateOfChangeDetector } from "./rate-of-change";
import { ReplayDetector } from "./replay";
import { SeasonalDetector } from "./seasonal";
import { StuckDetector } from "./stuck";

/** What the detectors need to know about a signal (a configured point or a CSV column). */
export interface SignalSpec {
  kind: SignalKind;
  range?: { min: number; max: number } | undefined;
  max_rate_per_s?: number | undefined;
  rollover_at?: number | undefined;
  stuck_tolerance?: number | undefined;
  /** Smallest step the register shows. */
  resolution?: number | undefined;
  /** An on/off load: steps between idle and on are its normal behaviour. */
  intermittent?: boolean | undefined;
}

/** Distinct days of the daily profile before a signal's seasonal detector may use it. */
const SEASONAL_MIN_DAYS = 4;

export const DETECTOR_KINDS = [
  "range", "rate_of_change", "stuck", "level_shift", "ewma_cusum", "seasonal", "counter", "replay", "novelty",
] as const;
export type DetectorKind = (typeof DETECTOR_KINDS)[number];

export interface SignalDetectorOptions {
  utc_offset_min?: number;
  /** Detector kinds to leave out. */
  disabled?: readonly DetectorKind[];
}

export function createSignalDetectors(point: string, spec: SignalSpec, opts: SignalDetectorOptions = {}): Detector[] {
  const off = new Set(opts.disabled ?? []);
  const d = KIND_DEFAULTS[spec.kind];
  const out: Detector[] = [];
  const add = (k: DetectorKind, make: () => Detector): void => {
    if (!off.has(k)) out.push(make());
  };
  if (spec.range) {
    const { min, max } = spec.range;
    add("range", () => new RangeDetector(point, min, max));
  }
  if (spec.kind === "state") return out;
  if (spec.kind === "energy_counter") {
    add("counter", () => new CounterDetector(point, { max_rate_per_s: spec.max_rate_per_s, rollover_at: spec.rollover_at, resolution: spec.resolution }));
    add("stuck", () => new StuckDetector(point, { tolerance: spec.stuck_tolerance ?? d.stuck_tolerance, min_run: d.stuck_min_run }));
    return out;
  }
  add("rate_of_change", () => new RateOfChangeDetector(point, { max_rate_per_s: spec.max_rate_per_s }));
  add("stuck", () => new StuckDetector(point, { tolerance: spec.stuck_tolerance ?? d.stuck_tolerance, min_run: d.stuck_min_run }));
  add("level_shift", () => new LevelShiftDetector(point));
  add("ewma_cusum", () => new EwmaCusumDetector(point));
  // Until the weekly profile has three weeks, the daily one reports after four days of history.
  if (d.seasonal) add("seasonal", () => new SeasonalDetector(point, { utc_offset_min: opts.utc_offset_min, min_days: SEASONAL_MIN_DAYS }));
  add("replay", () => new ReplayDetector(point, { resolution: spec.resolution }));
  add("novelty", () => new NoveltyDetector(point));
  return out;
}
