/**
 * Per-source FIFO queues served round robin: one client that floods a device cannot push
 * another client's request behind its whole backlog. Sources are opaque keys (connections).
 */
export class FairQueue<T extends { deadline: number }> {
  private readonly queues = new Map<unknown, T[]>();
  private size = 0;

  get length(): number {
    return this.size;
  }

  push(source: unknown, item: T): void {
    const q = this.queues.get(source);
    if (q) q.push(item);
    else this.queues.set(source, [item]);
    this.size++;
  }

  /** The next item, taking sources in turn (a Map keeps insertion order: re-insert to rotate). */
  shift(): T | undefined {
    for (const [source, q] of this.queues) {
      const item = q.shift()!;
      this.queues.delete(source);
      if (q.length) this.queues.set(source, q);
      this.size--;
      return item;
    }
    return undefined;
  }

  /** Remove every item whose deadline has passed. */
  expire(now: number, onExpired: (item: T) => void): void {
    for (const [source, q] of this.queues) {
      let i = 0;
      while (i < q.length && now >= q[i]!.deadline) onExpired(q[i++]!);
      if (!i) continue;
      q.splice(0, i);
      this.size -= i;
      if (!q.length) this.queues.delete(source);
    }
  }

  drain(): T[] {
    const all = [...this.queues.values()].flat();
    this.queues.clear();
    this.size = 0;
    return all;
  }
}
