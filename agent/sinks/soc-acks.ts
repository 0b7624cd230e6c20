import type { KeyObject } from "node:crypto";
import type { Logger } from "pino";
import type { Outbox } from "../outbox/store";
import { openAck } from "../soc/ack";
import { ReportEvery } from "../core/report-every";

export interface Mark {
  boot: number;
  seq: number;
}

/**
 * The gateway's side of end-to-end acknowledgement (`upstream.ack: soc`). The broker's PUBACK
 * only moves the in-flight window and the broker mark; rows are deleted when the SOC's signed
 * ack names them. When rows the broker acknowledged stay unacknowledged by the SOC for
 * `soc_ack_timeout_ms` with no SOC progress, `due` says so and the forwarder sends everything
 * not yet acknowledged again, in order (the SOC de-duplicates; those batches are marked as
 * re-sends, so it writes no duplicate line for them).
 */
export class SocAcks {
  broker: Mark | null = null;
  soc: Mark | null = null;
  readonly counters = { acks: 0, bad_acks: 0, resends: 0 };
  /** Highest row id the broker acknowledged. */
  private brokerId = 0;
  /** Since when rows acknowledged by the broker wait for the SOC (undefined: none wait). */
  private waitingSince: number | undefined;
  /** Re-sends without SOC progress double the wait (up to MAX_BACKOFF times the timeout). */
  private backoff = 1;

  /** Refused acks: reported at once, then at most once per REFUSED_REPORT_MS (see `onRefused`). */
  private readonly refusals = new ReportEvery(REFUSED_REPORT_MS);

  constructor(
    private readonly o: {
      device: string;
      key: KeyObject;
      outbox: Outbox;
      timeoutMs: number;
      log: Logger;
      /**
       * An ack that does not verify, reported the first time and then at most once per
       * REFUSED_REPORT_MS (`count`: refused since the previous report, this one included).
       */
      onRefused?: (reason: string, count: number) => void;
    },
  ) {}

  onPuback(lastId: number, last: Mark, now: number): void {
    this.brokerId = Math.max(this.brokerId, lastId);
    if (!this.broker || after(last, this.broker)) this.broker = last;
    this.waitingSince ??= now;
  }

  /** An ack message from the SOC: verified, then the rows it names are deleted. */
  onAck(payload: Buffer, now: number): number {
    const a = openAck(payload, this.o.device, this.o.key);
    if (typeof a === "string") {
      this.counters.bad_acks++;
      // Someone who can write to this gateway's ack topic can try to have it delete events the
      // SOC never received; a SOC whose ack key changed leaves every event in the outbox until
      // it fills. Either way the SOC must hear of it. A broker that keeps sending junk (a
      // retained one comes back at every reconnect) must flood neither the SOC nor the log.
      const n = this.refusals.hit(now);
      this.o.log[n ? "warn" : "debug"]({ reason: a }, "Ignored an acknowledgement that does not verify.");
      if (n) this.o.onRefused?.(a, n);
      return 0;
    }
    this.counters.acks++;
    const freed = this.o.outbox.ackThrough(a.boot, a.seq);
    if (!this.soc || after(a, this.soc)) this.soc = { boot: a.boot, seq: a.seq };
    if (freed > 0) {
      this.backoff = 1;
      const first = this.o.outbox.firstSendableId();
      this.waitingSince = first !== undefined && first <= this.brokerId ? now : undefined;
    }
    return freed;
  }

  /** True when the SOC has made no progress on broker-acknowledged rows for the timeout. */
  due(now: number): boolean {
    if (this.waitingSince === undefined || now - this.waitingSince < this.o.timeoutMs * this.backoff) return false;
    const first = this.o.outbox.firstSendableId();
    this.waitingSince = undefined;
    if (first === undefined || first > this.brokerId) return false;
    this.counters.resends++;
    const waited = this.o.timeoutMs * this.backoff;
    // A SOC that stays silent (no receiver yet) must not make the gateway send its whole
    // outbox every timeout: each re-send without progress doubles the wait.
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF);
    this.o.log.info({ waited_ms: waited, from_row: first }, "No end-to-end acknowledgement from the SOC; sending the unacknowledged events again.");
    return true;
  }
}

const MAX_BACKOFF = 32;
/** Refused acks are reported at most this often (the first at once; a retained forgery comes back at every reconnect). */
export const REFUSED_REPORT_MS = 600_000;

function after(a: Mark, b: Mark): boolean {
  return a.boot > b.boot || (a.boot === b.boot && a.seq > b.seq);
}
