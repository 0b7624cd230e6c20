import type { Reading } from "../agent/core/readings";
import { BaseDetector } from "./_base";
import { fmt, num, numArray, type Emit } from "./detector";

export interface SeasonalOptions {
  /** Site time offset from UTC in minutes (profiles follow local time of day). */
  utc_offset_min?: number;
  /** Alarm when |value - profile| exceeds this multiple of the bin's usual deviation. */
  factor?: number;
  /** Distinct weeks a bin must have seen before it may report. */
  min_weeks?: number;
  /**
   * Until its week bin has `min_weeks`, an hour of day may report against the daily profile
   * (same hour, any day) once that has seen this many distinct days. 0 (the default) disables it.
   */
  min_days?: number;
  warmup?: number;
}

const BINS = 24 * 7;
const HOURS = 24;
/**
 * A profile reports only when the signal is periodic enough for it to mean something: the
 * hour-of-day means must explain at least this share of the signal's variance. Below it, "unusual
 * for 03:00" is just an outlier the other detectors judge better, and the per-hour bands of a
 * noisy aperiodic signal (CPU load, event counts) mostly produce false alarms. 0.3 was chosen on
 * the public NAB corpus (event F1 about flat for 0.15 to 0.5 offline; 0.3 beat 0.2 in the engine,
 * where the online estimate of heavy-tailed signals runs high: the mean absolute deviation
 * understates their variance). The periodic series there explain 0.3 to 0.9 of their variance,
 * the aperiodic ones under 0.15.
 */
const MIN_EXPLAINED = 0.3;
/** Mean absolute deviation to standard deviation for normal noise: sqrt(pi / 2). */
const MAD_TO_SD = 1.2533;
const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

interface State {
  n: number; last_ts: number | null; dt: number; mean: number[]; dev: number[]; count: number[]; weeks: number[]; last_week: number[]; gdev: number;
  /** Daily profile (hour of day): mean, deviation, count, distinct days, last day (absent in older snapshots). */
  d_mean?: number[]; d_dev?: number[]; d_count?: number[]; days?: number[]; last_day?: number[];
}

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
  private readonly dMean = new Float64Array(HOURS);
  private readonly dDev = new Float64Array(HOURS);
  private readonly dCount = new Float64Array(HOURS);
  private readonly days = new Float64Array(HOURS);
  private readonly lastDay = new Float64Array(HOURS).fill(-1);
  /** Cache of the bin of the current hour (derived from ts; not state). */
  private hour = Number.NaN;
  private bin = 0;
  private week = 0;
  private day = 0;
  private readonly offsetMs: number;
  private readonly factor: number;
  private readonly minWeeks: number;
  private readonly minDays: number;
  constructor(point: string, opts: SeasonalOptions = {}) {
    super(point, "seasonal", opts.warmup ?? 0);
    this.offsetMs = (opts.utc_offset_min ?? 0) * 60_000;
    this.factor = opts.factor ?? 10;
    this.minWeeks = opts.min_weeks ?? 3;
    this.minDays = opts.min_days ?? 0;
  }
  /** A per-class copy of BaseDetector.observe (one shape at the `step` call; see there). */
  override observe(r: Reading, emit: Emit): void {
    if (this.clock.advance(r.ts, this.n)) this.restart();
    this.step(r, this.n < this.warmup ? null : emit);
    this.n++;
  }
  protected step(r: Reading, emit: Emit | null): void {
    const hour = Math.floor((r.ts + this.offsetMs) / 3_600_000);
    if (hour !== this.hour) {
      this.hour = hour;
      const dow = (((Math.floor(hour / 24) + 4) % 7) + 7) % 7; // 1970-01-01 was a Thursday
      this.bin = dow * 24 + (((hour % 24) + 24) % 24);
      this.week = Math.floor((hour + 96) / 168); // weeks start on Sunday 00:00
      this.day = Math.floor(hour / 24);
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
      if (score > 1 && this.periodic()) {
        const ratio = m !== 0 ? r.value / m : 0;
        const usual = Math.abs(ratio) >= 1.5 || (ratio > 0 && ratio <= 0.67) ? `${fmt(ratio)}x` : `${fmt(e)} off`;
        emit({
          point: r.point, detector: "seasonal", ts: r.ts, score, observed: r.value, expected: m,
          reason: `${r.point} at ${fmt(r.value)} is ${usual} its usual ${DAYS[dow]} ` +
            `${String(b % 24).padStart(2, "0")}:00 level (${fmt(m)} +/- ${fmt(scale)})`,
        });
        this.widen(b, this.factor * scale);
        return;
      }
    } else if (emit !== null && this.minDays > 0 && this.days[b % 24]! >= this.minDays) {
      // Not enough weeks yet for this hour of the week: the daily profile (same hour, any day).
      const h = b % 24;
      const dm = this.dMean[h]!;
      const scale = Math.max(this.dDev[h]!, 0.5 * this.gdev, 1e-9 * (Math.abs(dm) + 1));
      const de = r.value - dm;
      const score = Math.abs(de) / (this.factor * scale);
      if (score > 1 && this.periodic()) {
        const ratio = dm !== 0 ? r.value / dm : 0;
        const usual = Math.abs(ratio) >= 1.5 || (ratio > 0 && ratio <= 0.67) ? `${fmt(ratio)}x` : `${fmt(de)} off`;
        emit({
          point: r.point, detector: "seasonal", ts: r.ts, score, observed: r.value, expected: dm,
          reason: `${r.point} at ${fmt(r.value)} is ${usual} its usual ` +
            `${String(h).padStart(2, "0")}:00 level (${fmt(dm)} +/- ${fmt(scale)}, daily profile)`,
        });
        this.widen(b, this.factor * scale);
        return;
      }
    }
    this.learnDaily(b % 24, r.value);
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
  /**
   * Share of the variance the daily profile explains: between-hour variance of the hourly means
   * against that plus the within-hour variance (from the hourly mean absolute deviations).
   * O(24); only evaluated for readings that would be reported.
   */
  explained(): number {
    let w = 0;
    let mean = 0;
    for (let h = 0; h < HOURS; h++) {
      w += this.dCount[h]!;
      mean += this.dCount[h]! * this.dMean[h]!;
    }
    if (w === 0) return 0;
    mean /= w;
    let between = 0;
    let within = 0;
    for (let h = 0; h < HOURS; h++) {
      const c = this.dCount[h]!;
      if (c === 0) continue;
      const d = this.dMean[h]! - mean;
      const sd = MAD_TO_SD * this.dDev[h]!;
      between += c * d * d;
      within += c * sd * sd;
    }
    return between + within > 0 ? between / (between + within) : 0;
  }
  private periodic(): boolean {
    return this.explained() >= MIN_EXPLAINED;
  }
  /**
   * A reported reading leaves the profile's means alone but counts towards its deviations,
   * winsorised at the threshold: one outlier moves them little, while exceedances that keep
   * recurring at this hour (spikes that are this signal's normal) widen the band.
   */
  private widen(b: number, cap: number): void {
    const h = b % 24;
    const c = this.count[b]!;
    if (c > 0) this.dev[b] = this.dev[b]! + Math.max(1 / (c + 1), 0.1 / Math.max(1, c / Math.max(1, this.weeks[b]!))) * (cap - this.dev[b]!);
    const dc = this.dCount[h]!;
    if (dc > 0) this.dDev[h] = this.dDev[h]! + Math.max(1 / (dc + 1), 0.1 / Math.max(1, dc / Math.max(1, this.days[h]!))) * (cap - this.dDev[h]!);
    this.gdev += 0.01 * (cap - this.gdev);
  }
  /** Daily profile: the same weighting as the weekly one, with days in place of weeks. */
  private learnDaily(h: number, x: number): void {
    const c = this.dCount[h]!;
    const e = x - this.dMean[h]!;
    const perDay = Math.max(1, c / Math.max(1, this.days[h]!));
    const w = Math.max(1 / (c + 1), 0.1 / perDay);
    this.dMean[h] = this.dMean[h]! + w * e;
    this.dDev[h] = c === 0 ? 0 : this.dDev[h]! + w * (Math.abs(e) - this.dDev[h]!);
    this.dCount[h] = c + 1;
    if (this.lastDay[h] !== this.day) {
      this.lastDay[h] = this.day;
      this.days[h] = this.days[h]! + 1;
    }
  }
  protected save(): Omit<State, "n" | "last_ts" | "dt"> {
    return {
      mean: Array.from(this.mean), dev: Array.from(this.dev), count: Array.from(this.count),
      weeks: Array.from(this.weeks), last_week: Array.from(this.lastWeek), gdev: this.gdev,
      d_mean: Array.from(this.dMean), d_dev: Array.from(this.dDev), d_count: Array.from(this.dCount),
      days: Array.from(this.days), last_day: Array.from(this.lastDay),
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
    // Snapshots from before the daily profile have none: it starts empty.
    const opt = (v: unknown, what: string): number[] => (v === undefined ? [] : numArray(this.id, v, what, HOURS));
    this.dMean.fill(0).set(opt(s.d_mean, "d_mean"));
    this.dDev.fill(0).set(opt(s.d_dev, "d_dev"));
    this.dCount.fill(0).set(opt(s.d_count, "d_count"));
    this.days.fill(0).set(opt(s.days, "days"));
    this.lastDay.fill(-1).set(opt(s.last_day, "last_day"));
  }
}
