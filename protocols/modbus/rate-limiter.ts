/** Token buckets per key, bounded in number (the least recently used key is dropped). */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  constructor(private readonly maxKeys = 4096) {}

  /** Take one token from `key`'s bucket of `max` tokens refilled over `intervalMs`. */
  take(key: string, max: number, intervalMs: number, now: number): boolean {
    let b = this.buckets.get(key);
    if (b) this.buckets.delete(key);
    else b = { tokens: max, at: now };
    b.tokens = Math.min(max, b.tokens + ((now - b.at) * max) / intervalMs);
    b.at = now;
    this.buckets.set(key, b);
    if (this.buckets.size > this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}
