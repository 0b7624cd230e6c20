/** Point kinds and the per-kind defaults the per-signal detectors use. */
export const POINT_KINDS = [
  "flow", "pressure", "level", "chlorine", "turbidity", "ph", "energy_counter",
  "power", "voltage", "current", "power_factor", "state",
] as const;
export type PointKind = (typeof POINT_KINDS)[number];
/** `generic` is used only for columns of an offline CSV whose kind cannot be inferred. */
export type SignalKind = PointKind | "generic";

export interface KindDefaults {
  /** Values within this absolute distance count as "unchanged" for the stuck detector. */
  stuck_tolerance: number;
  /** Minimum run of unchanged readings before "frozen" can be reported. */
  stuck_min_run: number;
  /** Whether the signal is strongly periodic (demand, energy): enables the seasonal profile. */
  seasonal: boolean;
}

export const KIND_DEFAULTS: Record<SignalKind, KindDefaults> = {
  flow: { stuck_tolerance: 0.005, stuck_min_run: 12, seasonal: true },
  pressure: { stuck_tolerance: 0.005, stuck_min_run: 12, seasonal: true },
  level: { stuck_tolerance: 0.005, stuck_min_run: 12, seasonal: false },
  chlorine: { stuck_tolerance: 0.001, stuck_min_run: 30, seasonal: false },
  turbidity: { stuck_tolerance: 0.001, stuck_min_run: 30, seasonal: false },
  ph: { stuck_tolerance: 0.001, stuck_min_run: 30, seasonal: false },
  energy_counter: { stuck_tolerance: 0, stuck_min_run: 60, seasonal: false },
  power: { stuck_tolerance: 0, stuck_min_run: 12, seasonal: true },
  voltage: { stuck_tolerance: 0, stuck_min_run: 30, seasonal: false },
  current: { stuck_tolerance: 0, stuck_min_run: 12, seasonal: true },
  power_factor: { stuck_tolerance: 0, stuck_min_run: 30, seasonal: false },
  state: { stuck_tolerance: 0, stuck_min_run: Number.MAX_SAFE_INTEGER, seasonal: false },
  generic: { stuck_tolerance: 0, stuck_min_run: 12, seasonal: true },
};
