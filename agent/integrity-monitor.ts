import type { Logger } from "pino";
import type { LoadedConfig } from "./config/load";
import type { ControlServer } from "./control/server";
import { describeError } from "./core/errors";
import type { EventSink } from "./core/events";
import { acceptDraft, checkIntegrity, stageAccept, driftDraft, failedDraft, goneDraft, missingAtStartDraft, type CheckResult } from "../firmware-hooks/integrity";

/**
 * The daemon's integrity watch: measures at start (taking the first manifest if there is
 * none, audited) and every `integrity.interval_ms`; a drift is a signed finding, recorded
 * again only when what drifted changes. `integrity.status` and `integrity.check` on the control socket.
 */
export class IntegrityMonitor {
  private timer: NodeJS.Timeout | undefined;
  private reported = "";
  /** The measurement error last reported ("" : none). */
  private failure = "";
  /** Whether this run measured before (only its first measurement may take a missing manifest). */
  private measured = false;
  last: CheckResult | undefined;
  lastError: string | undefined;

  constructor(
    private readonly loaded: LoadedConfig,
    private readonly sink: EventSink,
    private readonly log: Logger,
    /** The outbox's boot before this one (null: the gateway's first). */
    private readonly previousBoot: number | null = null,
  ) {}

  start(control: ControlServer): void {
    control.handle("integrity.status", () => this.status());
    control.handle("integrity.check", () => this.check());
    this.check();
    this.timer = setInterval(() => this.check(), this.loaded.config.integrity!.interval_ms);
    this.timer.unref();
  }

  status(): Record<string, unknown> {
    return { state: this.last?.state ?? "unknown", ...(this.last ?? {}), error: this.lastError ?? null };
  }

  check(): Record<string, unknown> {
    const first = !this.measured;
    this.measured = true;
    try {
      let r = checkIntegrity(this.loaded);
      if (r.state === "no_manifest" && first) {
        // Recorded before it is in force: a record that fails leaves no manifest.
        const a = stageAccept(this.loaded);
        try {
          this.sink.record(acceptDraft(a.result, "the daemon (no manifest at start)"));
        } catch (e) {
          a.discard();
          throw e;
        }
        a.install();
        // A gateway that ran before had a manifest, unless integrity was configured just now:
        // taken afresh, whatever changed while it was missing is the reference from now on.
        if (this.previousBoot !== null) this.sink.record(missingAtStartDraft(r.manifest, this.previousBoot));
        r = checkIntegrity(this.loaded);
      }
      this.last = r;
      this.lastError = undefined;
      this.failure = "";
      // A manifest gone while the daemon runs is not taken afresh: that would make whatever was
      // changed meanwhile the new reference. The files stay unjudged until someone accepts.
      const key = r.state === "drift" ? JSON.stringify(r.drift) : r.state === "no_manifest" ? "no_manifest" : "";
      if (key && key !== this.reported) this.sink.record(r.state === "drift" ? driftDraft(r.drift, r.manifest) : goneDraft(r.manifest));
      this.reported = key;
    } catch (e) {
      this.lastError = describeError(e);
      this.log.error({ err: this.lastError }, "Integrity measurement failed.");
      // A manifest made unreadable hides any drift: a finding, again only when the error changes.
      if (this.lastError !== this.failure) this.sink.record(failedDraft(this.lastError));
      this.failure = this.lastError;
      this.last = undefined;
    }
    return this.status();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
