import type { Reading } from "../agent/core/readings";
import { BaseDetector } from "./_base";
import { badState, fmt, num, numOrNull, type Emit } from "./detector";

export interface EwmaCusumOptions {
  /** EWMA weight of the mean. */
  alpha?: number;
  /** EW weight of the residual variance. */
  beta?: number;
  /** CUSUM allowance, in standard deviations. */
  kappa?: number;
  /** CUSUM decision threshold, in standard deviations. */
  h?: number;
  /**
   * A signal is reported only when another came within this many readings (2-out-of-N
   * confirmation). A drift persists, so its CUSUM refills within h / (shift - kappa) readings of
   * each restart (about 120 for a 1.1 sd shift); two signals further apart are separate
   * excursions. Default 200, chosen on the public NAB corpus (1000 confirmed pairs of unrelated
   * bursts on event-count series).
   */
  confirm_within?: number;
  /** Readings before reporting (default: three time constants of the running mean, 3 / alpha). */
  warmup?: number;
}

/**
 * Each reading adds at most this many standard deviations to the CUSUM (a Huber-type robust
 * CUSUM): a drift is many moderate deviations in a row, so two isolated spikes of a heavy-tailed
 * signal (event counts, request rates) must not add up to one. With the default limit of 12 and
 * allowance of 1, at least four readings must deviate. 4 was chosen on the public NAB corpus
 * (8 let pairs of spikes signal as drifts).
 */
const Z_CAP = 4;

interface State {
  n: number; last_ts: number | null; dt: number; mu: number | null; v: number; sp: number; sn: number; h_cal: number; since: number; gap: number; min_gap: number;
  /** Absent in snapshots from before they were kept: `v_n` taken as `n`, the flags as false. */
  v_n?: number; since_up?: boolean; after_gap?: boolean;
}

/**
 * EWMA + two-sided CUSUM drift detector (Page 1954): accumulates standardised deviations from
 * a slowly tracked mean; a slow drift that stays inside any single-reading threshold still
 * accumulates. The CUSUM restarts after each signal, and a signal is reported only when a
 * second follows the same way within `confirm_within` readings (a lone excursion of a noisy
 * signal is not, nor a rise and a fall: a wander).
 *
 * After a long gap (or maintenance) the level is learned afresh and the noise scale is kept: it
 * describes the sensor and the process, not where the level stood. So the threshold calibration
 * goes on from the first readings after the gap, and a process that moves fast right after it (a
 * heater cycling as a test rig starts) widens the threshold instead of passing unseen.
 */
export class EwmaCusumDetector extends BaseDetector<State> {
  readonly stateVersion = 1;
  /** Running mean, valid when `hasMu` (snapshot `null` otherwise). */
  private hasMu = false;
  private mu = 0;
  private v = 0;
  /** Readings since the noise scale began to be learned (kept over a gap, like the estimate). */
  private vn = 0;
  /** The level is being learned afresh after a gap, the noise scale kept. */
  private afterGap = false;
  private sp = 0;
  private sn = 0;
  /** Largest CUSUM excursion seen on normal data (training, warm-up): the threshold stays above it. */
  private hCal = 0;
  /** Readings since the last (unreported) signal, -1 if none: a drift must signal twice. */
  private since = -1;
  /** Direction of that signal (true: up): only a second signal the same way confirms it. */
  private sinceUp = false;
  /** Training: readings since the last calibration crossing, and the shortest such gap (-1: none). */
  private calGap = -1;
  private minGap = -1;
  private readonly alpha: number;
  private readonly beta: number;
  private readonly kappa: number;
  private readonly h: number;
  private readonly confirm: number;
  constructor(point: string, opts: EwmaCusumOptions = {}) {
    // Warm-up (and threshold calibration after a restart) spans three time constants of the
    // running mean, so the mean has settled (to within e^-3 of its start) before anything is reported.
    super(point, "ewma_cusum", opts.warmup ?? Math.ceil(3 / (opts.alpha ?? 0.005)), 1 / (opts.alpha ?? 0.005));
    this.alpha = opts.alpha ?? 0.005;
    this.beta = opts.beta ?? 0.01;
    this.kappa = opts.kappa ?? 1;
    this.h = opts.h ?? 12;
    this.confirm = opts.confirm_within ?? 200;
  }
  /** A per-class copy of BaseDetector.observe (one shape at the `step` call; see there). */
  override observe(r: Reading, emit: Emit): void {
    if (this.clock.advance(r.ts, this.n)) this.restart();
    this.step(r, this.n < this.warmup ? null : emit);
    this.n++;
  }
  protected step(r: Reading, emit: Emit | null): void {
    const x = r.value;
    if (!this.hasMu) {
      this.hasMu = true;
      this.mu = x;
      this.vn++;
      return;
    }
    const e = x - this.mu;
    const sd = Math.max(Math.sqrt(this.v), 1e-6 * (Math.abs(this.mu) + 1));
    const z = Math.max(-Z_CAP, Math.min(Z_CAP, e / sd));
    this.sp = Math.max(0, this.sp + z - this.kappa);
    this.sn = Math.max(0, this.sn - z - this.kappa);
    const s = Math.max(this.sp, this.sn);
    const h = this.threshold();
    if (emit === null) {
      // Calibration: normal data that drifts by itself raises the threshold above its own excursions.
      // (Not before the variance estimate has learned from 100 readings: it is still settling.)
      if (s > this.h) {
        this.sp = this.sn = 0;
        if (this.vn >= 100) {
          this.hCal = Math.min(Math.max(this.hCal, s), 50 * this.h);
          if (this.calGap > 0) this.minGap = this.minGap < 0 ? this.calGap : Math.min(this.minGap, this.calGap);
          this.calGap = 0;
        }
      }
      if (this.calGap >= 0) this.calGap++;
    } else if (s > h) {
      const up = this.sp > this.sn;
      const confirmed = this.since >= 0 && this.since <= this.confirmWindow(h) && up === this.sinceUp;
      this.since = 0;
      this.sinceUp = up;
      this.sp = this.sn = 0;
      if (!confirmed) {
        this.learn(e);
        return;
      }
      emit({
        point: r.point, detector: "ewma_cusum", ts: r.ts, score: s / h, observed: x, expected: this.mu,
        reason: `${r.point} drifting ${up ? "up" : "down"}: ${fmt(x)} against a running mean of ` +
          `${fmt(this.mu)} (cumulative deviation ${fmt(s)} sd, limit ${fmt(h)})`,
      });
      // Restarted after the signal (Page's scheme): a persisting drift signals again once it
      // has re-accumulated; the mean keeps tracking, so a new steady level stops alarming.
    }
    if (this.since >= 0 && ++this.since > this.confirm) this.since = -1;
    if (emit !== null) this.calGap = -1;
    this.learn(e);
  }
  /**
   * Tracks the level and the noise. After a gap, with the noise scale kept, the level is a plain
   * running mean until the EWMA's time constant is reached: an EWMA started at one reading would
   * carry that reading's noise for hundreds more, a bias the calibration would take for drift.
   */
  private learn(e: number): void {
    this.mu += (this.afterGap ? Math.max(this.alpha, 1 / (this.n + 1)) : this.alpha) * e;
    this.v = (1 - this.beta) * this.v + this.beta * e * e;
    this.vn++;
  }
  /**
   * Readings within which a second signal confirms a drift. Normal data that itself drifts
   * (signals every `min_gap` readings at the base threshold during training) narrows it: only
   * a drift at least twice as fast as any normal one is confirmed.
   */
  confirmWindow(h = this.threshold()): number {
    return this.minGap < 0 ? this.confirm : Math.min(this.confirm, ((this.minGap * h) / this.h) / 2);
  }
  threshold(): number {
    return Math.max(this.h, 1.5 * this.hCal);
  }
  protected override onGap(): void {
    this.hasMu = false;
    this.mu = 0;
    this.afterGap = this.vn >= 100;
    this.sp = this.sn = 0;
    this.since = -1;
  }
  protected save(): Omit<State, "n" | "last_ts" | "dt"> {
    return {
      mu: this.hasMu ? this.mu : null, v: this.v, sp: this.sp, sn: this.sn, h_cal: this.hCal, since: this.since,
      gap: this.calGap, min_gap: this.minGap, v_n: this.vn, since_up: this.sinceUp, after_gap: this.afterGap,
    };
  }
  protected load(s: Record<string, unknown>): void {
    const mu = numOrNull(this.id, s.mu, "mu");
    this.hasMu = mu !== null;
    this.mu = mu ?? 0;
    this.v = num(this.id, s.v, "v");
    this.sp = num(this.id, s.sp, "sp");
    this.sn = num(this.id, s.sn, "sn");
    this.hCal = num(this.id, s.h_cal, "h_cal");
    this.since = num(this.id, s.since, "since");
    this.calGap = num(this.id, s.gap, "gap");
    this.minGap = num(this.id, s.min_gap, "min_gap");
    this.vn = s.v_n === undefined ? num(this.id, s.n, "n") : num(this.id, s.v_n, "v_n");
    if (s.since_up !== undefined && typeof s.since_up !== "boolean") throw badState(this.id, "since_up");
    this.sinceUp = s.since_up === true;
    if (s.after_gap !== undefined && typeof s.after_gap !== "boolean") throw badState(this.id, "after_gap");
    this.afterGap = s.after_gap === true;
  }
}
