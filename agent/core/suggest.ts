/**
 * "Did you mean": the known name closest to a name that is not known, when it is close enough to
 * be a slip of the keyboard (edit distance at most a third of the name, ignoring case), else
 * undefined. Between equally close names, the one sharing the longer prefix (tags put the kind
 * first: `S_PU1` is nearer `S_PU2` than `F_PU1`), then the first alphabetically.
 */
export function closest(name: string, known: Iterable<string>): string | undefined {
  const a = name.toLowerCase();
  const limit = Math.max(1, Math.floor(a.length / 3));
  let best: string | undefined;
  let bestD = limit + 1;
  for (const k of known) {
    const d = distance(a, k.toLowerCase(), bestD + 1);
    if (d < bestD || (d === bestD && best !== undefined && better(a, k, best))) {
      best = k;
      bestD = d;
    }
  }
  return best;
}

function better(a: string, k: string, best: string): boolean {
  const p = prefix(a, k.toLowerCase()) - prefix(a, best.toLowerCase());
  return p > 0 || (p === 0 && k < best);
}

function prefix(a: string, b: string): number {
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  return i;
}

/** Levenshtein distance, or `cap` as soon as it is sure to be at least `cap`. */
function distance(a: string, b: string, cap: number): number {
  if (Math.abs(a.length - b.length) >= cap) return cap;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    let low = i;
    for (let j = 1; j <= b.length; j++) {
      const v = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      cur.push(v);
      low = Math.min(low, v);
    }
    if (low >= cap) return cap;
    prev = cur;
  }
  return prev[b.length]!;
}
