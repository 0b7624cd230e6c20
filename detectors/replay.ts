import type { Reading } from "../agent/pipeline";
import { BaseDetector } from "./_base";
import { badState, fmt, num, numArray, type Emit } from "./detector";

export interface ReplayOptions {
  /** Readings in a window that must repeat exactly. */
  window?: number;
  /** A window counts only with at least this many distinct values (flat stretches repeat naturally). */
  min_distinct?: number;
  /** Readings of history searched for an earlier copy (bounds the state). */
  history?: number;
  warmup?: number;
}

interface State { n: number; last_ts: number | null; dt: number; hist: number[]; lag: number; run: number; idx: number[]; natural: number }

/**
 * Replay: the latest `window` readings equal, value for value, a window seen earlier, and the
 * signal keeps following that earlier recording. Live sensor noise never repeats exactly; a
 * recording played back over a sensor (BATADAL attacks 1, 2, 4, 6, 7) does.
 */
export class ReplayDetector extends BaseDetector<State> {
  readonly stateVersion = 1;
  private readonly W: number;
  private readonly D: number;
  private readonly H: number;
  /** Ring of the last H values; index = absolute reading count mod H. */
  private readonly ring: Float64Array;
  /** Hash of the window ending at each ring slot (valid once W readings are in). */
  private readonly hashes: Int32Array;
  private count = 0;
  /** Ring slot of the next reading: `count % H`, kept incrementally (derived, not state). */
  private pos = 0;
  /**
   * Window hash -> absolute index + 1 of the window's last reading, in a fixed table
   * (slot = hash & mask, newest wins on a collision; stale slots are ignored by age).
   */
  private readonly table: Float64Array;
  private readonly mask: number;
  private lag = 0;
  private run = 0;
  /** Longest exact repeat seen on normal data: a replay must be clearly longer. */
  private natural = 0;
  private readonly bits = new Float64Array(1);
  private readonly words = new Int32Array(this.bits.buffer);
  constructor(point: string, opts: ReplayOptions = {}) {
    super(point, "replay", opts.warmup ?? 500);
    this.W = opts.window ?? 5;
    this.D = opts.min_distinct ?? this.W;
    this.H = Math.max(opts.history ?? 720, this.W * 2);
    this.ring = new Float64Array(this.H);
    this.hashes = new Int32Array(this.H);
    let size = 1;
    while (size < 4 * this.H) size <<= 1;
    this.table = new Float64Array(size);
    this.mask = size - 1;
  }
  /** Absolute index of the latest live window with this hash, or -1. */
  private lookup(h: number): number {
    const e = this.table[h & this.mask]! - 1;
    if (e < 0 || e < this.count - this.H + this.W - 1 || this.hashes[e % this.H] !== h) return -1;
    return e;
  }
  private at(i: number): number {
    return this.ring[i % this.H]!;
  }
  private hashEnding(end: number): number {
    return this.hashAtSlot(end % this.H);
  }
  /** Hash of the W readings ending at ring slot `p` (walks the ring without a division per value). */
  private hashAtSlot(p: number): number {
    const ring = this.ring;
    const H = this.H;
    const bits = this.bits;
    const words = this.words;
    let k = p - this.W + 1;
    if (k < 0) k += H;
    let h = 0x811c9dc5;
    for (let c = this.W; c > 0; c--) {
      bits[0] = ring[k]! + 0; // +0 folds -0 into 0
      h = Math.imul(h ^ words[0]!, 0x01000193);
      h = Math.imul(h ^ words[1]!, 0x01000193);
      if (++k === H) k = 0;
    }
    return h;
  }
  private distinct(end: number): number {
    let d = 0;
    for (let k = end - this.W + 1; k <= end; k++) {
      let seen = false;
      for (let j = end - this.W + 1; j < k; j++) if (this.at(j) === this.at(k)) seen = true;
      if (!seen) d++;
    }
    return d;
  }
  private same(endA: number, endB: number): boolean {
    for (let k = 0; k < this.W; k++) if (this.at(endA - k) !== this.at(endB - k)) return false;
    return true;
  }
  /** Stores the reading and its window hash; returns its ring slot. */
  private push(v: number): number {
    const i = this.count;
    const p = this.pos;
    this.ring[p] = v;
    this.count++;
    this.pos = p + 1 === this.H ? 0 : p + 1;
    if (i >= this.W - 1) this.hashes[p] = this.hashAtSlot(p);
    return p;
  }
  /** A per-class copy of BaseDetector.observe (one shape at the `step` call; see there). */
  override observe(r: Reading, emit: Emit): void {
    if (this.clock.advance(r.ts, this.n)) this.restart();
    this.step(r, this.n < this.warmup ? null : emit);
    this.n++;
  }
  protected step(r: Reading, emit: Emit | null): void {
    const i = this.count;
    const p = this.push(r.value);
    // Continuing a replay: the value equals the one that followed the earlier copy.
    if (this.run > 0 && this.lag < this.H - 1 && this.at(i - this.lag) === r.value) {
      this.run++;
    } else {
      this.run = 0;
    }
    if (i >= this.W - 1) {
      const h = this.hashes[p]!;
      const prev = this.lookup(h);
      if (this.run === 0 && prev >= 0 && prev <= i - this.W && this.same(prev, i) && this.distinct(i) >= this.D) {
        this.lag = i - prev;
        this.run = this.W;
      }
      if (prev < 0 || this.run === 0) this.table[h & this.mask] = i + 1;
    }
    if (emit === null) {
      if (this.run > this.natural) this.natural = this.run;
      return;
    }
    if (this.run >= Math.max(this.W, 2 * this.natural + 1)) {
      emit({
        point: r.point, detector: "replay", ts: r.ts, score: 1 + this.run / this.W, observed: r.value,
        expected: null, strength: "physical",
        reason: `${r.point} repeats, value for value, the ${this.run} readings recorded ${this.lag} readings earlier ` +
          `(latest ${fmt(r.value)}): live measurements never repeat exactly, this looks like a replayed recording`,
      });
    }
  }
  protected save(): Omit<State, "n" | "last_ts" | "dt"> {
    const hist: number[] = [];
    const from = Math.max(0, this.count - this.H);
    for (let k = from; k < this.count; k++) hist.push(this.at(k));
    const idx: number[] = [];
    for (let slot = 0; slot <= this.mask; slot++) {
      const e = this.table[slot]! - 1;
      if (e >= 0 && e >= this.count - this.H + this.W - 1) idx.push(slot, this.count - 1 - e);
    }
    return { hist, lag: this.lag, run: this.run, idx, natural: this.natural };
  }
  protected load(s: Record<string, unknown>): void {
    const hist = numArray(this.id, s.hist, "hist", this.H);
    const idx = numArray(this.id, s.idx, "idx", 2 * (this.mask + 1));
    this.lag = num(this.id, s.lag, "lag");
    this.run = num(this.id, s.run, "run");
    this.natural = num(this.id, s.natural, "natural");
    this.table.fill(0);
    this.ring.fill(0);
    this.hashes.fill(0);
    this.count = hist.length;
    this.pos = this.count % this.H;
    hist.forEach((v, k) => {
      this.ring[k % this.H] = v;
      if (k >= this.W - 1) this.hashes[k % this.H] = this.hashEnding(k);
    });
    for (let k = 0; k + 1 < idx.length; k += 2) {
      const slot = idx[k]!;
      const e = this.count - 1 - idx[k + 1]!;
      if (slot < 0 || slot > this.mask || e < 0) throw badState(this.id, "idx");
      this.table[slot] = e + 1;
    }
  }
}
