import type { Reading } from "../agent/core/readings";
import { BaseDetector } from "./_base";
import { badState, fmt, num, numArray, type Emit } from "./detector";

export interface ReplayOptions {
  /** Readings hashed together as one window. */
  window?: number;
  /** Readings of history (at least) an earlier copy is searched in; at least two days are always kept. */
  history?: number;
  /** Slots of the window-hash table (a power of two; bounds the state). */
  slots?: number;
  /** The register's resolution, if known (else the smallest step seen). */
  resolution?: number;
  warmup?: number;
}

interface State {
  n: number; last_ts: number | null; dt: number;
  win: number[]; count: number; lag: number; run: number; bits: number; natural: number; natural_run: number; res: number; table: number[];
  /** Fingerprint ring: its size in bits, the first reading index it holds, its bytes (base64). Absent in older snapshots. */
  fp_bits?: number; fp_from?: number; fp?: string;
}

/**
 * Information a replayed run must carry before it is reported, in bits: the chance that live
 * readings repeat that much information by accident, against some thousands of stored windows,
 * is below 1e-9. Structural (a probability bound), not tuned on any data set.
 */
const MIN_BITS = 32;
/** Time an earlier copy is searched back at least: a replayed day needs yesterday. */
const HORIZON_MS = 2 * 86_400_000;
/** Largest fingerprint ring, in bits (32 KiB: two days at one reading every 0.66 s). */
const MAX_FP_BITS = 1 << 18;

/** Window hash -> index of the window's last reading, in a fixed table (newest wins on a collision). */
class WindowTable {
  readonly idx: Float64Array;
  readonly check: Int32Array;
  readonly mask: number;
  constructor(slots: number) {
    this.idx = new Float64Array(slots);
    this.check = new Int32Array(slots);
    this.mask = slots - 1;
  }
  /** Index of the stored window with these hashes within `horizon` readings before `i` (not overlapping it), or -1. */
  find(h: number, c: number, i: number, horizon: number, W: number): number {
    const slot = h & this.mask;
    const e = this.idx[slot]! - 1;
    return e >= 0 && e >= i - horizon && e <= i - W && this.check[slot] === c ? e : -1;
  }
  put(h: number, c: number, i: number): void {
    const slot = h & this.mask;
    this.idx[slot] = i + 1;
    this.check[slot] = c;
  }
  save(count: number, horizon: number): number[] {
    const out: number[] = [];
    for (let s = 0; s <= this.mask; s++) {
      const e = this.idx[s]! - 1;
      if (e >= 0 && e >= count - horizon) out.push(s, count - 1 - e, this.check[s]!);
    }
    return out;
  }
  load(id: string, t: readonly number[], count: number): void {
    this.idx.fill(0);
    this.check.fill(0);
    for (let k = 0; k + 2 < t.length; k += 3) {
      const slot = t[k]!;
      const e = count - 1 - t[k + 1]!;
      if (!Number.isInteger(slot) || slot < 0 || slot > this.mask || e < 0) throw badState(id, "table");
      this.idx[slot] = e + 1;
      this.check[slot] = t[k + 2]! | 0;
    }
  }
}

/**
 * Replay: the latest readings equal, value for value, a stretch recorded earlier, and the signal
 * keeps following that earlier recording. Live sensor noise never repeats exactly; a recording
 * played back over a sensor (BATADAL attacks 1, 2, 4, 6, 7; a replayed day on a feeder) does.
 *
 * Memory is bounded without raw history: fixed tables of window hashes (two independent 32-bit
 * hashes of the last `window` readings) with the reading index each window ended at. A recent
 * table holds every window of the last `history` readings; a long one covers two days, and when
 * two days of readings exceed it, only windows whose hash falls in a fixed 1-in-K share are
 * stored (content-defined sampling: the replayed copy samples exactly the same windows as the
 * original), so a day is found at one reading a minute and at one a second alike.
 *
 * A repeat counts by the information it carries, judged against the signal's resolution: each
 * reading adds log2(1 + |step| / resolution) bits. Five equal readings of a voltage with 0.1 V
 * steps that moved a step or two carry a few bits and repeat by chance all day; a run is reported
 * only past MIN_BITS, and past twice the longest repeat seen in normal operation (in bits and in
 * readings).
 *
 * Between two checkable windows (one in some hundreds at one reading a second) every reading is
 * still checked against its copy by a one-bit fingerprint kept for each reading of the horizon
 * (a ring of at most MAX_FP_BITS bits): a replay matches every bit, live readings after it ends
 * miss one bit in two, so the run, and its alarm, ends within a reading or two of the copy.
 */
export class ReplayDetector extends BaseDetector<State> {
  readonly stateVersion = 2;
  private readonly W: number;
  private readonly history: number;
  private readonly win: Float64Array;
  /** Readings seen (absolute index of the next one). */
  private count = 0;
  private readonly recent: WindowTable;
  private readonly long: WindowTable;
  private lag = 0;
  /** Readings of the current replayed run, and the information they carry (bits). */
  private run = 0;
  private bits = 0;
  /** Readings and bits since the run's last verified (sampled) window (derived, not saved). */
  private pending = 0;
  private since = 0;
  /** Most information an exact repeat carried in normal operation. */
  private natural = 0;
  /** Longest exact repeat (readings) seen in normal operation: a replay must be clearly longer. */
  private naturalRun = 0;
  private res: number;
  private readonly fixedRes: boolean;
  /** Horizon and sampling mask, refreshed every 256 readings (derived, not saved). */
  private cachedHorizon = 0;
  private cachedMask = 0;
  /** One fingerprint bit per reading (index mod `fpBits`), valid from reading `fpFrom` on. */
  private fp: Uint8Array | null = null;
  private fpBits = 0;
  private fpFrom = 0;
  private readonly f64 = new Float64Array(1);
  private readonly i32 = new Int32Array(this.f64.buffer);
  constructor(point: string, opts: ReplayOptions = {}) {
    super(point, "replay", opts.warmup ?? 500);
    this.W = opts.window ?? 5;
    this.history = opts.history ?? 720;
    this.win = new Float64Array(this.W);
    let slots = 1;
    while (slots < 2 * this.history) slots <<= 1;
    this.recent = new WindowTable(slots);
    this.long = new WindowTable(opts.slots ?? 1024);
    this.res = opts.resolution ?? 0;
    this.fixedRes = opts.resolution !== undefined;
  }
  /** Readings the long table reaches back: two days at the signal's rate (at least `history`). */
  private horizon(): number {
    const dt = this.clock.dt;
    return Math.max(this.history, dt > 0 ? Math.ceil(HORIZON_MS / dt) : 0);
  }
  /** Sampling of the long table: 1 in K windows stored so that its horizon fits half of it. */
  private sampleMask(): number {
    let k = 1;
    while ((this.horizon() / k) > (this.long.mask + 1) / 2) k <<= 1;
    return k - 1;
  }
  private bitsOf(step: number): number {
    const r = this.res > 0 ? this.res : Math.abs(step) || 1;
    return Math.log2(1 + Math.abs(step) / r);
  }
  /** A per-class copy of BaseDetector.observe (one shape at the `step` call; see there). */
  override observe(r: Reading, emit: Emit): void {
    if (this.clock.advance(r.ts, this.n)) this.restart();
    this.step(r, this.n < this.warmup ? null : emit);
    this.n++;
  }
  protected step(r: Reading, emit: Emit | null): void {
    const W = this.W;
    const i = this.count++;
    const prevValue = i > 0 ? this.win[(i - 1) % W]! : r.value;
    const stepSize = r.value - prevValue;
    if (!this.fixedRes && stepSize !== 0 && (this.res === 0 || Math.abs(stepSize) < this.res)) this.res = Math.abs(stepSize);
    this.win[i % W] = r.value;
    if (i < W - 1) return;
    // Two hashes (FNV-1a and a multiplicative variant) of the window, oldest reading first.
    let h = 0x811c9dc5 | 0;
    let c = 0x9e3779b9 | 0;
    const f = this.f64;
    const w = this.i32;
    const win = this.win;
    let p = (i + 1) % W; // the oldest reading of the window
    for (let k = 0; k < W; k++) {
      f[0] = win[p]! + 0; // +0 folds -0 into 0
      if (++p === W) p = 0;
      h = Math.imul(h ^ w[0]!, 0x01000193);
      h = Math.imul(h ^ w[1]!, 0x01000193);
      c = Math.imul(c + w[0]!, 0x85ebca6b) ^ (c >>> 13);
      c = Math.imul(c + w[1]!, 0xc2b2ae35) ^ (c >>> 16);
    }
    if ((i & 255) === 0 || this.cachedHorizon === 0) {
      this.cachedHorizon = this.horizon();
      this.cachedMask = this.sampleMask();
      this.sizeRing(i);
    }
    // The newest reading's fingerprint bit (its words are in `w` after the loop).
    const bit = Math.imul(w[0]! ^ Math.imul(w[1]!, 0x9e3779b1), 0x85ebca6b) >>> 31;
    const ring = this.fp!;
    const mask = this.fpBits - 1;
    const sampled = (c & this.cachedMask) === 0;
    const near = this.recent.find(h, c, i, this.history, W);
    const far = sampled ? this.long.find(h, c, i, this.cachedHorizon, W) : -1;
    const stored = near >= 0 ? near : far;
    const hit = stored >= 0;
    // A window can be checked when the copy's lag is within the recent table, or it is sampled.
    const checkable = (this.run > 0 && this.lag <= this.history) || sampled;
    if (this.run > 0 && i - this.lag >= this.fpFrom && this.lag < this.fpBits) {
      const j = (i - this.lag) & mask;
      if (((ring[j >>> 3]! >>> (j & 7)) & 1) !== bit) {
        // The reading differs from its copy's: the replayed run (and its evidence) ends here.
        this.run = 0;
        this.bits = 0;
        this.pending = 0;
        this.since = 0;
      }
    }
    const k = i & mask;
    if (bit) ring[k >>> 3]! |= 1 << (k & 7);
    else ring[k >>> 3]! &= ~(1 << (k & 7));
    if (this.run > 0) {
      // Following a copy: a checkable window must be the copy's window at the same lag; the
      // readings since the last checked window count only once it is.
      this.pending += this.bitsOf(stepSize);
      if (checkable) {
        const same = (near >= 0 && i - near === this.lag) || (far >= 0 && i - far === this.lag);
        if (same) {
          this.run = this.run + this.since + 1;
          this.bits += this.pending;
        } else {
          this.run = 0;
          this.bits = 0;
        }
        this.pending = 0;
        this.since = 0;
      } else {
        this.since++;
      }
    }
    if (this.run === 0 && hit) {
      this.lag = i - stored;
      this.run = W;
      this.bits = 0;
      this.pending = 0;
      this.since = 0;
      for (let k = i - W + 2; k <= i; k++) this.bits += this.bitsOf(this.win[k % W]! - this.win[(k - 1) % W]!);
    }
    if (this.run === 0) {
      this.recent.put(h, c, i);
      if (sampled) this.long.put(h, c, i);
    }
    if (emit === null) {
      if (this.bits > this.natural) this.natural = this.bits;
      if (this.run > this.naturalRun) this.naturalRun = this.run;
      return;
    }
    const need = Math.max(MIN_BITS, 2 * this.natural);
    if (this.run >= Math.max(W, 2 * this.naturalRun + 1) && this.bits >= need) {
      emit({
        point: r.point, detector: "replay", ts: r.ts, score: 1 + this.bits / need, observed: r.value,
        expected: null, strength: "physical",
        reason: `${r.point} repeats, value for value, the ${this.run} readings recorded ${this.lag} readings earlier ` +
          `(latest ${fmt(r.value)}; ${Math.round(this.bits)} bits at a resolution of ${fmt(this.res)}): live measurements never repeat exactly, this looks like a replayed recording`,
      });
    }
  }
  /** (Re)sizes the fingerprint ring to the horizon; a new ring holds readings from `i` on. */
  private sizeRing(i: number): void {
    let bits = 8;
    while (bits < this.cachedHorizon + this.W && bits < MAX_FP_BITS) bits <<= 1;
    if (this.fp !== null && bits === this.fpBits) return;
    this.fp = new Uint8Array(bits >>> 3);
    this.fpBits = bits;
    this.fpFrom = i;
  }
  protected override onGap(): void {
    this.run = 0;
    this.bits = 0;
    this.pending = 0;
    this.since = 0;
  }
  protected save(): Omit<State, "n" | "last_ts" | "dt"> {
    const table = [...this.recent.save(this.count, this.history), -1, ...this.long.save(this.count, this.horizon())];
    const win: number[] = [];
    for (let k = Math.max(0, this.count - this.W); k < this.count; k++) win.push(this.win[k % this.W]!);
    return {
      win, count: this.count, lag: this.lag, run: this.run, bits: this.bits, natural: this.natural, natural_run: this.naturalRun, res: this.res, table,
      fp_bits: this.fpBits, fp_from: this.fpFrom, fp: this.fp ? Buffer.from(this.fp).toString("base64") : "",
    };
  }
  protected load(s: Record<string, unknown>): void {
    const win = numArray(this.id, s.win, "win", this.W);
    const table = numArray(this.id, s.table, "table", 3 * (this.recent.mask + this.long.mask + 2) + 1);
    const count = num(this.id, s.count, "count");
    if (!Number.isSafeInteger(count) || count < win.length) throw badState(this.id, "count");
    this.count = count;
    this.lag = num(this.id, s.lag, "lag");
    this.run = num(this.id, s.run, "run");
    this.bits = num(this.id, s.bits, "bits");
    this.natural = num(this.id, s.natural, "natural");
    this.naturalRun = num(this.id, s.natural_run, "natural_run");
    if (!this.fixedRes) this.res = num(this.id, s.res, "res");
    win.forEach((v, k) => (this.win[(count - win.length + k) % this.W] = v));
    const cut = table.indexOf(-1);
    if (cut < 0 || cut % 3 !== 0) throw badState(this.id, "table");
    this.recent.load(this.id, table.slice(0, cut), count);
    this.long.load(this.id, table.slice(cut + 1), count);
    // Snapshots from before the fingerprint ring have none: it is sized afresh and holds readings from now on.
    this.fp = null;
    this.fpBits = 0;
    this.cachedHorizon = 0;
    if (s.fp !== undefined && s.fp !== "") {
      const bits = num(this.id, s.fp_bits, "fp_bits");
      const from = num(this.id, s.fp_from, "fp_from");
      if (typeof s.fp !== "string" || !Number.isInteger(bits) || bits < 8 || bits > MAX_FP_BITS || (bits & (bits - 1)) !== 0 || !Number.isSafeInteger(from) || from < 0) throw badState(this.id, "fp");
      const bytes = Buffer.from(s.fp, "base64");
      if (bytes.length !== bits >>> 3) throw badState(this.id, "fp");
      this.fp = new Uint8Array(bytes);
      this.fpBits = bits;
      this.fpFrom = from;
    }
  }
}
