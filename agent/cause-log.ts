/**
 * Says why something keeps failing without flooding the log: each distinct cause once at `warn`,
 * again when the cause changes, and a reminder while it persists (every `reminderMs`, with how
 * many times it happened since). `clear` ends an episode (logged at info when there was one).
 */
export interface WarnLog {
  warn(o: object, m: string): void;
  info(o: object, m: string): void;
}

export class CauseLog {
  private cause: string | undefined;
  private since = 0;
  private lastWarn = 0;
  private repeats = 0;

  constructor(
    private readonly log: WarnLog,
    private readonly what: string,
    private readonly fields: object = {},
    private readonly reminderMs = 5 * 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  report(cause: string): void {
    const t = this.now();
    if (cause !== this.cause) {
      this.cause = cause;
      this.since = this.lastWarn = t;
      this.repeats = 0;
      this.log.warn({ ...this.fields, err: cause }, `${this.what}: ${cause}`);
      return;
    }
    this.repeats++;
    if (t - this.lastWarn >= this.reminderMs) {
      this.lastWarn = t;
      this.log.warn({ ...this.fields, err: cause, failing_for_s: Math.round((t - this.since) / 1000), repeats: this.repeats }, `${this.what} (still): ${cause}`);
      this.repeats = 0;
    }
  }

  /** The thing works again. */
  clear(message: string): void {
    if (this.cause === undefined) return;
    this.log.info({ ...this.fields, after_s: Math.round((this.now() - this.since) / 1000), last_error: this.cause }, message);
    this.cause = undefined;
  }
}
