import { describeError } from "../core/errors";

/** One stretch of time in which the outbox's storage failed (read-only, full, I/O errors). */
export interface StorageEpisode {
  error: string;
  since: number;
  until: number;
  failures: number;
}

export interface StorageView {
  state: "ok" | "failing";
  /** Where events are kept: the outbox file, or memory when it could not be opened at start. */
  mode: "disk" | "memory";
  error: string | null;
  since: number | null;
  failures: number;
  next_retry_ms: number | null;
}

/** Retry delays while storage fails: 1 s doubling to 10 s (a retry signs and writes 64 events). */
const MIN_RETRY_MS = 1000;
const MAX_RETRY_MS = 10_000;

/**
 * The outbox's storage state, shared by the recorder (commits) and the forwarder (acks): the
 * one place that decides how long to wait before the next attempt, and what `status` and the
 * heartbeats say about storage.
 */
export class StorageHealth {
  private failingSince: number | undefined;
  private error: string | undefined;
  private failures = 0;
  private nextRetryAt: number | undefined;
  private readonly recoveredFns = new Set<(e: StorageEpisode) => void>();

  constructor(
    public mode: "disk" | "memory" = "disk",
    private readonly now: () => number = Date.now,
  ) {}

  get failing(): boolean {
    return this.failingSince !== undefined;
  }

  /**
   * Records a failed write; returns the delay before the recorder's next attempt and whether it
   * is news. Only the recorder's own attempts (`attempt`) lengthen the delay; failures others
   * see meanwhile (a delete, a read) only keep the state failing.
   */
  failed(e: unknown, attempt = true): { delayMs: number; fresh: boolean } {
    const fresh = this.failingSince === undefined;
    this.failingSince ??= this.now();
    this.error = describeError(e);
    if (!attempt && !fresh) return { delayMs: Math.max(0, (this.nextRetryAt ?? this.now()) - this.now()), fresh };
    this.failures++;
    const delayMs = Math.min(MAX_RETRY_MS, MIN_RETRY_MS * 2 ** Math.min(this.failures - 1, 5));
    this.nextRetryAt = this.now() + delayMs;
    return { delayMs, fresh };
  }

  /** Records a successful write; when storage was failing, the episode it ends. */
  succeeded(): StorageEpisode | undefined {
    if (this.failingSince === undefined) return undefined;
    const ep: StorageEpisode = { error: this.error ?? "unknown", since: this.failingSince, until: this.now(), failures: this.failures };
    this.failingSince = undefined;
    this.error = undefined;
    this.failures = 0;
    this.nextRetryAt = undefined;
    for (const fn of this.recoveredFns) fn(ep);
    return ep;
  }

  onRecovered(fn: (e: StorageEpisode) => void): () => void {
    this.recoveredFns.add(fn);
    return () => this.recoveredFns.delete(fn);
  }

  view(): StorageView {
    return {
      state: this.failing ? "failing" : "ok",
      mode: this.mode,
      error: this.error ?? null,
      since: this.failingSince ?? null,
      failures: this.failures,
      next_retry_ms: this.nextRetryAt === undefined ? null : Math.max(0, this.nextRetryAt - this.now()),
    };
  }
}
