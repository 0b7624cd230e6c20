/**
 * Flood bounds for a component's events: per interval each key (kind + identity + rule ...)
 * records its first `per_key` events; the rest are counted and recorded as one summary
 * (`unmapped.suppressed`, `count`) when the interval ends. Keys per interval are bounded; past
 * the bound they share one overflow key. So a flood of N requests costs a bounded number of
 * events per interval, and none goes uncounted.
 */
import type { EventDraft, EventSink } from "./events";

export interface FloodLimits {
  interval_ms: number;
  per_key: number;
  max_keys: number;
}

interface Bucket {
  count: number;
  first: EventDraft;
}

export class FloodGate {
  private buckets = new Map<string, Bucket>();

  constructor(
    private readonly sink: EventSink,
    private readonly limits: FloodLimits,
    private readonly now: () => number = Date.now,
  ) {}

  emit(key: string, d: EventDraft): void {
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= this.limits.max_keys) {
        key = "overflow";
        b = this.buckets.get(key);
      }
      if (!b) {
        b = { count: 0, first: d };
        this.buckets.set(key, b);
      }
    }
    b.count++;
    if (b.count <= this.limits.per_key && key !== "overflow") this.record(d);
  }

  /** Records without counting (state changes that are never floods). */
  record(d: EventDraft): void {
    try {
      this.sink.record(d);
    } catch {
      /* EventSink.record never throws; belt and braces for a foreign sink */
    }
  }

  /** Records summaries of what the interval suppressed and starts a new interval. */
  flush(): void {
    const buckets = this.buckets;
    this.buckets = new Map();
    for (const [key, b] of buckets) {
      const extra = key === "overflow" ? b.count : b.count - this.limits.per_key;
      if (extra <= 0) continue;
      const f = b.first;
      this.record({
        ...f,
        time: this.now(),
        ocsf: {
          ...f.ocsf,
          message: `${extra} more like this in ${this.limits.interval_ms} ms: ${f.ocsf.message}`,
          count: extra,
          unmapped: { ...((f.ocsf.unmapped as object) ?? {}), suppressed: extra, aggregate_key: key },
        },
      });
    }
  }
}
