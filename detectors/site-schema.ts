/**
 * The site file: how points relate physically (tanks, pumps, valves, meters, power).
 * Point ids refer to `points.<id>` (or CSV column names offline).
 */
import { z } from "zod";
import { POINT_KINDS } from "./kinds";

const id = z.string().min(1).max(64);

export const controlRuleSchema = z
  .strictObject({
    /** State point of the pump or valve (1 = on/open). */
    actuator: id,
    /** The PLC switches it on below this level (m). */
    on_below: z.number().finite(),
    /** The PLC switches it off above this level (m). */
    off_above: z.number().finite(),
  })
  .refine((c) => c.on_below < c.off_above, { message: "on_below must be below off_above" });

export const tankSchema = z.strictObject({
  level: id,
  /** Horizontal cross-section, m^2 (pi * d^2 / 4 for a cylinder). */
  area_m2: z.number().positive(),
  /** Flow points into and out of the tank. */
  inflows: z.array(id).default([]),
  outflows: z.array(id).default([]),
  /** Litres per second per flow unit: 1 for L/s, 1000/3600 for m^3/h. */
  flow_to_l_per_s: z.number().positive().default(1),
  /** PLC level rules (EPANET [CONTROLS]): states that contradict them are findings. */
  controls: z.array(controlRuleSchema).default([]),
  /** Level deadband for the control rules, m. */
  control_margin_m: z.number().min(0).default(0.05),
});

/** A measured point that, for each combination of the given states, follows a line in the regressor. */
export const relationSchema = z.strictObject({
  target: id,
  states: z.array(id).max(6).default([]),
  regressor: id.optional(),
  description: z.string().optional(),
});

export const meterSchema = z.strictObject({
  main: id,
  subs: z.array(id).min(1),
  tolerance_pct: z.number().min(0).max(100).default(3),
  /** Absolute tolerance in the meters' unit (no-load noise; for counters, their resolution). */
  tolerance_abs: z.number().min(0).default(0),
  /**
   * `values`: compare readings (power, flow). `increments`: compare what each counter advanced
   * over `window_s` (energy or volume counters, whose absolute readings differ by when each
   * meter was installed). Default: increments when the main point is an energy counter.
   */
  compare: z.enum(["values", "increments"]).optional(),
  window_s: z.number().int().min(10).max(86_400).default(900),
});

/** One point, or one per phase (per-phase V, I and PF of a three-phase meter, summed). */
const phased = z.union([id, z.array(id).min(1).max(3)]);

export const powerSchema = z
  .strictObject({
    power: id,
    voltage: phased,
    current: phased,
    power_factor: phased.optional(),
    /** 3 with one line voltage and current (x sqrt 3); per-phase lists are summed phase by phase. */
    phases: z.union([z.literal(1), z.literal(3)]).default(1),
    /** Multiplies V x A x PF to the power point's unit (0.001 for kW). */
    scale: z.number().positive().default(1),
    /** Floor of the tolerance; above it, the tolerance is learned from normal operation. */
    tolerance_pct: z.number().min(0).max(100).default(5),
    /** Energy counter of the same meter: what it advanced over `window_s` against the mean power. */
    energy: id.optional(),
    /** Energy counter units per power unit and hour (1 for kWh and kW). */
    energy_per_power_hour: z.number().positive().default(1),
    window_s: z.number().int().min(60).max(86_400).default(900),
  })
  .refine((p) => {
    const n = (x: string | string[] | undefined): number => (x === undefined ? 0 : Array.isArray(x) ? x.length : 1);
    const k = n(p.voltage);
    return n(p.current) === k && (p.power_factor === undefined || n(p.power_factor) === k);
  }, { message: "voltage, current and power_factor need the same number of phases" });

/**
 * What one signal is. The site file is where an engineer says it once; these override what the
 * points config or the offline CLI's inference says.
 */
export const signalSchema = z.strictObject({
  kind: z.enum([...POINT_KINDS, "generic"]),
  unit: z.string().max(32).optional(),
  range: z.strictObject({ min: z.number().finite(), max: z.number().finite() }).refine((r) => r.min < r.max, { message: "min must be below max" }).optional(),
  /** Smallest step the register can show (0.1 for a counter with one decimal, 0.1 V, ...). */
  resolution: z.number().positive().optional(),
  /** A counter wraps to 0 after this value. */
  rollover_at: z.number().positive().optional(),
  /** Largest physically possible rate of change (counters: largest increase) per second. */
  max_rate_per_s: z.number().positive().optional(),
  /** An on/off load (street lighting, an EV charger): idle most of the time, steps are normal. */
  intermittent: z.boolean().default(false),
  stuck_tolerance: z.number().min(0).optional(),
  /**
   * Counters: a point that changes when the meter resets this counter (its reset count, or the
   * time of its last reset). A reset it announces re-baselines instead of raising a finding.
   */
  reset_register: id.optional(),
});

export const siteSchema = z.strictObject({
  name: z.string().min(1),
  description: z.string().optional(),
  /** What kind of site (documentation; the checks follow from what the file describes). */
  type: z.enum(["water", "energy", "generic"]).optional(),
  /** What each signal is (kind, unit, range, resolution, ...). */
  signals: z.record(id, signalSchema).default({}),
  /** Local time offset from UTC for seasonal profiles, minutes. */
  utc_offset_min: z.number().int().min(-840).max(840).default(0),
  tanks: z.record(id, tankSchema).default({}),
  relations: z.array(relationSchema).default([]),
  meters: z.array(meterSchema).default([]),
  power: z.array(powerSchema).default([]),
}).superRefine((site, ctx) => {
  for (const [p, sig] of Object.entries(site.signals)) {
    if (sig.reset_register === undefined) continue;
    if (sig.kind !== "energy_counter") {
      ctx.addIssue({ code: "custom", path: ["signals", p, "reset_register"], message: "only an energy_counter signal has a reset register" });
    } else if (sig.reset_register === p) {
      ctx.addIssue({ code: "custom", path: ["signals", p, "reset_register"], message: "a counter cannot announce its own reset" });
    }
  }
});

export type SiteConfig = z.infer<typeof siteSchema>;
export type TankConfig = z.infer<typeof tankSchema>;
export type RelationConfig = z.infer<typeof relationSchema>;
export type SignalConfig = z.infer<typeof signalSchema>;
export type PowerConfig = z.infer<typeof powerSchema>;
