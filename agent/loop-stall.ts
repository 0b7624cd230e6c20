/**
 * The daemon's event loop held up. Everything runs on one loop: the Modbus proxy's answers,
 * detection, the outbox's commits (better-sqlite3 is synchronous) and the link to the SOC. A
 * storage fsync that takes seconds on a worn SD card, a process stopped by SIGSTOP or starved
 * of CPU holds all of them: SCADA sees timeouts, and nothing said why. A timer every
 * CHECK_MS measures how late it fires (the monotonic clock); held up `stall_report_ms` or more
 * is a signed system event, with the slowest outbox commit meanwhile when that explains it.
 * At most one event a minute: the next one counts the stalls in between. The heartbeat carries
 * the longest hold-up since the previous heartbeat (`loop_max_stall_ms`).
 */
import type { Logger } from "pino";
import { performance } from "node:perf_hooks";
import { OcsfClass, type EventSink } from "./core/events";
import { ReportEvery } from "./core/report-every";

export const CHECK_MS = 250;
const REPORT_EVERY_MS = 60_000;

export interface LoopStallOptions {
  /** A hold-up this long (ms) or longer is reported. */
  thresholdMs: number;
  sink: EventSink;
  log: Logger;
  /** The slowest outbox commit (ms) since the previous call, and forgets it. */
  slowestCommit?: () => number;
  mono?: () => number;
}

export class LoopStallWatch {
  private timer: NodeJS.Timeout | undefined;
  private last = 0;
  private readonly reports = new ReportEvery(REPORT_EVERY_MS);
  /** The longest stall since the last event (at most one event a minute). */
  private unreportedMax = 0;
  /** The longest hold-up since `takeMax` was last called (for the heartbeat). */
  private max = 0;
  private readonly mono: () => number;

  constructor(private readonly o: LoopStallOptions) {
    this.mono = o.mono ?? (() => performance.now());
  }

  start(): void {
    this.last = this.mono();
    this.timer = setInterval(() => this.tick(), CHECK_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** The longest hold-up (ms) since the previous call. */
  takeMax(): number {
    const m = this.max;
    this.max = 0;
    return Math.round(m);
  }

  /** One check: how late this one came. Public for tests that drive the clock. */
  tick(): void {
    const now = this.mono();
    const held = now - this.last - CHECK_MS;
    this.last = now;
    const commit = this.o.slowestCommit?.() ?? 0;
    if (held <= 0) return;
    if (held > this.max) this.max = held;
    if (held < this.o.thresholdMs) return;
    this.unreportedMax = Math.max(this.unreportedMax, held);
    const stalls = this.reports.hit(now);
    if (!stalls) {
      this.o.log.warn({ stall_ms: Math.round(held), slowest_commit_ms: Math.round(commit) }, "The event loop was held up again; reported with the next such event.");
      return;
    }
    this.report(stalls, held, commit);
  }

  /** `stalls`: since the last event, this one included. */
  private report(stalls: number, held: number, commit: number): void {
    const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    const cause =
      commit >= held / 2
        ? `; an outbox commit alone took ${s(commit)}: the storage was slow to write (a worn or failing SD card)`
        : "; no outbox commit explains it: the process was stopped, starved of CPU or busy";
    const others = stalls > 1 ? ` (${stalls - 1} more hold-up(s) since the last such event, up to ${s(this.unreportedMax)})` : "";
    const message = `The daemon's event loop was held up for ${s(held)}: the Modbus proxy did not answer, and detection and the SOC link waited, meanwhile${cause}${others}`;
    const fields = { stall_ms: Math.round(held), slowest_commit_ms: Math.round(commit), stalls, longest_ms: Math.round(this.unreportedMax) };
    this.unreportedMax = 0;
    this.o.log.warn(fields, message);
    this.o.sink.record({
      class: "system",
      severity: 3,
      ocsf: { class_uid: OcsfClass.ApplicationLifecycle, activity_id: 99, message, unmapped: { error_type: "loop_stall", ...fields } },
    });
  }
}
