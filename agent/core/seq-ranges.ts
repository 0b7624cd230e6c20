/**
 * Sequence ranges `[boot, first, last]` (inclusive), as loss records name them: on the gateway
 * (outbox evictions, agent/outbox/store.ts) and at the SOC (agent/soc/verifier.ts).
 */
export type SeqRange = [number, number, number];

/** Whether `r` is a well-formed range (safe integers, first <= last). */
export function isRange(r: unknown): r is SeqRange {
  return Array.isArray(r) && r.length === 3 && r.every((x) => Number.isSafeInteger(x)) && (r[1] as number) <= (r[2] as number);
}

/** How many positions the ranges name. */
export function rangeCount(ranges: readonly (readonly [number, number, number])[]): number {
  return ranges.reduce((n, r) => n + r[2] - r[1] + 1, 0);
}

/** Sorts ranges and merges overlapping or adjacent ones. */
export function mergeRanges(ranges: readonly (readonly [number, number, number])[]): SeqRange[] {
  const sorted = ranges.map((r) => [...r] as SeqRange).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const out: SeqRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && last[0] === r[0] && r[1] <= last[2] + 1) last[2] = Math.max(last[2], r[2]);
    else out.push(r);
  }
  return out;
}

/** Appends position (boot, seq), extending the last range when it is the next seq of it. */
export function extendRanges(ranges: SeqRange[], boot: number, seq: number): void {
  const last = ranges[ranges.length - 1];
  if (last && last[0] === boot && last[2] + 1 === seq) last[2] = seq;
  else ranges.push([boot, seq, seq]);
}

/** The positions both `a` and `b` name, as merged ranges (each is merged first: one pass over each). */
export function intersectRanges(a: readonly (readonly [number, number, number])[], b: readonly (readonly [number, number, number])[]): SeqRange[] {
  const x = mergeRanges(a);
  const y = mergeRanges(b);
  const out: SeqRange[] = [];
  let j = 0;
  for (const [boot, f, l] of x) {
    while (j < y.length && (y[j]![0] < boot || (y[j]![0] === boot && y[j]![2] < f))) j++;
    for (let k = j; k < y.length && y[k]![0] === boot && y[k]![1] <= l; k++) out.push([boot, Math.max(f, y[k]![1]), Math.min(l, y[k]![2])]);
  }
  return out;
}
