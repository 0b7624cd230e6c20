/**
 * Detection's time base when the gateway's wall clock steps. Readings carry wall time, and the
 * engine drops a reading older than the last one (detectors need time order). A Pi-class
 * gateway has no battery clock: after a power cut it boots at the time last saved (up to an hour
 * behind), and an NTP correction or someone setting the clock can step it back too. Without
 * this, detection dropped every reading, silently, until the wall clock had caught up again.
 *
 * A step is what the wall clock moved beyond the monotonic clock since the previous reading,
 * read from the two clocks themselves, not from the readings' times, so that a reading that
 * arrives late (queued in the OPC UA process) is not taken for one; for the first reading after
 * a start, how far the clock lies before the restored detectors' time. A step
 * back of more than CLOCK_STEP_MS adds to an offset that places readings after the last ones; a
 * later step forward takes it back (to 0 once the clock is right again), so hour-of-day profiles
 * stay on true time. Each step that changes the offset is a signed system event (at most one a
 * minute; the next one counts those in between).
 */
import type { Logger } from "pino";
import { performance } from "node:perf_hooks";
import { OcsfClass, type EventSink } from "../core/events";
import { ReportEvery } from "../core/report-every";

/** A wall-clock move this far from the monotonic clock's is a step, not jitter. */
export const CLOCK_STEP_MS = 2000;
const REPORT_EVERY_MS = 60_000;

export interface ClockGuardOptions {
  /** The engine's latest reading time (restored state included); null: none yet. */
  engineTime: () => number | null;
  sink: EventSink;
  log: Logger;
  mono?: () => number;
  wall?: () => number;
}

export class ClockGuard {
  /** Added to every reading's time (ms, ≥ 0). */
  offset = 0;
  /** Wall clock minus monotonic clock at the previous reading (null: none yet). */
  private base: number | null = null;
  private readonly reports = new ReportEvery(REPORT_EVERY_MS);
  private readonly mono: () => number;
  private readonly wall: () => number;

  constructor(private readonly o: ClockGuardOptions) {
    this.mono = o.mono ?? (() => performance.now());
    this.wall = o.wall ?? Date.now;
  }

  /** A reading's (or write's) wall time on detection's time base. */
  map(ts: number): number {
    const now = this.wall();
    const base = now - this.mono();
    if (this.base === null) {
      const t = this.o.engineTime();
      if (t !== null && now < t - CLOCK_STEP_MS) this.change(t - now + 1, "before the last reading the detectors saw (their saved state)", now - t);
    } else {
      const step = base - this.base;
      if (step < -CLOCK_STEP_MS) this.change(this.offset - step, "back", step);
      else if (step > CLOCK_STEP_MS && this.offset > 0) this.change(Math.max(0, this.offset - step), "forward", step);
    }
    // Compared reading to reading: a slow drift (NTP slewing) never adds up to a step.
    this.base = base;
    return ts + this.offset;
  }

  private change(offset: number, how: string, step: number): void {
    this.offset = offset;
    const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    const fields = { step_ms: Math.round(step), offset_ms: Math.round(offset) };
    const since = this.reports.hit(this.mono());
    if (!since) {
      this.o.log.warn(fields, "The gateway's clock stepped again; reported with the next clock event.");
      return;
    }
    const what = how === "back" || how === "forward" ? `stepped ${how} by ${s(Math.abs(step))} (against the monotonic clock)` : `reads ${s(-step)} ${how}`;
    const message =
      `The gateway's clock ${what}; ` +
      (offset > 0 ? `detection places readings ${s(offset)} later than the clock says, so that none is dropped as out of order, until the clock is set right` : "detection's time base is back on the clock") +
      (since > 1 ? ` (${since} clock steps since the last such event)` : "");
    this.o.log.warn(fields, message);
    this.o.sink.record({
      class: "system",
      severity: 3,
      ocsf: { class_uid: OcsfClass.ApplicationLifecycle, activity_id: 99, message, unmapped: { error_type: "clock_step", stage: "detection", ...fields } },
    });
  }
}
