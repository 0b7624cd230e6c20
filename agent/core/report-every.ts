/**
 * The first occurrence of something is reported at once, the next ones at most once per
 * `everyMs`, each report counting the occurrences since the previous one (so a repeated
 * failure or a flood costs one event per period and none goes uncounted).
 */
export class ReportEvery {
  private pending = 0;
  private at = Number.NEGATIVE_INFINITY;

  constructor(private readonly everyMs: number) {}

  /** One occurrence at `now` (monotonic ms): how many to report (this one included), or 0 when no report is due. */
  hit(now: number): number {
    this.pending++;
    if (now - this.at < this.everyMs) return 0;
    this.at = now;
    const n = this.pending;
    this.pending = 0;
    return n;
  }
}
