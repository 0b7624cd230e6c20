/** Small streaming statistics shared by detectors. Instances only: no module state. */

/**
 * Slow, outlier-resistant spread: an exponentially weighted mean of |x| winsorised at three
 * times the current estimate, so a developing anomaly moves it by at most ~1 % per reading.
 */
export class SpreadTracker {
  m = 0;
  n = 0;
  constructor(readonly alpha = 0.005) {}
  update(x: number): void {
    const a = Math.abs(x);
    const w = Math.max(this.alpha, 1 / (this.n + 1));
    this.m += w * ((this.n > 20 ? Math.min(a, 3 * this.m) : a) - this.m);
    this.n++;
  }
  toJSON(): [number, number] {
    return [this.m, this.n];
  }
  load(s: readonly number[]): void {
    this.m = s[0] ?? 0;
    this.n = s[1] ?? 0;
  }
}

/** Fixed-size window with an incrementally sorted copy, for running medians. */
export class SortedWindow {
  readonly ring: Float64Array;
  readonly sorted: Float64Array;
  head = 0;
  size = 0;
  constructor(readonly capacity: number) {
    this.ring = new Float64Array(capacity);
    this.sorted = new Float64Array(capacity);
  }
  push(x: number): void {
    const s = this.sorted;
    let n = this.size;
    if (n === this.capacity) {
      const old = this.ring[this.head]!;
      let i = 0;
      while (i < n && s[i] !== old) i++;
      for (; i < n - 1; i++) s[i] = s[i + 1]!;
      n--;
    } else {
      this.size++;
    }
    let j = n - 1;
    while (j >= 0 && s[j]! > x) {
      s[j + 1] = s[j]!;
      j--;
    }
    s[j + 1] = x;
    this.ring[this.head] = x;
    this.head = this.head + 1 === this.capacity ? 0 : this.head + 1;
  }
  median(): number {
    const n = this.size;
    if (n === 0) return 0;
    const h = n >> 1;
    return n & 1 ? this.sorted[h]! : (this.sorted[h - 1]! + this.sorted[h]!) / 2;
  }
  /** Mean of the middle half (interquartile mean): robust to spikes, smooth on quantised signals. */
  trimmedMean(): number {
    const n = this.size;
    if (n === 0) return 0;
    const cut = n >> 2;
    let sum = 0;
    for (let i = cut; i < n - cut; i++) sum += this.sorted[i]!;
    return sum / (n - 2 * cut);
  }
  full(): boolean {
    return this.size === this.capacity;
  }
  /** Values oldest first. */
  values(): number[] {
    const out: number[] = [];
    const start = this.size === this.capacity ? this.head : 0;
    for (let k = 0; k < this.size; k++) out.push(this.ring[(start + k) % this.capacity]!);
    return out;
  }
  load(vals: readonly number[]): void {
    this.head = 0;
    this.size = 0;
    for (const v of vals.slice(-this.capacity)) this.push(v);
  }
}

/**
 * Quantile sketch of |x| over a log scale (4 bins per octave, 2^-40 .. 2^40, at most 25 %
 * relative error), with a zero bin. Fixed size whatever the stream length; cheap to add to, quantile
 * queries scan the bins (callers cache them).
 */
export class LogHistogram {
  static readonly BINS = 321;
  readonly counts = new Float64Array(LogHistogram.BINS);
  total = 0;
  private readonly f = new Float64Array(1);
  private readonly u = new Uint32Array(this.f.buffer);
  /** Bin of |x|: the binary exponent and the top two mantissa bits (no log call). */
  bin(x: number): number {
    if (x === 0 || !Number.isFinite(x)) return x === 0 ? 0 : LogHistogram.BINS - 1;
    this.f[0] = x;
    const hi = this.u[1]!;
    const e = ((hi >>> 20) & 0x7ff) - 1023;
    const b = e * 4 + ((hi >>> 18) & 3) + 161;
    return b < 1 ? 1 : b >= LogHistogram.BINS ? LogHistogram.BINS - 1 : b;
  }
  add(x: number): void {
    const b = this.bin(x);
    this.counts[b] = this.counts[b]! + 1;
    this.total++;
  }
  /** Upper edge of the bin holding the p-quantile (0 when the quantile is the zero bin). */
  quantile(p: number): number {
    const want = p * this.total;
    let acc = 0;
    for (let b = 0; b < LogHistogram.BINS; b++) {
      acc += this.counts[b]!;
      if (acc >= want) return b === 0 ? 0 : LogHistogram.upper(b);
    }
    return LogHistogram.upper(LogHistogram.BINS - 1);
  }
  /** Upper edge of bin b >= 1: 2^e x (1 + (m + 1) / 4). */
  static upper(b: number): number {
    const k = b - 161;
    const e = Math.floor(k / 4);
    return Math.pow(2, e) * (1 + ((k - 4 * e) + 1) / 4);
  }
  /** Halves every count: old behaviour fades, the shape is kept. */
  decay(): void {
    this.total = 0;
    for (let b = 0; b < LogHistogram.BINS; b++) {
      this.counts[b] = this.counts[b]! / 2;
      this.total += this.counts[b]!;
    }
  }
  /** Sparse JSON form: [bin, count, ...]. */
  toJSON(): number[] {
    const out: number[] = [];
    this.counts.forEach((c, b) => {
      if (c > 0) out.push(b, c);
    });
    return out;
  }
  load(s: readonly number[]): void {
    this.counts.fill(0);
    this.total = 0;
    for (let k = 0; k + 1 < s.length; k += 2) {
      const b = s[k]!;
      if (!Number.isInteger(b) || b < 0 || b >= LogHistogram.BINS) throw new RangeError("bin");
      this.counts[b] = s[k + 1]!;
      this.total += s[k + 1]!;
    }
  }
}
