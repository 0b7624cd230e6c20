import { z } from "zod";

/** Sorted, merged integer intervals; `covers` answers whether [a, b] lies inside their union. */
export class RangeSet {
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];
  constructor(ranges: Iterable<readonly [number, number]>) {
    const sorted = [...ranges].sort((x, y) => x[0] - y[0]);
    for (const [a, b] of sorted) {
      const last = this.ends.length - 1;
      if (last >= 0 && a <= this.ends[last]! + 1) this.ends[last] = Math.max(this.ends[last]!, b);
      else {
        this.starts.push(a);
        this.ends.push(b);
      }
    }
  }
  covers(a: number, b: number): boolean {
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.starts[mid]! <= a) {
        if (b <= this.ends[mid]!) return true;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return false;
  }
  get empty(): boolean {
    return this.starts.length === 0;
  }
}

/** `5` or `"5"` or `"5-9"` to an inclusive pair. */
export function parseRange(r: number | string): [number, number] {
  if (typeof r === "number") return [r, r];
  const [a, b] = r.split("-").map(Number);
  return [a!, b ?? a!];
}

/** `N` or `"N"` or `"N-M"` within 0..max with N <= M (addresses: 65535; units: 255). */
export function rangeSchema(max: number, what: string) {
  return z.union([
    z.number().int().min(0).max(max),
    z
      .string()
      .regex(/^\d+(-\d+)?$/, "expected N or N-M")
      .refine((s) => {
        const [a, b] = parseRange(s);
        return a <= max && b <= max && a <= b;
      }, `${what} must be within 0..${max} with start <= end`),
  ]);
}
