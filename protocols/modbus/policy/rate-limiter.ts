/**
 * Token buckets, one per key: the policy's write rates (keyed by role and identity) and the
 * listeners' request rate (`limits.max_requests_per_s`, keyed by identity), so every
 * connection of one identity draws on the same bucket. A bucket holds `max` tokens and
 * refills at `max` per `intervalMs`.
 *
 * Bounded: at `maxKeys` buckets, a new key first drops the idle ones (refilled to full, so
 * forgetting them changes no decision). If none is idle the new key is refused ("full"),
 * which fails closed, rather than evicting a busy bucket (that would hand its identity a
 * fresh budget). A full table of busy buckets is rescanned only once one can be idle.
 */
interface Bucket {
  tokens: number;
  at: number;
  max: number;
  intervalMs: number;
}

export type TakeResult = "ok" | "rate" | "full";

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  /** No bucket can be idle before this time (set when a scan found none). */
  private scanAfter = 0;

  constructor(readonly maxKeys = 4096) {}

  get size(): number {
    return this.buckets.size;
  }

  /** Take one token from `key`'s bucket. Allocates only for a key not seen (or evicted) before. */
  take(key: string, max: number, intervalMs: number, now: number): TakeResult {
    let b = this.buckets.get(key);
    if (b === undefined) {
      if (this.buckets.size >= this.maxKeys && !this.dropIdle(now)) return "full";
      b = { tokens: max, at: now, max, intervalMs };
      this.buckets.set(key, b);
    } else {
      const elapsed = now - b.at;
      // A clock stepped backwards refills nothing; the bucket counts on from the new time.
      if (elapsed > 0) b.tokens = Math.min(max, b.tokens + (elapsed * max) / intervalMs);
      b.at = now;
      b.max = max;
      b.intervalMs = intervalMs;
    }
    if (b.tokens < 1) return "rate";
    b.tokens -= 1;
    return "ok";
  }

  /**
   * Milliseconds until `key` can take a token again (0: now). For a key refused as "full",
   * the earliest time one of the buckets can be idle (and so give way to it).
   */
  waitMs(key: string, now: number): number {
    const b = this.buckets.get(key);
    if (b === undefined) return Math.max(0, this.scanAfter - now);
    const tokens = Math.min(b.max, b.tokens + (Math.max(0, now - b.at) * b.max) / b.intervalMs);
    return tokens >= 1 ? 0 : ((1 - tokens) * b.intervalMs) / b.max;
  }

  /** Drop buckets that have refilled to full; true when there is room for one more. */
  private dropIdle(now: number): boolean {
    if (now < this.scanAfter) return false;
    let next = Infinity;
    for (const [k, b] of this.buckets) {
      const idleAt = b.at + ((b.max - b.tokens) * b.intervalMs) / b.max;
      if (now >= idleAt) this.buckets.delete(k);
      else if (idleAt < next) next = idleAt;
    }
    const room = this.buckets.size < this.maxKeys;
    this.scanAfter = room ? 0 : next;
    return room;
  }
}
