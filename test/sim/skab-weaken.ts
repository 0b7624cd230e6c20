/**
 * A dev-only stress test of sensitivity: each SKAB dev run with its fault made subtler. On the
 * fault's rows every signal's slow deviation (a centred 31-reading average of its distance from
 * the straight line between its mean over the 200 readings before the fault and its mean over
 * the 100 after) is scaled by `scale`; the readings' own noise, the fault's onset and a signal's
 * drift through the run are kept. Scale 0.5 turns dev run 1's flow drop (1.02 L/min below the 200
 * readings before the fault, on average) into 0.54, the size of the faults missed on unseen runs.
 */
import type { CsvTable } from "../../detectors/csv";

const BEFORE = 200;
const AFTER = 100;
const HALF_SPAN = 15;

function meanOf(v: Float64Array, from: number, to: number): number {
  let s = 0;
  let n = 0;
  for (let k = Math.max(0, from); k < Math.min(v.length, to); k++) {
    if (Number.isNaN(v[k]!)) continue;
    s += v[k]!;
    n++;
  }
  return n ? s / n : 0;
}

/** The table with the labelled fault (one run of labelled rows) weakened to `scale` of its slow effect. */
export function weakenFault(t: CsvTable, label: ArrayLike<number>, scale: number): CsvTable {
  let a = -1;
  let b = -1;
  for (let i = 0; i < label.length; i++) {
    if (label[i]! <= 0) continue;
    if (a < 0) a = i;
    b = i;
  }
  if (a < 0 || scale === 1) return t;
  const values = t.values.map((col) => {
    const v = Float64Array.from(col);
    const pre = meanOf(col, a - BEFORE, a);
    const post = meanOf(col, b + 1, b + 1 + AFTER);
    const dev = new Float64Array(b - a + 1);
    for (let k = a; k <= b; k++) dev[k - a] = Number.isNaN(col[k]!) ? 0 : col[k]! - (pre + ((post - pre) * (k - a)) / Math.max(1, b - a));
    for (let k = a; k <= b; k++) {
      let s = 0;
      let n = 0;
      for (let j = Math.max(a, k - HALF_SPAN); j <= Math.min(b, k + HALF_SPAN); j++) {
        s += dev[j - a]!;
        n++;
      }
      v[k] = col[k]! - (1 - scale) * (s / n);
    }
    return v;
  });
  return { ...t, values };
}
