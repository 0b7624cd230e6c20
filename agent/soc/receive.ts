import type Database from "better-sqlite3";
import type { KeyObject } from "node:crypto";
import { closeSync, existsSync, fstatSync, fsyncSync, ftruncateSync, openSync } from "node:fs";
import { join } from "node:path";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import type { Logger } from "pino";
import { describeError, pathUnusable } from "../core/errors";
import { writeAll } from "../core/secret-files";
import { openWalDatabase, sqliteFileError } from "../core/sqlite";
import { BatchOpener } from "../events/seal";
import { loadSocSecretKey } from "../keys/identity";
import { ackKeyFromSocSecret, signAck } from "./ack";
import { brokerAuth, noDelay, redactUrl } from "../mqtt-connection";
import { clip, RECEIVER_LIMITS } from "./bounds";
import { messageLines } from "./message";
import { TrustStore, type LoggedChange } from "./trust";
import { UnknownDevices } from "./unknown-devices";
import { SilenceWatch } from "./silence";
import { ClockWatch, DEFAULT_CLOCK_SKEW_MS } from "./clock";
import { ReceiverRuns } from "./receiver-runs";
import { AwaitingKey, problem, StreamVerifier, type OutLine, type ProblemLine } from "./verifier";
import { makeDirs } from "../core/dirs";

/** Devices whose ack topic is remembered (trusted devices only; bounds the map). */
const RECEIVER_ACK_TOPICS = 100_000;

/** Tells mqtt.js not to send the PUBACK: the group commit sends it (see `handleMessage`). */
const ACK_AFTER_COMMIT = Object.assign(new Error("acknowledged after the group commit"), { code: "ACK_AFTER_COMMIT" });

export interface ReceiverOptions {
  broker: string;
  dir: string;
  /** Output JSON-lines file, or "-" for stdout. */
  out: string;
  topic: string;
  /** MQTT v5 shared-subscription group: `$share/<group>/<topic>`. */
  share?: string;
  /**
   * Where `trusted/` (the key history) lives; default `dir`. The members of a share group give
   * one directory, so a key rotation any member follows is known to all.
   */
  trustDir?: string;
  /**
   * With `share`: how long a message signed by a key not seen yet is held unacknowledged,
   * waiting for the rotation another member received, before it is judged (bad_signature).
   */
  keyWaitMs?: number;
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
  /**
   * A trusted device that sends no verified event for this long is reported `silent` (once),
   * then `silence_ended` when it is heard again. 0: off. Default: 300,000 (five of the
   * gateways' default heartbeat intervals); off with `share` (each member hears part of each
   * device's stream) unless given.
   */
  silenceMs?: number;
  /**
   * A verified event stamped this much after it was received is `clock_ahead`, one stamped this
   * much before an event it follows is `clock_back` (agent/soc/clock.ts). 0: off. Default 300,000.
   */
  clockSkewMs?: number;
  /** 5 (default) or 4 for MQTT 3.1.1 brokers. */
  protocolVersion?: 4 | 5;
  dedupeWindow: number;
  /** Batches from devices without a trusted key are summarised once per this period (60 s). */
  unknownSummaryMs?: number;
  log: Logger;
  /** Called with every line written (the demo prints them). */
  onLine?: (l: OutLine) => void;
}

/**
 * The trust change log as the receiver has reported it: the changes seen (by content key), the
 * log's stamp when last read, and whether it is in an unreadable episode. `trust_log` is an older
 * receiver's line count, taken over once.
 */
const TRUST_LOG_SCHEMA = `
CREATE TABLE IF NOT EXISTS trust_seen (key TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trust_log_state (id INTEGER PRIMARY KEY CHECK (id = 1), stamp TEXT NOT NULL, unreadable INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS trust_log (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
`;
const SET_OUTPUT = "INSERT INTO output (id, path, length) VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET path = excluded.path, length = excluded.length";

/** A message waiting for its group's commit. */
interface Pending {
  topic: string;
  payload: Buffer;
  retain: boolean;
  /** QoS 1: acknowledged after the commit, on the connection it came on (`gen`). */
  messageId?: number;
  gen: number;
  /** Held for a key not seen yet (see `hold`): judged at the latest then. */
  until?: number;
}

/** A message waiting for its device's key history to change (a rotation another member followed). */
interface Held {
  m: Pending;
  device: string;
  generation: number;
}

/** Default of `silenceMs`: five of the gateways' default heartbeat intervals (60 s). */
export const DEFAULT_SILENCE_MS = 300_000;

/** How long a stop waits for the broker to acknowledge the acks in flight. */
const STOP_WAIT_MS = 5000;

/** Default of `keyWaitMs`. */
export const KEY_WAIT_MS = 10_000;

/** A group is committed at the latest when it holds this many messages or payload bytes. */
const GROUP_MESSAGES = 1024;
const GROUP_BYTES = 32 * 1024 * 1024;
/** SQLite failures of the storage itself: the group is not committed and not acknowledged. */
const STORAGE_ERRORS = /^SQLITE_(IOERR|FULL|READONLY|BUSY|LOCKED|CANTOPEN|CORRUPT|NOTADB|NOMEM|PROTOCOL)/;

export const STATE_WHAT = "SOC receiver state (in --dir)";
const OUTPUT_WHAT = "SOC output file (--out)";

/** receiver.db, opened in WAL mode with every commit synced; a file it cannot use is PATH_UNUSABLE. */
function openStateFile(path: string): Database.Database {
  try {
    return openWalDatabase(path, "FULL");
  } catch (e) {
    throw sqliteFileError(path, STATE_WHAT, e);
  }
}

/** The output file, created 0640 if missing; a path that cannot be opened for writing is PATH_UNUSABLE naming --out. */
function openOutput(path: string): number {
  try {
    return openSync(path, existsSync(path) ? "r+" : "w+", 0o640);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw pathUnusable(path, OUTPUT_WHAT, err.code === "ENOENT" ? "its directory does not exist (ENOENT)" : err);
  }
}

/**
 * The SOC receiver. Messages are committed in groups: all messages that arrived together (up to
 * GROUP_MESSAGES / GROUP_BYTES) are opened, verified and de-duplicated in one SQLite
 * transaction, their output lines appended with one write and one fsync, the output file's
 * length committed with the state, and only then are their PUBACKs sent. Every message ends in
 * exactly one outcome (its lines, or a count in a summary) and is acknowledged; what a sender
 * controls cannot throw past that (a message whose processing fails is rolled back to its
 * savepoint and reported as `malformed`). Only a failing storage leaves a group unacknowledged:
 * the connection is then dropped so the broker redelivers it. After a crash, the output file is
 * cut back to the committed length and the broker redelivers what was not acknowledged
 * (persistent session), so nothing is reported twice or missed.
 */
export class SocReceiver {
  private readonly db: Database.Database;
  private readonly verifier: StreamVerifier;
  private readonly opener: BatchOpener;
  /** Signs end-to-end acks (derived from soc.key). */
  private readonly ackKey: KeyObject;
  /** Where each device's acks go: its events topic with `/ack` for `/events` (trusted devices only). */
  private readonly ackTopics = new Map<string, string>();
  private readonly trust: TrustStore;
  private readonly unknown: UnknownDevices;
  private readonly silence: SilenceWatch | undefined;
  private readonly clock: ClockWatch | undefined;
  private readonly runs: ReceiverRuns;
  private readonly setOutput: Database.Statement;
  private client: MqttClient | undefined;
  private fd: number;
  private offset: number;
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweeps = 0;
  private sweepDue = false;
  private pending: Pending[] = [];
  private held: Held[] = [];
  private pendingBytes = 0;
  /** Commits failing since, how many, and the first error (told once one succeeds again). */
  private storeFailing: { since: number; failures: number; error: string } | undefined;
  /** This run's start, until it is committed (its row and the line about the run before it). */
  private begin: { at: number; used: boolean } | undefined;
  private flushScheduled = false;
  /** Connection generation: a PUBACK goes only on the connection its message came on. */
  private gen = 0;
  /** `commit_failures`: commits that could not be made (the output or receiver.db cannot be written); their messages come again. */
  readonly counters = { messages: 0, events: 0, problems: 0, commits: 0, held: 0, commit_failures: 0 };
  readonly problemCounts: Record<string, number> = {};
  connected = false;
  /** Messages held now for a key not seen yet, and key histories read again because another member changed them. */
  get holding(): { held: number; trust_refreshes: number } {
    return { held: this.held.length, trust_refreshes: this.trust.refreshes };
  }

  constructor(private readonly o: ReceiverOptions) {
    makeDirs(o.dir, "SOC state directory (--dir)");
    const secret = loadSocSecretKey(join(o.dir, "soc.key"));
    this.opener = new BatchOpener(secret);
    this.ackKey = ackKeyFromSocSecret(secret);
    this.trust = new TrustStore(o.trustDir ?? o.dir);
    const stateFile = join(o.dir, "receiver.db");
    this.db = openStateFile(stateFile);
    let used: boolean;
    try {
      this.db.exec("CREATE TABLE IF NOT EXISTS output (id INTEGER PRIMARY KEY CHECK (id = 1), path TEXT NOT NULL, length INTEGER NOT NULL)");
      this.db.exec(TRUST_LOG_SCHEMA);
      this.verifier = new StreamVerifier(this.db, this.trust, { gapTimeoutMs: o.gapTimeoutMs, dedupeWindow: o.dedupeWindow, continuity: o.continuity ?? !o.share });
      this.unknown = new UnknownDevices(this.db, o.unknownSummaryMs);
      const silenceMs = o.silenceMs ?? (o.share ? 0 : DEFAULT_SILENCE_MS);
      if (silenceMs > 0) this.silence = new SilenceWatch(this.db, silenceMs, Date.now(), (d) => this.trust.retired(d) !== undefined);
      const clockSkewMs = o.clockSkewMs ?? DEFAULT_CLOCK_SKEW_MS;
      if (clockSkewMs > 0) this.clock = new ClockWatch(this.db, clockSkewMs);
      this.setOutput = this.db.prepare(SET_OUTPUT);
      used = this.db.prepare("SELECT 1 FROM output WHERE id = 1").get() !== undefined;
      if (o.out === "-") {
        this.fd = 1;
        this.offset = 0;
      } else {
        this.fd = openOutput(o.out);
        try {
          const row = this.db.prepare("SELECT path, length FROM output WHERE id = 1").get() as { path: string; length: number } | undefined;
          const size = fstatSync(this.fd).size;
          // Lines written after the last committed state are cut: they will be produced again.
          this.offset = row && row.path === o.out ? Math.min(row.length, size) : size;
          if (size > this.offset) ftruncateSync(this.fd, this.offset);
          // A new output file's starting length is committed at once: a crash before the first
          // message is committed still cuts what was half written.
          if (!row || row.path !== o.out) this.setOutput.run(o.out, this.offset);
        } catch (e) {
          closeSync(this.fd);
          throw String((e as { code?: unknown }).code).startsWith("SQLITE_") ? e : pathUnusable(o.out, OUTPUT_WHAT, e as NodeJS.ErrnoException);
        }
      }
      // This run begins: the line about how the one before it ended, committed with the output
      // at once, or with the first commit that succeeds (a full disk must not stop the start).
      this.runs = new ReceiverRuns(this.db);
    } catch (e) {
      // A state file that cannot be set up (the disk full, not a database, ...) is named, not INTERNAL.
      this.db.close();
      throw sqliteFileError(stateFile, STATE_WHAT, e);
    }
    this.begin = { at: Date.now(), used };
    try {
      this.report(this.commit([], false).lines);
    } catch (e) {
      this.counters.commit_failures++;
      this.storeFailing = { since: Date.now(), failures: 1, error: clip(describeError(e)) };
      o.log.error({ err: describeError(e) }, "Could not commit the receiver's start; it is committed with the first commit that succeeds.");
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
    // mqtt.js hands over the next message only once this one's callback ran, and sends the
    // PUBACK from it. Called with an error, it sends none and moves on: the group's commit
    // sends the PUBACKs itself, so many messages share one fsync.
    client.handleMessage = (packet, done) => {
      const payload = packet.payload as Buffer;
      this.pending.push({ topic: packet.topic, payload, retain: packet.retain, ...(packet.qos > 0 ? { messageId: packet.messageId } : {}), gen: this.gen });
      this.pendingBytes += payload.length;
      if (this.pending.length >= GROUP_MESSAGES || this.pendingBytes >= GROUP_BYTES) this.flush();
      else this.schedule();
      done(packet.qos > 0 ? ACK_AFTER_COMMIT : undefined);
    };
    // Subscribes on every connection (idempotent on a present session); start() resolves on
    // the first successful subscription and keeps retrying while the broker is unreachable.
    await new Promise<void>((resolve) => {
      client.on("connect", () => {
        this.gen++;
        this.connected = true;
        noDelay(client);
        client.subscribe(topic, { qos: 1 }, (err) => {
          if (err) o.log.error({ err: describeError(err), topic }, "Subscription refused by the broker.");
          else {
            o.log.info({ broker: redactUrl(o.broker), topic }, "SOC receiver subscribed.");
            resolve();
          }
        });
      });
      client.on("close", () => (this.connected = false));
      client.on("error", (e) => o.log.warn({ err: describeError(e) }, "Broker connection error; retrying."));
    });
    this.sweepTimer = setInterval(() => {
      this.sweepDue = true;
      this.schedule();
    }, 1000);
    this.sweepTimer.unref();
  }

  /** Processes one payload as a group of its own, without an MQTT acknowledgement (tests). */
  onMessage(topic: string, payload: Buffer): void {
    this.pending.push({ topic, payload, retain: false, gen: this.gen });
    this.flush();
  }

  private schedule(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  /**
   * One group, one transaction: each message's state changes (under its own savepoint), the
   * sweeps if due, then all lines appended and fsynced, the new output length, COMMIT, and
   * then the PUBACKs. A crash before the commit rolls the state back, and the next start cuts
   * the file back to the committed length: the redelivered messages produce them again.
   */
  private flush(): void {
    this.flushScheduled = false;
    if (this.stopped) return;
    const c = this.client;
    // A message from a connection that has closed is redelivered on the next one: skip it.
    const live = (m: Pending) => m.messageId === undefined || (m.gen === this.gen && c?.connected === true);
    const group = [...this.heldDue(live), ...this.pending.filter(live)];
    this.pending = [];
    this.pendingBytes = 0;
    const sweep = this.sweepDue;
    this.sweepDue = false;
    if (!group.length && !sweep) return;
    let lines: OutLine[];
    let held: Set<Pending>;
    try {
      ({ lines, held } = this.commit(group, sweep));
    } catch (e) {
      this.counters.commit_failures++;
      // The episode is told once a commit succeeds again (in that commit: see `commit`).
      this.storeFailing ??= { since: Date.now(), failures: 0, error: clip(describeError(e)) };
      this.storeFailing.failures++;
      this.o.log.error({ err: describeError(e), messages: group.length }, "Could not commit the receiver's state and output; the messages will be redelivered.");
      // The broker redelivers unacknowledged messages only on a new connection.
      if (group.some((m) => m.messageId !== undefined)) c?.stream?.destroy();
      return;
    }
    this.counters.commits++;
    for (const m of group) {
      if (held.has(m)) continue;
      // The handler already let mqtt.js move on; this is the PUBACK it did not send.
      if (m.messageId !== undefined && m.gen === this.gen && c?.connected) (c as unknown as { _sendPacket(p: object): void })._sendPacket({ cmd: "puback", messageId: m.messageId, reasonCode: 0 });
    }
    for (const m of group) if (!held.has(m)) this.learnAckTopic(m.topic);
    this.sendAcks();
    this.report(lines);
  }

  /**
   * Commits that failed (a full or failing disk): nothing was lost, since the broker redelivers
   * what was not acknowledged, but nothing was verified or written meanwhile, and the SOC should
   * know why its lines of that time came late. One line, in the first commit that succeeds.
   */
  private storeFailedLine(f: { since: number; failures: number; error: string }, now: number): ProblemLine {
    return problem("receiver_store_failed", {
      device: null, now, count: f.failures, since: new Date(f.since).toISOString(), failing_ms: now - f.since, error: f.error,
      detail: `the receiver could not commit its state and output for ${((now - f.since) / 1000).toFixed(1)} s (${f.failures} failed commit(s), the first: ${f.error}); nothing was lost (the broker redelivered what was not acknowledged), but what arrived meanwhile was verified and written only now`,
    });
  }

  /** Counts committed lines and hands them to `onLine`. */
  private report(lines: readonly OutLine[]): void {
    for (const l of lines) {
      if ("problem" in l) {
        this.counters.problems++;
        this.problemCounts[l.problem] = (this.problemCounts[l.problem] ?? 0) + 1;
      } else this.counters.events++;
      this.o.onLine?.(l);
    }
  }

  /**
   * Appends lines to the output inside the caller's transaction: one write, one fsync, and the
   * new length set in the state it commits. Returns the bytes written (the offset moves on
   * only once the commit succeeded).
   */
  private append(out: readonly OutLine[]): number {
    if (!out.length) return 0;
    const buf = Buffer.from(out.map((l) => JSON.stringify(l)).join("\n") + "\n");
    if (this.fd === 1) {
      process.stdout.write(buf);
      return 0;
    }
    writeAll(this.fd, buf, this.offset);
    fsyncSync(this.fd);
    this.setOutput.run(this.o.out, this.offset + buf.length);
    return buf.length;
  }

  /**
   * Held messages to try again in this group: those whose device's key history changed since
   * they were held (another member followed a rotation: the shared trust dir), and those whose
   * wait is over (judged now). A held message from a closed connection is dropped: the broker
   * redelivers it on the next one.
   */
  private heldDue(live: (m: Pending) => boolean): Pending[] {
    if (!this.held.length) return [];
    const now = Date.now();
    const due: Pending[] = [];
    const checked = new Set<string>();
    this.held = this.held.filter((h) => {
      if (!live(h.m)) return false;
      if (!checked.has(h.device)) {
        checked.add(h.device);
        this.trust.refresh(h.device);
      }
      if ((this.stopping && h.m.messageId === undefined) || now >= h.m.until! || this.trust.generation(h.device) !== h.generation) {
        due.push(h.m);
        return false;
      }
      return true;
    });
    return due;
  }

  /**
   * Whether a message may wait for a key not seen yet: only in a share group (where another
   * member may have received the rotation), within its wait, and within the bounds (per device,
   * so a device sending bad signatures holds only its own messages).
   */
  private mayWait(m: Pending, device: string, now: number, holding: Held[]): boolean {
    if (!this.o.share || this.stopping) return false;
    if (m.until !== undefined) return now < m.until;
    const L = RECEIVER_LIMITS;
    const all = [...this.held, ...holding];
    return all.length < L.heldMessages && all.reduce((n, h) => n + h.m.payload.length, m.payload.length) <= L.heldBytes && all.filter((h) => h.device === device).length < L.heldPerDevice;
  }

  private commit(group: Pending[], sweep: boolean): { lines: OutLine[]; held: Set<Pending> } {
    const ctx = { opener: this.opener, trust: this.trust, verifier: this.verifier, unknown: this.unknown };
    const one = this.db.transaction((m: Pending, now: number, mayWait: boolean): OutLine[] => {
      if (m.retain) return [problem("malformed", { device: null, detail: `retained message on ${m.topic} ignored: events are never retained`, now, topic: m.topic })];
      return messageLines(ctx, m.topic, m.payload, now, mayWait);
    });
    let written = 0;
    const held = new Set<Pending>();
    const holding: Held[] = [];
    const lines = this.db.transaction(() => {
      const now = Date.now();
      const out: OutLine[] = [];
      for (const m of group) {
        const device = clip(m.topic.split("/").at(-2) ?? "", 64);
        try {
          out.push(...one(m, now, this.mayWait(m, device, now, holding)));
          this.counters.messages++;
        } catch (e) {
          if (e instanceof AwaitingKey) {
            // Rolled back to the message's savepoint: held unacknowledged, tried again later.
            m.until ??= now + (this.o.keyWaitMs ?? KEY_WAIT_MS);
            holding.push({ m, device: e.device, generation: this.trust.generation(e.device) });
            held.add(m);
            this.counters.held++;
            continue;
          }
          this.counters.messages++;
          if (STORAGE_ERRORS.test(String((e as { code?: unknown }).code))) throw e;
          // Rolled back to the message's savepoint: it changed nothing, and it is reported.
          out.push(problem("malformed", { device: null, detail: `the message could not be processed (${clip(describeError(e))}); it changed no state (topic ${clip(m.topic, 120)}, ${m.payload.length} bytes)`, now, topic: clip(m.topic, 120) }));
        }
      }
      if (this.silence) out.push(...this.silence.heard(out, now));
      if (this.clock) out.push(...this.clock.heard(out, now));
      if (sweep) {
        out.push(...this.verifier.sweep(now), ...this.unknown.summary(now), ...this.trustChanges(now), ...(this.silence?.sweep(now) ?? []));
        if (++this.sweeps % 60 === 0) this.verifier.prune();
      }
      if (sweep) this.runs.alive(now);
      if (this.storeFailing) out.unshift(this.storeFailedLine(this.storeFailing, now));
      if (this.begin) out.unshift(...this.runs.begin(this.begin.at, this.begin.used));
      written = this.append(out);
      return out;
    })();
    this.offset += written;
    this.begin = undefined;
    this.storeFailing = undefined;
    this.held.push(...holding);
    return { lines, held };
  }

  /** A trusted device's events topic `<prefix>/<device>/events` gives its ack topic. */
  private learnAckTopic(topic: string): void {
    if (!topic.endsWith("/events") || this.ackTopics.size >= RECEIVER_ACK_TOPICS) return;
    const device = topic.split("/").at(-2);
    if (!device || this.ackTopics.has(device) || !this.trust.get(device)) return;
    this.ackTopics.set(device, `${topic.slice(0, -"/events".length)}/ack`);
  }

  /**
   * End-to-end acks, once the output and state are committed: per device and boot touched, the
   * highest contiguous settled seq, signed, retained on the device's ack topic. The gateway
   * frees its outbox rows only on these.
   */
  private sendAcks(): void {
    const marks = this.verifier.takeMarks();
    const c = this.client;
    if (!c?.connected) return;
    for (const m of marks) {
      const topic = this.ackTopics.get(m.device);
      if (topic) c.publish(topic, signAck(m, this.ackKey), { qos: 1, retain: true });
    }
  }

  /**
   * Trust changes logged since the last call (`soc trust add --replace`, `soc trust remove`), as
   * `trust_changed` lines. What was reported is known by each change's content and committed with
   * the lines, so a log shortened or edited by hand neither hides a later change nor repeats one;
   * reported changes gone from the log are a `trust_log_rewritten` line. A log that cannot be read
   * is a `trust_log_unreadable` line once per episode (the episode is committed with the line).
   */
  private trustChanges(now: number): ProblemLine[] {
    const state = this.db.prepare("SELECT stamp, unreadable FROM trust_log_state WHERE id = 1").get() as { stamp: string; unreadable: number } | undefined;
    const setState = (stamp: string, unreadable: number) =>
      this.db.prepare("INSERT INTO trust_log_state (id, stamp, unreadable) VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET stamp = excluded.stamp, unreadable = excluded.unreadable").run(stamp, unreadable);
    let stamp: string;
    let logged: LoggedChange[];
    try {
      stamp = this.trust.changeLogStamp();
      if (state && !state.unreadable && state.stamp === stamp) return [];
      logged = this.trust.loggedChanges();
    } catch (e) {
      const why = describeError(e);
      this.o.log.error({ err: why }, "Cannot read the trust change log.");
      // Once per episode: key replacements and removals are not reported while it lasts.
      if (state?.unreadable) return [];
      setState("", 1);
      return [problem("trust_log_unreadable", { device: null, detail: `the trust change log cannot be read (${why}): key replacements and removals are not reported as trust_changed until it can`, now })];
    }
    setState(stamp, 0);
    const add = this.db.prepare("INSERT OR IGNORE INTO trust_seen (key) VALUES (?)");
    const legacy = this.db.prepare("SELECT n FROM trust_log WHERE id = 1").pluck().get() as number | undefined;
    if (legacy !== undefined) {
      // State of an older receiver, which counted the lines it had read: those are seen.
      for (const l of logged.slice(0, legacy)) add.run(l.key);
      this.db.prepare("DELETE FROM trust_log").run();
    }
    const seen = new Set(this.db.prepare("SELECT key FROM trust_seen").pluck().all() as string[]);
    const present = new Set(logged.map((l) => l.key));
    const gone = [...seen].filter((k) => !present.has(k));
    const fresh = logged.filter((l) => !seen.has(l.key));
    for (const l of fresh) add.run(l.key);
    const drop = this.db.prepare("DELETE FROM trust_seen WHERE key = ?");
    for (const k of gone) drop.run(k);
    const out: ProblemLine[] = [];
    if (gone.length) {
      out.push(problem("trust_log_rewritten", { device: null, count: gone.length, detail: `${gone.length} key change(s) already reported as trust_changed are no longer in the trust change log (${this.trust.changeLogPath}): it was shortened or edited outside gatewarden soc trust`, now }));
    }
    if (!fresh.length) return out;
    this.trust.reload();
    // Rotations and farewells were written as their events were verified.
    return out.concat(
      fresh
        .map((l) => l.change)
        .filter((c) => c.action === "replace" || c.action === "remove")
        .map((c) =>
          problem("trust_changed", {
            device: c.device,
            boot: c.boot,
            detail: c.action === "replace" ? `key of ${c.device} replaced by ${c.by}: ${c.old_fingerprint ?? "(removed)"} -> ${c.new_fingerprint}, valid from boot ${c.boot ?? "?"}` : `${c.device} no longer trusted after boot ${c.boot ?? "?"} (removed by ${c.by}; key ${c.old_fingerprint})`,
            now,
            action: c.action,
            old_fingerprint: c.old_fingerprint,
            new_fingerprint: c.new_fingerprint,
            by: c.by,
            changed_at: c.at,
          }),
        ),
    );
  }

  private stopped = false;
  private stopping = false;

  /**
   * An error nothing handled ends the process (the `soc receive` command's handler, which then
   * exits): the run's end is recorded as a crash, so the next start says so. What was committed
   * stays; what was not is redelivered by the broker. Synchronous: the process exits after it.
   */
  crashed(error: string): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    try {
      if (!this.begin) this.runs.end(Date.now(), `uncaught error: ${error}`, true);
    } catch (e) {
      this.o.log.error({ err: describeError(e) }, "Could not record the crash in the receiver's state.");
    }
    try {
      if (this.fd !== 1) closeSync(this.fd);
      this.db.close();
    } catch {
      // Exiting anyway: SQLite rolls back what was not committed.
    }
  }

  /** Stops: commits and acknowledges what has arrived, records the run's end (`reason`: the signal, say). */
  async stop(reason = "stopped"): Promise<void> {
    if (this.stopped) return;
    // What has arrived is committed and acknowledged before the connection closes. Held
    // messages stay unacknowledged (the broker redelivers them); those that cannot be
    // redelivered (no acknowledgement) are judged now.
    this.stopping = true;
    this.flush();
    this.stopped = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    const c = this.client;
    this.client = undefined;
    // A clean end waits for the acks this receiver published to be acknowledged by the broker;
    // with the connection down (a broker gone, a reconnect in progress) that never happens and
    // mqtt.js would wait for ever. What was received is committed and acknowledged already, and
    // an ack not delivered is sent again with the next one: after STOP_WAIT_MS, end anyway.
    if (c) {
      await new Promise<void>((r) => {
        const t = setTimeout(() => {
          c.stream?.destroy();
          r();
        }, STOP_WAIT_MS);
        c.end(!c.connected, {}, () => {
          clearTimeout(t);
          r();
        });
      });
    }
    // A run whose start was never committed (its disk full throughout) leaves the row of the one
    // before; a stop that cannot be noted (a failing disk) is told as unclean by the next start.
    try {
      if (!this.begin) this.runs.end(Date.now(), reason, false);
    } catch (e) {
      this.o.log.error({ err: describeError(e) }, "Could not note the receiver's stop in its state.");
    }
    if (this.fd !== 1) closeSync(this.fd);
    this.db.close();
  }
}
