import type { Reading } from "../agent/pipeline";
import { BaseDetector } from "./_base";
import { fmt, num, numArray, type Emit } from "./detector";

export interface SeasonalOptions {
  /** Site time offset from UTC in minutes (profiles follow local time of day). */
  utc_offset_min?: number;
  /** Alarm when |value - profile| exceeds this multiple of the bin's usual deviation. */
  factor?: number;
  /** Distinct weeks a bin must have seen before it may report. */
  min_weeks?: number;
  warmup?: number;
}

const BINS = 24 * 7;
const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

interface State { n: number; last_ts: number | null; dt: number; mean: number[]; dev: number[]; count: number[]; weeks: number[]; last_week: number[]; gdev: number }

/**
 * Seasonal profile: one mean and mean absolute deviation per hour of day x day of week
 * (168 bins, fixed state), reporting only once a bin has seen several weeks. Water demand and energy use are strongly periodic, so "3.1x its
 * usual Tuesday 03:00 level" is visible even when the value is in the signal's overall range.
 */
export class SeasonalDetector extends BaseDetector<State> {
  readonly stateVersion = 1;
  private readonly mean = new Float64Array(BINS);
  private readonly dev = new Float64Array(BINS);
  private readonly count = new Float64Array(BINS);
  /** Distinct weeks seen per bin, and the last one: a profile needs several periods, not many samples of one. */
  private readonly weeks = new Float64Array(BINS);
  private readonly lastWeek = new Float64Array(BINS).fill(-1);
  private gdev = 0;
  /** Cache of the bin of the current hour (derived from ts; not state). */
  private hour = Number.NaN;
  private bin = 0;
  private week = 0;
  private readonly offsetMs: number;
  private readonly factor: number;
  private readonly minWeeks: number;
  constructor(point: string, opts: SeasonalOptions = {}) {
    super(point, "seasonal", opts.warmup ?? 0);
    this.offsetMs = (opts.utc_offset_min ?? 0) * 60_000;
    this.factor = opts.factor ?? 10;
    this.minWeeks = opts.min_weeks ?? 3;
  }
  protected step(r: Reading, emit: Emit | null): void {
    const hour = Math.floor((r.ts + this.offsetMs) / 3_600_000);
    if (hour !== this.hour) {
      this.hour = hour;
      const dow = (((Math.floor(hour / 24) + 4) % 7) + 7) % 7; // 1970-01-01 was a Thursday
      this.bin = dow * 24 + (((hour % 24) + 24) % 24);
      this.week = Math.floor((hour + 96) / 168); // weeks start on Sunday 00:00
    }
    const b = this.bin;
    const dow = Math.floor(b / 24);
    const week = this.week;
    const c = this.count[b]!;
    const m = this.mean[b]!;
    const e = r.value - m;
    if (emit !== null && this.weeks[b]! >= this.minWeeks) {
      const scale = Math.max(this.dev[b]!, 0.5 * this.gdev, 1e-9 * (Math.abs(m) + 1));
      const score = Math.abs(e) / (this.factor * scale);
      if (score > 1) {
        const ratio = m !== 0 ? r.value / m : 0;
        const usual = Math.abs(ratio) >= 1.5 || (ratio > 0 && ratio <= 0.67) ? `${fmt(ratio)}x` : `${fmt(e)} off`;
        emit({
          point: r.point, detector: "seasonal", ts: r.ts, score, observed: r.value, expected: m,
          reason: `${r.point} at ${fmt(r.value)} is ${usual} its usual ${DAYS[dow]} ` +
            `${String(b % 24).padStart(2, "0")}:00 level (${fmt(m)} +/- ${fmt(scale)})`,
        });
        return;
      }
    }
    // Weight per sample so that each week counts about equally, whatever the sampling rate.
    const perWeek = Math.max(1, c / Math.max(1, this.weeks[b]!));
    const w = Math.max(1 / (c + 1), 0.1 / perWeek);
    this.mean[b] = m + w * e;
    this.dev[b] = c === 0 ? 0 : this.dev[b]! + w * (Math.abs(e) - this.dev[b]!);
    this.count[b] = c + 1;
    if (this.lastWeek[b] !== week) {
      this.lastWeek[b] = week;
      this.weeks[b] = this.weeks[b]! + 1;
    }
    if (c > 0) this.gdev += 0.01 * (Math.abs(e) - this.gdev);
  }
  protected save(): Omit<State, "n" | "last_ts" | "dt"> {
    return {
      mean: Array.from(this.mean), dev: Array.from(this.dev), count: Array.from(this.count),
      weeks: Array.from(this.weeks), last_week: Array.from(this.lastWeek), gdev: this.gdev,
    };
  }
  protected load(s: Record<string, unknown>): void {
    const mean = numArray(this.id, s.mean, "mean", BINS);
    const dev = numArray(this.id, s.dev, "dev", BINS);
    const count = numArray(this.id, s.count, "count", BINS);
    this.mean.fill(0).set(mean);
    this.dev.fill(0).set(dev);
    this.count.fill(0).set(count);
    this.weeks.fill(0).set(numArray(this.id, s.weeks, "weeks", BINS));
    this.lastWeek.fill(-1).set(numArray(this.id, s.last_week, "last_week", BINS));
    this.gdev = num(this.id, s.gdev, "gdev");
  }
}
