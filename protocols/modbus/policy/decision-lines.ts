/**
 * Commissioning mode's output: decision records as JSON lines, written together at most
 * `maxDelayMs` (100) after the first of a batch, or at `maxBytes` (64 KiB), in order.
 *
 * Each write to a pipe or terminal is a system call that copies the text; once per event-loop
 * turn it took 40 % of a busy commissioning proxy's CPU time, and at SCADA's polling rates the
 * lines themselves were most of what it did. So a repeat is counted, not printed again: within
 * one batch, identical allowed requests that are not writes and were answered without an
 * exception (same listener, client, certificate, unit, rule and request bytes: the proxy's
 * `repeatKey`) are one line, at
 * the first one's place, with `count` (and `last_ts`, the last one's time) when there were more.
 * Every denial, write, malformed frame and exception keeps a line of its own.
 *
 * Bounded: a batch holds at most `maxBytes` of text and `maxLines` lines; past either it is
 * written at once, so a slow reader slows the proxy instead of growing memory.
 */
import type { DecisionRecord } from "./decision-record";

interface Repeated {
  /** The first record's JSON line. */
  line: string;
  count: number;
  last: number;
}

/** Where a proxy's decisions go (commissioning mode). */
export interface DecisionSink {
  /**
   * One decision. `repeatKey`, for an allowed request that is not a write and was answered
   * without an exception: what identical requests share (the proxy knows; a record alone does
   * not say whether a diagnostic changes state).
   */
  add(r: DecisionRecord, repeatKey?: string): void;
  /** Counts one more of the decision added with `repeatKey` in this batch; false when there is
   * none (the caller then adds the record), so a repeat costs no record. */
  repeat(repeatKey: string, ts: number): boolean;
}

export class DecisionLines implements DecisionSink {
  private pending: Array<string | Repeated> = [];
  private readonly repeats = new Map<string, Repeated>();
  private bytes = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly write: (text: string) => void,
    private readonly maxBytes = 64 * 1024,
    private readonly maxDelayMs = 100,
    private readonly maxLines = 4096,
  ) {}

  repeat(repeatKey: string, ts: number): boolean {
    const seen = this.repeats.get(repeatKey);
    if (!seen) return false;
    seen.count++;
    seen.last = ts;
    return true;
  }

  add(r: DecisionRecord, repeatKey?: string): void {
    if (repeatKey !== undefined && this.repeat(repeatKey, r.ts)) return;
    const line = JSON.stringify(r);
    if (repeatKey === undefined) return this.append(line, line.length);
    const entry: Repeated = { line, count: 1, last: r.ts };
    this.repeats.set(repeatKey, entry);
    this.append(entry, line.length);
  }

  private append(entry: string | Repeated, length: number): void {
    this.pending.push(entry);
    this.bytes += length + 1;
    if (this.bytes >= this.maxBytes || this.pending.length >= this.maxLines) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.maxDelayMs);
  }

  /** Writes what is pending now (also at the end). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.pending.length) return;
    let text = "";
    for (const e of this.pending) text += (typeof e === "string" ? e : e.count === 1 ? e.line : `${e.line.slice(0, -1)},"count":${e.count},"last_ts":${e.last}}`) + "\n";
    this.pending = [];
    this.repeats.clear();
    this.bytes = 0;
    this.write(text);
  }
}
