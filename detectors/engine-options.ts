/** Options of the detection engine (the daemon's `detection` config section). */
import { z } from "zod";
import { DETECTOR_KINDS } from "./signal-detectors";

export const engineOptionsSchema = z.strictObject({
  /** Consecutive anomalous ticks before an incident opens on a signal (statistical findings). */
  open_after: z.number().int().min(1).max(100).default(1),
  /** Consecutive quiet ticks before an open incident closes (hysteresis). */
  close_after: z.number().int().min(1).max(10_000).default(3),
  /**
   * False-alarm budget: statistical incidents per signal per day (burst of 2) before the
   * signal's threshold is raised. The default, about one a week, keeps alarm fatigue low;
   * physical findings (range, replay, counter, site physics) are never budgeted.
   */
  budget_per_day: z.number().min(0.01).max(10_000).default(0.15),
  /** How long after an allowed write an anomaly on a related point is attributed to it, ms. */
  correlation_window_ms: z.number().int().min(0).max(86_400_000).default(900_000),
  /** Local time offset for seasonal profiles, minutes (the site file's value wins). */
  utc_offset_min: z.number().int().min(-840).max(840).default(0),
  /** Detector kinds to leave out. */
  disabled: z.array(z.enum(DETECTOR_KINDS)).default([]),
});

export type EngineOptions = z.infer<typeof engineOptionsSchema>;
export type EngineOptionsInput = z.input<typeof engineOptionsSchema>;
