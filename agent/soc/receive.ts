import Database from "better-sqlite3";
import { closeSync, existsSync, fstatSync, fsyncSync, ftruncateSync, mkdirSync, openSync, writeSync } from "node:fs";
import { join } from "node:path";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import type { Logger } from "pino";
import { describeError } from "../errors";
import { BatchOpener } from "../events/seal";
import { loadSocSecretKey } from "../keys/identity";
import { brokerAuth, noDelay } from "../mqtt-connection";
import { TrustStore } from "./trust";
import { problem, StreamVerifier, type OutLine } from "./verifier";

export interface ReceiverOptions {
  broker: string;
  dir: string;
  /** Output JSON-lines file, or "-" for stdout. */
  out: string;
  topic: string;
  /** MQTT v5 shared-subscription group: `$share/<group>/<topic>`. */
  share?: string;
  clientId?: string;
  ca?: string;
  cert?: string;
  key?: string;
  username?: string;
  passwordFile?: string;
  gapTimeoutMs: number;
  /**
   * Chain, gap and lost-tail checks at this receiver. Default: on, off with `share` (a
   * round-robin group gives each member part of every device's stream). Turn it on with a
   * broker that keeps each publisher on one member (EMQX hash_clientid / hash_topic).
   */
  continuity?: boolean;
  /** 5 (default) or 4 for MQTT 3.1.1 brokers. */
  protocolVersion?: 4 | 5;
  dedupeWindow: number;
  log: Logger;
  /** Called with every line written (the demo prints them). */
  onLine?: (l: OutLine) => void;
}

const SET_OUTPUT = "INSERT INTO output (id, path, length) VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET path = excluded.path, length = excluded.length";

/**
 * The SOC receiver. Each MQTT message is opened, verified and de-duplicated; its output lines
 * are appended and fsynced, and the receiver's state (with the output file's length) is
 * committed in one SQLite transaction; only then is the PUBACK sent. After a crash, the
 * output file is cut back to the committed length and the broker redelivers what was not
 * acknowledged (persistent session), so nothing is reported twice or missed.
 */
export class SocReceiver {
  private readonly db: Database.Database;
  private readonly verifier: StreamVerifier;
  private readonly opener: BatchOpener;
  private readonly trust: TrustStore;
  private client: MqttClient | undefined;
  private fd: number;
  private offset: number;
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweeps = 0;
  readonly counters = { messages: 0, events: 0, problems: 0 };
  readonly problemCounts: Record<string, number> = {};
  connected = false;

  constructor(private readonly o: ReceiverOptions) {
    mkdirSync(o.dir, { recursive: true, mode: 0o700 });
    this.opener = new BatchOpener(loadSocSecretKey(join(o.dir, "soc.key")));
    this.trust = new TrustStore(o.dir);
    this.db = new Database(join(o.dir, "receiver.db"));
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = FULL");
    this.db.exec("CREATE TABLE IF NOT EXISTS output (id INTEGER PRIMARY KEY CHECK (id = 1), path TEXT NOT NULL, length INTEGER NOT NULL)");
    this.verifier = new StreamVerifier(this.db, this.trust, { gapTimeoutMs: o.gapTimeoutMs, dedupeWindow: o.dedupeWindow, continuity: o.continuity ?? !o.share });
    if (o.out === "-") {
      this.fd = 1;
      this.offset = 0;
    } else {
      this.fd = openSync(o.out, existsSync(o.out) ? "r+" : "w+", 0o640);
      const row = this.db.prepare("SELECT path, length FROM output WHERE id = 1").get() as { path: string; length: number } | undefined;
      const size = fstatSync(this.fd).size;
      // Lines written after the last committed state are cut: they will be produced again.
      this.offset = row && row.path === o.out ? Math.min(row.length, size) : size;
      if (size > this.offset) ftruncateSync(this.fd, this.offset);
      // A new output file's starting length is committed at once: a crash before the first
      // message is committed still cuts what was half written.
      if (!row || row.path !== o.out) this.db.prepare(SET_OUTPUT).run(o.out, this.offset);
    }
  }

  async start(): Promise<void> {
    const o = this.o;
    const opts: IClientOptions = {
      protocolVersion: o.protocolVersion ?? 5,
      clientId: o.clientId ?? `gatewarden-soc-${process.pid}`,
      clean: false,
      ...((o.protocolVersion ?? 5) === 5 ? { properties: { sessionExpiryInterval: 7 * 24 * 3600 } } : {}),
      reconnectPeriod: 1000,
      connectTimeout: 10_000,
      ...brokerAuth(o, "receiver"),
    };
    const topic = o.share ? `$share/${o.share}/${o.topic}` : o.topic;
    const client = mqtt.connect(o.broker, opts);
    this.client = client;
    client.handleMessage = (packet, done) => {
      try {
        if (packet.retain) {
          this.emit((now) => [problem("malformed", { device: null, detail: `retained message on ${packet.topic} ignored: events are never retained`, now, topic: packet.topic })]);
        } else this.onMessage(packet.topic, packet.payload as Buffer);
        done();
      } catch (e) {
        // State and output were not committed: no PUBACK, the broker redelivers.
        o.log.error({ err: describeError(e) }, "Could not process a message; it will be redelivered.");
        done(e as Error);
      }
    };
    // Subscribes on every connection (idempotent on a present session); start() resolves on
    // the first successful subscription and keeps retrying while the broker is unreachable.
    await new Promise<void>((resolve) => {
      client.on("connect", () => {
        this.connected = true;
        noDelay(client);
        client.subscribe(topic, { qos: 1 }, (err) => {
          if (err) o.log.error({ err: describeError(err), topic }, "Subscription refused by the broker.");
          else {
            o.log.info({ broker: o.broker, topic }, "SOC receiver subscribed.");
            resolve();
          }
        });
      });
      client.on("close", () => (this.connected = false));
      client.on("error", (e) => o.log.warn({ err: describeError(e) }, "Broker connection error; retrying."));
    });
    this.sweepTimer = setInterval(() => this.sweep(), 1000);
    this.sweepTimer.unref();
  }

  /** Processes one payload atomically with its output (exposed for tests of hostile input). */
  onMessage(topic: string, payload: Buffer): void {
    this.counters.messages++;
    this.emit((now) => {
      try {
        const { header, plaintext } = this.opener.open(payload);
        const topicDevice = topic.split("/").at(-2);
        let events: unknown;
        try {
          events = JSON.parse(plaintext.toString("utf8"));
        } catch {
          events = undefined;
        }
        if (!Array.isArray(events)) return [problem("malformed", { device: header.device, detail: "batch plaintext is not a JSON array", now })];
        if (topicDevice !== undefined && topicDevice !== header.device) return [problem("malformed", { device: header.device, detail: `batch for ${header.device} arrived on topic ${topic}`, now })];
        return this.verifier.ingest(header.device, events, now);
      } catch (e) {
        if (e instanceof Error && (e as { code?: string }).code === "SEAL_FAILED") return [problem("malformed", { device: null, detail: `${describeError(e)} (topic ${topic}, ${payload.length} bytes)`, now, topic })];
        throw e;
      }
    });
  }

  private sweep(): void {
    try {
      this.emit((now) => this.verifier.sweep(now));
      if (++this.sweeps % 60 === 0) this.verifier.prune();
    } catch (e) {
      this.o.log.error({ err: describeError(e) }, "Gap sweep failed.");
    }
  }

  /**
   * One transaction: state changes, then the lines appended and fsynced, then the new output
   * length, then COMMIT. A crash before the commit rolls the state back, and the next start
   * cuts the file back to the committed length: the redelivered message produces them again.
   */
  private emit(produce: (now: number) => OutLine[]): void {
    const lines = this.db.transaction(() => {
      const out = produce(Date.now());
      if (!out.length) return out;
      const buf = Buffer.from(out.map((l) => JSON.stringify(l)).join("\n") + "\n");
      if (this.fd === 1) process.stdout.write(buf);
      else {
        writeSync(this.fd, buf, 0, buf.length, this.offset);
        fsyncSync(this.fd);
        this.db.prepare(SET_OUTPUT).run(this.o.out, this.offset + buf.length);
      }
      return Object.assign(out, { bytes: buf.length });
    })() as OutLine[] & { bytes?: number };
    if (this.fd !== 1 && lines.bytes) this.offset += lines.bytes;
    for (const l of lines) {
      if ("problem" in l) {
        this.counters.problems++;
        this.problemCounts[l.problem] = (this.problemCounts[l.problem] ?? 0) + 1;
      } else this.counters.events++;
      this.o.onLine?.(l);
    }
  }

  private stopped = false;

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    const c = this.client;
    this.client = undefined;
    if (c) await new Promise<void>((r) => c.end(false, {}, () => r()));
    if (this.fd !== 1) closeSync(this.fd);
    this.db.close();
  }
}
