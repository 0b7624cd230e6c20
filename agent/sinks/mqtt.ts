import type { KeyObject } from "node:crypto";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import type { Logger } from "pino";
import type { Config } from "../config/schema";
import type { ComponentHealth, Sink, SinkState } from "../core/component";
import { describeError } from "../core/errors";
import { storedBodyHashOk } from "../core/envelope";
import { OcsfClass } from "../core/events";
import type { Recorder } from "../events/recorder";
import { BatchSealer, compressBatch } from "../events/seal";
import { brokerAuth, noDelay, redactUrl } from "../mqtt-connection";
import { CauseLog } from "../cause-log";
import { Outage, type OutageReport } from "./outage";
import { ackTopic } from "../soc/ack";
import { SocAcks, type Mark } from "./soc-acks";
import type { Outbox, RawRow } from "../outbox/store";
import { loadSocAckPublicKey, loadSocPublicKey } from "../keys/identity";
import type { SinkContext } from "./registry";

const OPEN = Buffer.from("[");
const CLOSE = Buffer.from("]");
const COMMA = Buffer.from(",");
const EMPTY = Buffer.alloc(0);
/** Acknowledged batches kept for deleting while storage fails (beyond it they are sent again after a restart). */
const MAX_UNACKED = 4096;
import { RateMeter } from "../rate";

export interface ForwarderOptions {
  upstream: Config["upstream"];
  device: string;
  outbox: Outbox;
  recorder: Recorder;
  socPublicKey: Uint8Array;
  /** The SOC's ack key (soc.pub `ack_public_key`); needed with `upstream.ack: soc`. */
  socAckKey?: KeyObject;
  log: Logger;
  /** How often a broker failure that persists is logged again (default 5 min). */
  warnReminderMs?: number;
}

/** The `upstream` sink (agent/sinks/registry.ts): the forwarder, sealing to upstream.soc_public_key. */
export function mqttSink({ config: c, outbox, recorder, log }: SinkContext): MqttForwarder {
  const u = c.upstream;
  return new MqttForwarder({ upstream: u, device: c.device.id, outbox, recorder, socPublicKey: loadSocPublicKey(u.soc_public_key!), socAckKey: u.ack === "soc" ? loadSocAckPublicKey(u.soc_public_key!) : undefined, log });
}

/** Topic of a device's event batches. */
export function eventsTopic(prefix: string, device: string): string {
  return `${prefix}/${device}/events`;
}

/**
 * Drains the outbox to the SOC broker: MQTT 5, QoS 1, several events per message (bounded by
 * count and bytes, and by the broker's Maximum Packet Size), a bounded window of messages in
 * flight (its own flow control, also capped by the broker's Receive Maximum). With
 * `upstream.ack: soc` (default) a row is deleted only when the SOC receiver acknowledged it end
 * to end (soc-acks.ts), and the PUBACK only moves the window; with `broker`, on the PUBACK of
 * the message that carried it. mqtt.js never stores anything for us:
 * each connection is a fresh client, and after a reconnect the outbox is replayed in order from
 * its oldest unacknowledged row. A message the broker rejects (PUBACK reason >= 0x80) is parked,
 * reported as an event, and retried every `parked_retry_ms`; it never blocks the rest.
 */
export class MqttForwarder implements Sink {
  readonly name = "mqtt";
  state: SinkState = "connecting";
  lastError: string | undefined;
  private client: MqttClient | undefined;
  private cursor = 0;
  private readonly inflight = new Map<number, number[]>(); // message token -> row ids
  private readonly inflightIds = new Set<number>();
  private token = 0;
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private parkedTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private pumping = false;
  private maxPacket: number;
  private window: number;
  private readonly sealer: BatchSealer;
  private readonly topic: string;
  readonly out = new RateMeter();
  readonly counters = { messages: 0, events: 0, bytes: 0, rejected: 0, too_large: 0, quarantined: 0, reconnects: 0 };
  private unsubscribe: (() => void) | undefined;
  /** Why the broker cannot be reached, at warn: once per cause, and a reminder while it lasts. */
  private readonly causes: CauseLog;
  /** The current episode without the broker, for the `upstream_outage` event when it ends. */
  private readonly outage = new Outage();
  private offRecovered: (() => void) | undefined;
  /** Acknowledged batches whose delete failed (storage failing): retried when it works again. */
  private readonly unacked: { ids: number[]; bytes: number }[] = [];
  /** End-to-end acks (`upstream.ack: soc`); undefined: rows are freed on PUBACK. */
  private readonly acks: SocAcks | undefined;
  private readonly ackTopic: string;
  /** The refusal of the ack subscription last reported (undefined: subscribed, or not tried yet). */
  private ackRefused: string | undefined;
  private ackTimer: NodeJS.Timeout | undefined;
  /**
   * Highest row id that may have been published before: a batch starting at or below it is a
   * re-send. Rows found at start may have been sent by the previous run.
   */
  private sentId: number;
  /** Highest row id this run handed to a connection (see `sentThrough`). */
  private publishedId = 0;

  constructor(private readonly o: ForwarderOptions) {
    this.sealer = new BatchSealer(o.socPublicKey);
    this.topic = eventsTopic(o.upstream.topic_prefix, o.device);
    this.ackTopic = ackTopic(o.upstream.topic_prefix, o.device);
    this.sentId = o.outbox.lastCommittedId;
    if (o.upstream.ack === "soc") {
      if (!o.socAckKey) throw new Error("upstream.ack soc needs the SOC's ack key");
      this.acks = new SocAcks({ device: o.device, key: o.socAckKey, outbox: o.outbox, timeoutMs: o.upstream.soc_ack_timeout_ms, log: o.log, onRefused: (reason, count) => this.reportRefusedAck(reason, count) });
    }
    this.maxPacket = o.upstream.max_message_bytes;
    this.window = o.upstream.max_inflight;
    this.causes = new CauseLog(o.log, "Cannot reach the SOC broker; events stay in the outbox", { url: o.upstream.url ? redactUrl(o.upstream.url) : undefined }, o.warnReminderMs);
  }

  /** An acknowledgement on this gateway's ack topic that does not verify (see SocAcks). */
  private reportRefusedAck(reason: string, count: number): void {
    const forged = reason.startsWith("ack signature");
    const why = forged
      ? "it is not signed with the SOC's ack key: someone else can write to this topic (trying to have events deleted that the SOC never received), or the SOC's keys changed and this gateway lacks its new soc.pub"
      : "it is not an acknowledgement for this gateway from the SOC";
    this.o.recorder.record({
      class: "finding",
      severity: forged ? 4 : 3,
      ocsf: {
        class_uid: OcsfClass.DetectionFinding,
        activity_id: 1,
        message: `Refused an acknowledgement on ${this.ackTopic} (${reason}): ${why}; no event was deleted for it${count > 1 ? ` (${count} refused since the last such finding)` : ""}`,
        finding_info: { title: "SOC acknowledgement refused", types: ["gatewarden.ack_refused"] },
        unmapped: { error_type: "ack_refused", topic: this.ackTopic, reason, count },
      },
    });
  }

  /** Row ids currently in flight (the outbox must not evict them). */
  inFlight(): ReadonlySet<number> {
    return this.inflightIds;
  }

  /**
   * The highest row id this run published (0: none). Batches are published in id order and a
   * reconnect replays from the oldest row, so every row still in the outbox up to it was
   * published at least once (a parked one was, and the broker refused it); rows left by an
   * earlier run count only once this run published them.
   */
  sentThrough(): number {
    return this.publishedId;
  }

  start(): void {
    this.unsubscribe = this.o.recorder.onCommit(() => this.pump());
    this.offRecovered = this.o.recorder.health.onRecovered(() => this.retryAcks());
    this.parkedTimer = setInterval(() => this.retryParked(), this.o.upstream.parked_retry_ms);
    this.parkedTimer.unref();
    if (this.acks) {
      const acks = this.acks;
      this.ackTimer = setInterval(() => {
        if (this.state !== "up" || !acks.due(Date.now())) return;
        this.cursor = 0; // everything not acknowledged by the SOC, in order
        this.pump();
      }, Math.min(1000, Math.ceil(this.o.upstream.soc_ack_timeout_ms / 2)));
      this.ackTimer.unref();
    }
    this.outage.begin();
    this.connect();
  }

  health(): ComponentHealth {
    return { ok: this.state === "up", state: this.state, ...(this.lastError ? { detail: this.lastError } : {}) };
  }

  /** State, last error, acknowledged positions and counters (`gatewarden status` shows them under `upstream`). */
  status(): { state: SinkState; last_error: string | null; counters: MqttForwarder["counters"] } & ReturnType<MqttForwarder["marks"]> {
    return { state: this.state, last_error: this.lastError ?? null, ...this.marks(), counters: this.counters };
  }

  /** The last position the broker acknowledged and the last the SOC acknowledged end to end. */
  marks(): { ack: "soc" | "broker"; broker_acked: Mark | null; soc_acked: Mark | null; acks?: SocAcks["counters"] } {
    return { ack: this.o.upstream.ack, broker_acked: this.acks?.broker ?? this.brokerMark, soc_acked: this.acks?.soc ?? null, ...(this.acks ? { acks: this.acks.counters } : {}) };
  }

  private brokerMark: Mark | null = null;

  private connect(): void {
    if (this.stopped) return;
    const u = this.o.upstream;
    this.state = "connecting";
    this.o.log.debug({ url: redactUrl(u.url!), attempt: this.attempt }, "Connecting to the SOC broker.");
    let opts: IClientOptions;
    try {
      opts = {
        protocolVersion: u.protocol_version,
        clientId: u.client_id ?? `gatewarden-${this.o.device}`,
        clean: true,
        keepalive: u.keepalive_s,
        connectTimeout: u.connect_timeout_ms,
        reconnectPeriod: 0,
        resubscribe: false,
        ...(u.protocol_version === 5 ? { properties: { sessionExpiryInterval: 0 } } : {}),
        ...brokerAuth({ ca: u.ca, cert: u.cert, key: u.key, username: u.username, passwordFile: u.password_file }, "upstream"),
      };
    } catch (e) {
      this.fail(describeError(e));
      return;
    }
    const client = mqtt.connect(u.url!, opts);
    this.client = client;
    client.on("connect", (connack) => {
      if (this.client !== client) return;
      noDelay(client);
      this.attempt = 0;
      this.state = "up";
      this.lastError = undefined;
      this.causes.clear("SOC broker reachable again.");
      const outage = this.outage.up(u.outage_report_ms);
      if (outage) this.reportOutage(outage);
      const p = connack.properties;
      this.maxPacket = Math.min(u.max_message_bytes, p?.maximumPacketSize ?? Infinity);
      this.window = Math.min(u.max_inflight, p?.receiveMaximum ?? Infinity);
      this.cursor = 0; // ordered replay of everything not yet acknowledged
      this.o.log.info({ url: redactUrl(u.url!), max_packet: this.maxPacket, window: this.window }, "Connected to the SOC broker.");
      if (this.acks) {
        client.subscribe(this.ackTopic, { qos: 1 }, (err, granted) => {
          const refused = err ?? (granted?.some((g) => g.qos >= 0x80) ? new Error(`SUBACK reason ${granted.map((g) => g.qos).join(",")}`) : undefined);
          if (!refused) {
            this.ackRefused = undefined;
            return;
          }
          if (this.client !== client) return;
          const reason = describeError(refused);
          this.lastError = `cannot subscribe to the SOC's acknowledgements on ${this.ackTopic}: ${reason}`;
          this.o.log.error({ err: this.lastError }, "No end-to-end acknowledgements: events stay in the outbox and are re-sent.");
          if (reason === this.ackRefused) return; // the same refusal after a reconnect: not news
          this.ackRefused = reason;
          this.o.recorder.record({
            class: "system",
            severity: 4,
            ocsf: {
              class_uid: OcsfClass.ApplicationLifecycle,
              activity_id: 99,
              message: `The broker refused the subscription to the SOC's acknowledgements on ${this.ackTopic} (${reason}): delivered events stay in the outbox and are sent again after each reconnect, until it fills and evicts (upstream.ack: soc; the broker's ACL must let the gateway read that topic)`,
              unmapped: { error_type: "acks_unsubscribed", stage: "sending", topic: this.ackTopic, reason },
            },
          });
        });
      }
      // The loss records for evictions while it was down go first, so the SOC can acknowledge
      // the backlog as it arrives (see Recorder.nameEvictions).
      this.o.recorder.nameEvictions();
      this.pump();
    });
    client.on("message", (topic, payload) => {
      if (this.client !== client || !this.acks || topic !== this.ackTopic) return;
      try {
        if (this.acks.onAck(payload, Date.now()) > 0) this.pump();
      } catch (e) {
        this.storageFailed(e, "deleting events the SOC acknowledged");
      }
    });
    client.on("error", (e) => {
      if (this.client === client) this.fail(describeError(e));
    });
    // The previous attempt's error is not this one's: a bare close says so.
    client.on("close", () => {
      if (this.client === client) this.fail("connection closed (by the broker, or before MQTT CONNACK)");
    });
    client.on("disconnect", (p) => {
      if (this.client === client) this.fail(`broker disconnected us (reason ${p.reasonCode ?? "?"})`);
    });
  }

  private fail(reason: string): void {
    const client = this.client;
    this.client = undefined;
    if (client) client.end(true);
    this.inflight.clear();
    this.inflightIds.clear();
    if (this.stopped) return;
    this.state = "down";
    this.lastError = reason;
    this.causes.report(reason);
    this.outage.failed(reason);
    if (this.reconnectTimer) return;
    const u = this.o.upstream;
    const cap = Math.min(u.reconnect_max_ms, u.reconnect_min_ms * 2 ** Math.min(this.attempt++, 20));
    const delay = Math.round(u.reconnect_min_ms / 2 + Math.random() * (cap - u.reconnect_min_ms / 2)); // jittered
    this.counters.reconnects++;
    this.o.log.debug({ err: reason, delay_ms: delay }, "Reconnecting after a delay.");
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.connect();
    }, delay);
  }

  /** Says, once the broker is reachable again, how long and why it was not (severity 3). */
  private reportOutage(o: OutageReport): void {
    const causes = o.causes.map((c) => `${c.cause} (${c.count}x)`).join("; ");
    this.o.recorder.record({
      class: "system",
      severity: 3,
      ocsf: {
        class_uid: OcsfClass.ApplicationLifecycle,
        activity_id: 99,
        message: `The SOC broker could not be reached for ${o.seconds} s (from ${new Date(o.from).toISOString()}, ${o.attempts} failed attempts${causes ? `: ${causes}` : ""}); the events recorded meanwhile were kept in the outbox and are sent now`,
        unmapped: { error_type: "upstream_outage", stage: "sending", outage: o },
      },
    });
  }

  /** Fills the in-flight window from the outbox. */
  pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.state === "up" && this.client && this.inflight.size < this.window) {
        const rows = this.o.outbox.readRawAfter(this.cursor, this.o.upstream.max_batch_events);
        if (!rows.length) break;
        // Only what survives a power cut leaves the gateway (one WAL fsync covers every row committed so far).
        this.o.outbox.syncForSend(rows[rows.length - 1]!.id);
        const batch = this.takeBatch(rows);
        if (batch.length) this.send(batch);
      }
    } catch (e) {
      this.lastError = describeError(e);
      this.o.log.error({ err: this.lastError }, "Forwarding failed; will retry.");
    } finally {
      this.pumping = false;
    }
  }

  /** Picks the longest prefix of rows that fits one message; quarantines corrupt rows. */
  private takeBatch(rows: RawRow[]): RawRow[] {
    const out: RawRow[] = [];
    let bytes = 512; // header and box overhead
    for (const row of rows) {
      this.cursor = Math.max(this.cursor, row.id);
      // Already on its way: a parked retry rewinds the cursor while messages are in flight.
      if (this.inflightIds.has(row.id)) continue;
      if (!storedBodyHashOk(row.body)) {
        this.quarantine(row);
        continue;
      }
      if (out.length && bytes + row.body.length + 1 > this.maxPacket) {
        this.cursor = out[out.length - 1]!.id;
        break;
      }
      bytes += row.body.length + 1;
      out.push(row);
    }
    return out;
  }

  private quarantine(row: RawRow): void {
    this.counters.quarantined++;
    try {
      this.o.outbox.quarantine(row, "hash mismatch or unparseable body", Date.now());
    } catch (e) {
      // Skipped on this connection (the cursor is past it); checked again after a reconnect.
      this.storageFailed(e, "quarantining a corrupt row");
      return;
    }
    this.o.log.error({ boot: row.boot, seq: row.seq }, "Corrupt outbox row quarantined; recording a loss record.");
    this.o.recorder.reportQuarantined(row, "stored event failed its hash check");
  }

  private send(batch: RawRow[]): void {
    const first = batch[0]!;
    const last = batch[batch.length - 1]!;
    const parts: Buffer[] = [OPEN];
    for (let i = 0; i < batch.length; i++) parts.push(i ? COMMA : EMPTY, batch[i]!.body);
    parts.push(CLOSE);
    // Compression runs on the thread pool while this thread prepares the next batches; the
    // chain keeps publishing in outbox order.
    const compressed = compressBatch(Buffer.concat(parts));
    const ids = batch.map((r) => r.id);
    let rowBytes = 0;
    for (const r of batch) rowBytes += r.bytes;
    const tok = ++this.token;
    this.inflight.set(tok, ids);
    for (const id of ids) this.inflightIds.add(id);
    const client = this.client!;
    const resend = first.id <= this.sentId;
    this.sentId = Math.max(this.sentId, last.id);
    this.publishChain = this.publishChain
      .then(() => compressed)
      .then(
        (z) => {
          if (this.client !== client || !this.inflight.has(tok)) return; // connection gone: replayed later
          const payload = this.sealer.sealCompressed({ device: this.o.device, from: [first.boot, first.seq], to: [last.boot, last.seq], count: batch.length, ...(resend ? { resend: true as const } : {}) }, z);
          if (payload.length + this.topic.length + 16 > this.maxPacket) {
            // One event alone larger than the broker takes: sent, it would only get the
            // connection closed (0x95), again after every reconnect. Parked and reported instead.
            this.inflight.delete(tok);
            for (const id of ids) this.inflightIds.delete(id);
            this.tooLarge(ids, payload.length, first, last);
            this.pump();
            return;
          }
          this.publish(client, tok, ids, rowBytes, payload, first, last);
        },
        (e: unknown) => {
          if (this.client === client) this.fail(`compressing a batch failed: ${describeError(e)}`);
        },
      );
  }

  private publishChain: Promise<void> = Promise.resolve();

  private publish(client: MqttClient, tok: number, ids: number[], rowBytes: number, payload: Buffer, first: RawRow, last: RawRow): void {
    this.o.log.debug({ tok, events: ids.length, bytes: payload.length }, "Publishing a batch.");
    this.publishedId = Math.max(this.publishedId, ids[ids.length - 1]!);
    client.publish(this.topic, payload, { qos: 1 }, (err) => {
      if (this.client !== client || !this.inflight.has(tok)) return; // connection gone: replayed later
      this.inflight.delete(tok);
      for (const id of ids) this.inflightIds.delete(id);
      const rc = (err as { code?: unknown } | undefined)?.code;
      if (err && typeof rc === "number" && rc >= 0x80) {
        this.reject(ids, rc, err.message, first, last);
      } else if (err) {
        // 'Connection closed' and the like: the close handler reconnects and replays.
        this.o.log.debug({ err: describeError(err) }, "Publish failed without a broker verdict.");
        return;
      } else {
        if (this.acks) this.acks.onPuback(ids[ids.length - 1]!, { boot: last.boot, seq: last.seq }, Date.now());
        else {
          this.ack(ids, rowBytes, [last.boot, last.seq]);
          this.brokerMark = { boot: last.boot, seq: last.seq };
        }
        this.counters.messages++;
        this.counters.events += ids.length;
        this.counters.bytes += payload.length;
        this.out.add(ids.length);
      }
      this.pump();
    });
  }

  /**
   * Deletes acknowledged rows. When storage fails the ids are kept (bounded) and deleted once
   * it works again; this connection's cursor is past them, so they are not sent again unless
   * the connection is replaced (the SOC drops the duplicates then).
   */
  private ack(ids: number[], bytes: number, upTo: [number, number]): void {
    if (!this.unacked.length || this.retryAcks()) {
      try {
        this.o.outbox.ack(ids, bytes, upTo);
        return;
      } catch (e) {
        this.storageFailed(e, "deleting acknowledged events");
      }
    }
    if (this.unacked.length < MAX_UNACKED) this.unacked.push({ ids, bytes });
  }

  /** Deletes the rows of acknowledged batches kept while storage failed; true when none is left. */
  private retryAcks(): boolean {
    while (this.unacked.length) {
      const b = this.unacked[0]!;
      try {
        this.o.outbox.ack(b.ids, b.bytes);
      } catch (e) {
        this.storageFailed(e, "deleting acknowledged events");
        return false;
      }
      this.unacked.shift();
    }
    return true;
  }

  private storageFailed(e: unknown, what: string): void {
    this.lastError = `${what}: ${describeError(e)}`;
    const { fresh } = this.o.recorder.health.failed(e, false);
    if (fresh) this.o.log.error({ err: this.lastError }, "Outbox storage failed; forwarding goes on, deletes wait.");
  }

  private reject(ids: number[], rc: number, message: string, first: RawRow, last: RawRow): void {
    this.counters.rejected++;
    this.park(ids, `PUBACK 0x${rc.toString(16)} ${message}`, first, last, {
      message: `The SOC broker rejected ${ids.length} event(s) (reason code 0x${rc.toString(16)}: ${message}); they are parked and retried every ${this.o.upstream.parked_retry_ms} ms`,
      unmapped: { error_type: "upstream_rejected", stage: "sending", reason_code: rc },
    });
  }

  /** A batch (of one event: `takeBatch` bounds the others) whose message is larger than the broker's maximum packet. */
  private tooLarge(ids: number[], bytes: number, first: RawRow, last: RawRow): void {
    this.counters.too_large++;
    const why = `its message is ${bytes} bytes, more than the broker takes (${this.maxPacket} bytes: upstream.max_message_bytes or the broker's maximum packet size)`;
    this.park(ids, `not sent: ${why}`, first, last, {
      message: `${ids.length === 1 ? `Event ${first.boot}:${first.seq} was` : `${ids.length} events (${first.boot}:${first.seq} to ${last.boot}:${last.seq}) were`} not sent: ${why}; parked and retried every ${this.o.upstream.parked_retry_ms} ms (raise the broker's limit to deliver it)`,
      unmapped: { error_type: "upstream_too_large", stage: "sending", message_bytes: bytes, max_packet_bytes: this.maxPacket },
    });
  }

  /** Parks rows the broker did not take and reports them once, when first parked. */
  private park(ids: number[], reason: string, first: RawRow, last: RawRow, report: { message: string; unmapped: Record<string, unknown> }): void {
    let fresh: number;
    try {
      fresh = this.o.outbox.park(ids, reason, Date.now());
    } catch (e) {
      // Not parked: the rows stay eligible and go again after the next reconnect.
      this.storageFailed(e, "parking a batch the broker did not take");
      fresh = ids.length;
    }
    const range = { from: [first.boot, first.seq], to: [last.boot, last.seq] };
    // A retry refused again is not news: one event per batch when it is first parked.
    if (fresh === 0) {
      this.o.log.warn({ reason, ...range }, "A parked batch was refused again; it stays parked.");
      return;
    }
    this.o.log.error({ reason, ...range }, "The broker did not take a batch; parked it and moving on.");
    this.o.recorder.record({
      class: "system",
      severity: 4,
      ocsf: { class_uid: OcsfClass.ApplicationLifecycle, activity_id: 99, message: report.message, unmapped: { ...report.unmapped, ...range } },
    });
  }

  private retryParked(): void {
    if (this.state !== "up") return;
    let n: number;
    try {
      n = this.o.outbox.unparkAll();
    } catch (e) {
      this.storageFailed(e, "un-parking rejected batches");
      return;
    }
    if (n) {
      this.o.log.info({ rows: n }, "Retrying parked events.");
      this.cursor = 0;
      this.pump();
    }
  }

  private unackedRows(): number {
    let n = 0;
    for (const b of this.unacked) n += b.ids.length;
    return n;
  }

  /** Waits until the outbox is empty (nothing in flight) or the timeout passes. */
  async drain(timeoutMs: number): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      this.o.recorder.flush();
      let s: { depth: number; parked: number };
      try {
        s = this.o.outbox.stats();
      } catch {
        return false; // storage failing: nothing to wait for
      }
      if (s.depth - s.parked - this.unackedRows() === 0 && this.inflight.size === 0) return true;
      this.pump();
      await new Promise((r) => setTimeout(r, 50));
    }
    return false;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.state = "stopped";
    this.unsubscribe?.();
    this.offRecovered?.();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.parkedTimer) clearInterval(this.parkedTimer);
    if (this.ackTimer) clearInterval(this.ackTimer);
    const c = this.client;
    this.client = undefined;
    this.inflight.clear();
    this.inflightIds.clear();
    if (c) await endClient(c, STOP_GRACE_MS);
  }
}

/**
 * How long a stop waits for the broker to acknowledge what is in flight before it closes the
 * connection anyway. Nothing is lost either way: unacknowledged rows stay in the outbox and are
 * sent again after the next start.
 */
export const STOP_GRACE_MS = 2000;

/**
 * Ends a client cleanly (DISCONNECT after the in-flight acknowledgements) within `graceMs`, else
 * by force. mqtt.js's clean end waits for its in-flight messages without a bound: a connection
 * lost during that wait left the stop, and so the daemon's shutdown, hanging for ever.
 */
export async function endClient(c: MqttClient, graceMs: number): Promise<void> {
  await new Promise<void>((resolve) => {
    // A second end() while the first waits returns at once without closing: close the socket.
    const timer = setTimeout(() => {
      c.stream?.destroy();
      resolve();
    }, graceMs);
    c.end(false, {}, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
