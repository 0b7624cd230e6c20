/**
 * The per-signal detector contract (STYLE.md: Vector FunctionTransform + Telegraf StatefulPlugin).
 * A detector sees readings one at a time, keeps bounded state, and reports findings through
 * `emit`. It never does I/O and never reads the clock: time comes from `reading.ts`.
 */
import type { Reading } from "../agent/core/readings";
import { DaemonError } from "../agent/core/errors";

/** One anomalous observation. The engine groups findings into incidents. */
export interface Finding {
  /** Point the finding is about (for site checks: the point whose reading looks wrong). */
  point: string;
  /** Detector kind, e.g. `range`, `stuck`, `tank_balance`. */
  detector: string;
  /** Time of the reading that triggered it (ms). */
  ts: number;
  /** Normalised score: 1 is the detector's threshold, larger is more anomalous. */
  score: number;
  observed: number;
  /** What the detector expected instead, where it has one. */
  expected: number | null;
  /** Plain-language explanation for an OT engineer, with expected vs observed. */
  reason: string;
  /** Other points involved (site checks). */
  related?: readonly string[];
  /** Physics and replay checks are strong evidence; statistics are weaker. */
  strength?: "statistical" | "physical";
  /** Counter findings: the counter restarted near 0 (a reset or a new meter), not a rollback. */
  reset?: boolean;
  /**
   * Set by the engine on statistical findings on points the site relates: true while all their
   * relations hold (a load switched on moves a flow or a power, and the balance still closes:
   * low severity), false while one is broken (the physics contradicts the reading: high).
   */
  consistent?: boolean;
}

export type Emit = (f: Finding) => void;

export interface Detector<S = unknown> {
  /** Instance id, stable across restarts (`<point>/<kind>`): the key of its saved state. */
  readonly id: string;
  /** Version of the snapshot layout; bumped when `S` changes shape. */
  readonly stateVersion: number;
  /**
   * Called once per reading, in time order. Synchronous, no I/O, must not throw on a finite
   * value. Emits zero or more findings about this reading.
   */
  observe(r: Reading, emit: Emit): void;
  /**
   * Optional: a reading known to be normal (learning history). Updates baselines and never
   * reports. Engines call `observe` with a no-op `emit` when a detector has no `train`.
   */
  train?(r: Reading): void;
  /** Optional: forget short-term baselines and warm up again (after maintenance on the point). */
  rebaseline?(): void;
  /** JSON-safe copy of the state (no NaN, no Infinity, no shared references). */
  snapshot(): S;
  /** Replaces the state. Throws DaemonError DETECTOR_STATE on an unknown version or bad shape. */
  restore(state: S, version: number): void;
}

export function checkVersion(id: string, expected: number, got: number): void {
  if (got !== expected) {
    throw new DaemonError("DETECTOR_STATE", `${id}: state version ${got} is not supported (expected ${expected})`);
  }
}

export function badState(id: string, what: string): DaemonError {
  return new DaemonError("DETECTOR_STATE", `${id}: snapshot is malformed (${what})`);
}

/** Asserts a snapshot field is a finite number (JSON has no NaN). */
export function num(id: string, v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isFinite(v)) throw badState(id, what);
  return v;
}

export function numOrNull(id: string, v: unknown, what: string): number | null {
  return v === null ? null : num(id, v, what);
}

export function numArray(id: string, v: unknown, what: string, maxLen: number): number[] {
  if (!Array.isArray(v) || v.length > maxLen) throw badState(id, what);
  return v.map((x, i) => num(id, x, `${what}[${i}]`));
}

export function obj(id: string, v: unknown): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw badState(id, "not an object");
  return v as Record<string, unknown>;
}

/** Short number for messages: 4 significant digits, no exponent for usual magnitudes. */
export function fmt(v: number | null): string {
  if (v === null) return "-";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-3) return v.toExponential(3);
  return String(Number(v.toPrecision(4)));
}
