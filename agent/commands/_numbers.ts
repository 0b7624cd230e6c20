import { DaemonError } from "../core/errors";

/**
 * A command-line option's number, or USAGE naming the option, what it counts and its range (the
 * operator's mistake is said in their terms, never as a schema's "expected number, received NaN").
 */
export function wholeNumber(v: string, option: string, what: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const n = /^\d+$/.test(v.trim()) ? Number(v) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new DaemonError("USAGE", `${option} ${v}: give a whole number of ${what}${range(min, max)}`);
  return n;
}

/** A decimal option (e.g. a rate), `min` included. */
export function decimal(v: string, option: string, what: string, min: number, max = Number.MAX_VALUE): number {
  const n = /^\d+(\.\d+)?$/.test(v.trim()) ? Number(v) : Number.NaN;
  if (!Number.isFinite(n) || n < min || n > max) throw new DaemonError("USAGE", `${option} ${v}: give a number of ${what}${range(min, max)}`);
  return n;
}

function range(min: number, max: number): string {
  if (max < Number.MAX_SAFE_INTEGER) return ` from ${min} to ${max}`;
  return min > 0 ? `, at least ${min}` : "";
}
