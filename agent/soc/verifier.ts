import type Database from "better-sqlite3";
import type { KeyObject } from "node:crypto";
import { checkEnvelope, GENESIS_HASH, isEnvelopeShape, type Envelope } from "../core/envelope";
import { clip, RECEIVER_LIMITS } from "./bounds";
import { keyAnnouncements } from "../keys/key-events";
import { before, type Position, type Rotation } from "./trust";
import { intersectRanges, isRange, rangeCount } from "../core/seq-ranges";

export const PROBLEMS = ["gap", "bad_signature", "bad_hash", "malformed", "unknown_device", "duplicate", "fork", "loss_record", "clone", "chain_reset", "suppressed", "trust_changed", "trust_log_unreadable", "trust_log_rewritten", "retired_device", "silent", "silence_ended", "clock_ahead", "clock_back", "receiver_restarted", "receiver_store_failed"] as const;
export type Problem = (typeof PROBLEMS)[number];

/** One verified event, as the SIEM gets it: routing fields, `verified`, and the whole envelope. */
export interface EventLine extends Omit<Envelope, "v"> {
  verified: true;
  /** Arrived after its position had been settled (reported as a gap or named lost by a loss record). */
  late?: true;
  /** A late event's position was named by this loss record (its own position); absent: by a gap. */
  loss_record?: { boot: number; seq: number };
  received_at: number;
}

export interface ProblemLine {
  problem: Problem;
  device: string | null;
  boot: number | null;
  /** The sequence range concerned (inclusive). */
  first: number | null;
  last: number | null;
  count: number | null;
  detail: string;
  received_at: number;
  [extra: string]: unknown;
}

export type OutLine = EventLine | ProblemLine;

export interface TrustLookup {
  /** The key valid at `boot` (and `seq`) of `device`; without `boot`, the device's current key. */
  get(device: string, boot?: number, seq?: number): KeyObject | undefined;
  /** Where a retired device said farewell (see TrustStore). */
  retired?(device: string): Position | undefined;
  /** Every key the device ever had (see TrustStore). */
  keys?(device: string): KeyObject[];
  /** Reads the device's key history again if another receiver changed it (see TrustStore). */
  refresh?(device: string): boolean;
  /** Follows a key rotation the device announced (see TrustStore). */
  follow?(device: string, r: Rotation): "followed" | "known" | "stale";
  /** Marks a device retired at its verified farewell (see TrustStore). */
  retire?(device: string, at: Position): boolean;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS devices (device TEXT PRIMARY KEY, last_boot INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS boots (device TEXT NOT NULL, boot INTEGER NOT NULL, hw INTEGER NOT NULL, hw_hash TEXT, gap_since INTEGER, end_seq INTEGER, next_boot INTEGER, cloned INTEGER, PRIMARY KEY (device, boot));
CREATE TABLE IF NOT EXISTS seen (device TEXT NOT NULL, boot INTEGER NOT NULL, seq INTEGER NOT NULL, hash TEXT, PRIMARY KEY (device, boot, seq));
CREATE TABLE IF NOT EXISTS covered (device TEXT NOT NULL, boot INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS hashes (device TEXT NOT NULL, boot INTEGER NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (device, boot, seq)) WITHOUT ROWID;
-- Which loss record (rec_boot, rec_seq) named which positions, kept within the de-duplication
-- window: a late event says which record named it.
CREATE TABLE IF NOT EXISTS named (device TEXT NOT NULL, boot INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL, rec_boot INTEGER NOT NULL, rec_seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS named_at ON named (device, boot, first);
`;

interface BootRow {
  device: string;
  boot: number;
  hw: number;
  hw_hash: string | null;
  gap_since: number | null;
  /** The last seq of this boot, as the next boot event states it. */
  end_seq: number | null;
  /** The boot whose boot event named this one as its previous boot. */
  next_boot: number | null;
  /** 1 once a `clone` was reported for events of this boot past its end. */
  cloned: number | null;
}

const BOOT_COLS = "device, boot, hw, hw_hash, gap_since, end_seq, next_boot, cloned";

/**
 * Per-device stream verification with persistent state: signatures and hashes against trusted
 * keys, the hash chain, de-duplication by (device, boot, seq), and gap accounting.
 *
 * Positions above the contiguous high-water mark `hw` wait in `seen` (received) or `covered`
 * (announced lost by a loss record). A hole becomes a `gap` line when it has waited
 * `gapTimeoutMs`, or at once when the device's next boot event says how far the boot got.
 * The caller runs each call inside one transaction together with writing the lines.
 */
export class StreamVerifier {
  private readonly q;

  constructor(
    db: Database.Database,
    private readonly trust: TrustLookup,
    private readonly opts: {
      gapTimeoutMs: number;
      dedupeWindow: number;
      /**
       * false: this receiver sees only part of each device's stream (a round-robin shared
       * subscription), so it checks signatures, hashes and duplicates but not chain links, gaps
       * or lost tails; `soc verify` over the receivers' merged outputs checks those.
       */
      continuity?: boolean;
    },
  ) {
    db.exec(SCHEMA);
    const cols = (db.prepare("PRAGMA table_info(boots)").all() as { name: string }[]).map((c) => c.name);
    for (const c of ["end_seq", "next_boot", "cloned"]) if (!cols.includes(c)) db.exec(`ALTER TABLE boots ADD COLUMN ${c} INTEGER`);
    this.q = {
      device: db.prepare("SELECT last_boot FROM devices WHERE device = ?"),
      upDevice: db.prepare("INSERT INTO devices (device, last_boot) VALUES (?, ?) ON CONFLICT(device) DO UPDATE SET last_boot = MAX(last_boot, excluded.last_boot)"),
      boot: db.prepare(`SELECT ${BOOT_COLS} FROM boots WHERE device = ? AND boot = ?`),
      otherBoot: db.prepare("SELECT MAX(boot) AS b FROM boots WHERE device = ? AND boot != ?"),
      putBoot: db.prepare(
        `INSERT INTO boots (${BOOT_COLS}) VALUES (@device, @boot, @hw, @hw_hash, @gap_since, @end_seq, @next_boot, @cloned) ON CONFLICT(device, boot) DO UPDATE SET hw = excluded.hw, hw_hash = excluded.hw_hash, gap_since = excluded.gap_since, end_seq = excluded.end_seq, next_boot = excluded.next_boot, cloned = excluded.cloned`,
      ),
      hash: db.prepare("SELECT hash FROM hashes WHERE device = ? AND boot = ? AND seq = ?"),
      // Received positions in [first, last], as runs of consecutive seqs.
      held: db.prepare("SELECT MIN(seq) AS f, MAX(seq) AS l FROM (SELECT seq, seq - ROW_NUMBER() OVER (ORDER BY seq) AS g FROM hashes WHERE device = ? AND boot = ? AND seq BETWEEN ? AND ?) GROUP BY g ORDER BY f"),
      putHash: db.prepare("INSERT OR REPLACE INTO hashes (device, boot, seq, hash) VALUES (?, ?, ?, ?)"),
      seen: db.prepare("SELECT seq, hash FROM seen WHERE device = ? AND boot = ? AND seq = ?"),
      putSeen: db.prepare("INSERT OR IGNORE INTO seen (device, boot, seq, hash) VALUES (?, ?, ?, ?)"),
      delSeen: db.prepare("DELETE FROM seen WHERE device = ? AND boot = ? AND seq <= ?"),
      maxSeen: db.prepare("SELECT MAX(seq) AS s FROM seen WHERE device = ? AND boot = ?"),
      minSeen: db.prepare("SELECT MIN(seq) AS s FROM seen WHERE device = ? AND boot = ? AND seq > ?"),
      cover: db.prepare("INSERT INTO covered (device, boot, first, last) VALUES (?, ?, ?, ?)"),
      coveredAt: db.prepare("SELECT MAX(last) AS last FROM covered WHERE device = ? AND boot = ? AND first <= ? AND last >= ?"),
      minCovered: db.prepare("SELECT MIN(first) AS f FROM covered WHERE device = ? AND boot = ? AND last > ?"),
      delCovered: db.prepare("DELETE FROM covered WHERE device = ? AND boot = ? AND last <= ?"),
      overdue: db.prepare(`SELECT ${BOOT_COLS} FROM boots WHERE gap_since IS NOT NULL AND gap_since <= ?`),
      open: db.prepare(`SELECT ${BOOT_COLS} FROM boots WHERE gap_since IS NOT NULL`),
      prune: db.prepare("DELETE FROM hashes WHERE EXISTS (SELECT 1 FROM boots b WHERE b.device = hashes.device AND b.boot = hashes.boot AND hashes.seq < b.hw - ?)"),
      pruneNamed: db.prepare("DELETE FROM named WHERE EXISTS (SELECT 1 FROM boots b WHERE b.device = named.device AND b.boot = named.boot AND named.last < b.hw - ?)"),
      name: db.prepare("INSERT INTO named (device, boot, first, last, rec_boot, rec_seq) VALUES (?, ?, ?, ?, ?, ?)"),
      namedBy: db.prepare("SELECT rec_boot AS boot, rec_seq AS seq FROM named WHERE device = ? AND boot = ? AND first <= ? AND last >= ? ORDER BY first DESC LIMIT 1"),
    };
  }

  /**
   * One sealed batch's events (already opened; an element that is not JSON is NOT_JSON).
   * `device` is the batch header's device. Each event is verified before it touches any state:
   * what does not verify is reported and leaves the device's state as it was. After
   * `badEventsPerBatch` events failing their hash or signature, the rest of the batch is not
   * checked (one line says how many); a device's own batches never fail.
   */
  ingest(device: string, events: Iterable<unknown>, now: number, context: Record<string, unknown> = {}, batch: { resend?: boolean; mayWait?: boolean } = {}): OutLine[] {
    const out: OutLine[] = [];
    const key = this.trust.get(device);
    if (!key) {
      let count = 0;
      for (const _ of events) count++;
      out.push(problem("unknown_device", { device, count, detail: `no trusted key for device ${device}; add it with \`gatewarden soc trust add\``, now, ...context }));
      return out;
    }
    let bad = 0;
    let skipped = 0;
    for (const e of events) {
      if (bad >= RECEIVER_LIMITS.badEventsPerBatch) skipped++;
      else if (this.afterFarewell(device, e, now, out)) continue;
      // A replaced or rotated key verifies the positions it was trusted for.
      else if (!this.ingestOne(device, isEnvelopeShape(e) ? (this.trust.get(device, e.boot, e.seq) ?? key) : key, e, now, out, batch.resend === true, batch.mayWait === true)) bad++;
    }
    if (skipped) out.push(problem("malformed", { device, count: skipped, detail: `${skipped} more events of this batch were not checked: ${bad} before them failed their hash or signature`, now }));
    return out;
  }

  /** An event past a retired device's farewell: reported as `retired_device`, whatever its signature. */
  private afterFarewell(device: string, e: unknown, now: number, out: OutLine[]): boolean {
    const at = this.trust.retired?.(device);
    if (!at || !isEnvelopeShape(e) || e.device !== device || !before(at, e)) return false;
    out.push(problem("retired_device", { device, boot: e.boot, first: e.seq, last: e.seq, detail: `device ${device} said farewell at ${at.boot}:${at.seq} (decommissioned), yet an event at ${e.boot}:${e.seq} arrived: a copy of its identity is in use`, now }));
    return true;
  }

  /** (device, boot) pairs whose settled position may have moved since `takeMarks`. */
  private touched = new Map<string, Set<number>>();

  private touch(device: string, boot: number): void {
    let s = this.touched.get(device);
    if (!s) this.touched.set(device, (s = new Set()));
    s.add(boot);
  }

  /**
   * What an end-to-end ack may say for each boot touched since the last call: the highest
   * contiguous settled seq (received, covered by a loss record, or reported as a gap). Read
   * after the state is committed. Empty without continuity checks (a shared-subscription
   * member sees part of each stream and cannot know what is contiguous).
   */
  takeMarks(): { device: string; boot: number; seq: number }[] {
    const out: { device: string; boot: number; seq: number }[] = [];
    if (this.opts.continuity !== false) {
      for (const [device, boots] of this.touched) {
        for (const boot of boots) {
          const r = this.q.boot.get(device, boot) as BootRow | undefined;
          if (r && r.hw >= 0) out.push({ device, boot, seq: r.hw });
        }
      }
    }
    this.touched.clear();
    return out;
  }

  /**
   * An event whose signature fails under the device's newest key may be signed by a key a
   * rotation introduced that this receiver has not seen: the rotation event went to another
   * member of a shared-subscription group. The key history is read again if another member
   * changed it (the key it yields is returned). Signed by one of the device's older keys, it is
   * bad_signature at once ("older"). Otherwise, with `mayWait`, AwaitingKey is thrown before any
   * state changed: the caller holds the event (bounded) and tries it again once the device's key
   * history changes, or without `mayWait` after a bounded wait, when it is bad_signature.
   */
  private unseenKey(device: string, e: Envelope, key: KeyObject, mayWait: boolean): KeyObject | "older" | undefined {
    if (this.trust.get(device) !== key) return undefined; // a position the history closed: a real bad signature
    if (this.trust.refresh?.(device)) {
      const k = this.trust.get(device, e.boot, e.seq);
      if (k && k !== key && checkEnvelope(e, k) === "ok") return k;
    }
    if (this.trust.keys?.(device).some((k) => k !== key && checkEnvelope(e, k) === "ok")) return "older";
    if (mayWait) throw new AwaitingKey(device);
    return undefined;
  }

  /** false: the event failed its hash or signature check. */
  private ingestOne(device: string, key: KeyObject, e: unknown, now: number, out: OutLine[], resend = false, mayWait = false): boolean {
    if (e === NOT_JSON || !isEnvelopeShape(e)) {
      out.push(problem("malformed", { device, detail: e === NOT_JSON ? "an event in the batch is not JSON" : "an event in the batch is not a Gatewarden envelope", now }));
      return true;
    }
    if (e.device !== device) {
      out.push(problem("malformed", { device, boot: e.boot, first: e.seq, last: e.seq, detail: `event names device ${clip(e.device, 64)} inside a batch from ${device}`, now }));
      return true;
    }
    let check = checkEnvelope(e, key);
    const unseen = check === "bad_signature" ? this.unseenKey(device, e, key, mayWait) : undefined;
    if (unseen && unseen !== "older") check = "ok";
    if (check !== "ok") {
      out.push(problem(check, { device, boot: e.boot, first: e.seq, last: e.seq, detail: check === "bad_hash" ? "event hash does not match its content" : unseen === "older" ? "signed by an earlier key of the device, not valid at this position" : "signature does not verify with the trusted device key", now }));
      return false;
    }
    // Only a verified event moves state from here on.
    const b = this.bootRow(device, e.boot);
    this.touch(device, e.boot);
    const known = this.q.hash.get(device, e.boot, e.seq) as { hash: string } | undefined;
    if (known) {
      // A re-sent batch (end-to-end acks, a replay after a reconnect) repeats what arrived: no line.
      if (known.hash === e.hash) {
        if (!resend) out.push(problem("duplicate", { device, boot: e.boot, first: e.seq, last: e.seq, detail: "already received", now }));
      } else if (e.seq === 0 && e.class === "system" && (e.ocsf.unmapped as { boot?: unknown } | undefined)?.boot && this.opts.continuity !== false) out.push(clone(device, e.boot, e.boot, `two different boot events for boot ${e.boot}: two devices started under this identity in the same second`, now));
      else out.push(problem("fork", { device, boot: e.boot, first: e.seq, last: e.seq, detail: `two different signed events at the same position (hashes ${known.hash.slice(0, 12)}… and ${e.hash.slice(0, 12)}…)`, now }));
      return true;
    }
    let late = false;
    if (e.seq <= b.hw) {
      if (e.seq < b.hw - this.opts.dedupeWindow) {
        if (!resend) out.push(problem("duplicate", { device, boot: e.boot, first: e.seq, last: e.seq, detail: "position older than the de-duplication window", now }));
        return true;
      }
      late = true;
    }
    this.q.putHash.run(device, e.boot, e.seq, e.hash);
    const { v: _v, ...rest } = e;
    const namedBy = late ? (this.q.namedBy.get(device, e.boot, e.seq, e.seq) as { boot: number; seq: number } | undefined) : undefined;
    out.push({ ...rest, verified: true, ...(late ? { late: true as const } : {}), ...(namedBy ? { loss_record: { boot: namedBy.boot, seq: namedBy.seq } } : {}), received_at: now });
    this.checkPastEnd(b, e, out, now);
    this.checkLink(b, e, out, now);
    this.onSpecial(b, e, out, now);
    this.onKeyEvent(e, now, out);
    if (late) return true;
    if (e.seq === b.hw + 1) {
      b.hw = e.seq;
      b.hw_hash = e.hash;
    } else {
      this.q.putSeen.run(device, e.boot, e.seq, e.hash);
    }
    this.advance(b, now);
    return true;
  }

  /**
   * A verified key rotation or farewell (agent/keys/rotation.ts, decommission) changes the
   * device's key history: the receiver and `soc verify` follow the same chain, so they agree.
   */
  private onKeyEvent(e: Envelope, now: number, out: OutLine[]): void {
    const k = keyAnnouncements(e);
    if (k.invalid) out.push(problem("malformed", { device: e.device, boot: e.boot, first: e.seq, last: e.seq, detail: `a signed key rotation announcement not followed: ${k.invalid}`, now }));
    if (k.rotation && this.trust.follow) {
      const r = k.rotation;
      const how = this.trust.follow(e.device, r);
      out.push(
        problem("trust_changed", {
          device: e.device,
          boot: e.boot,
          first: e.seq,
          last: e.seq,
          detail: how === "stale" ? `key rotation to ${r.fingerprint} announced at ${e.boot}:${e.seq} not followed: the announcing key is no longer the device's current key` : `key of ${e.device} rotated by the device: ${r.old_fingerprint} -> ${r.fingerprint}, signing from ${e.boot}:${r.from_seq}`,
          now,
          action: "rotation",
          reason: "rotation",
          followed: how !== "stale",
          old_fingerprint: r.old_fingerprint,
          new_fingerprint: r.fingerprint,
          from: [e.boot, r.from_seq],
        }),
      );
    }
    if (k.farewell && this.trust.retire) {
      this.trust.retire(e.device, { boot: e.boot, seq: e.seq });
      out.push(problem("trust_changed", { device: e.device, boot: e.boot, first: e.seq, last: e.seq, detail: `${e.device} said farewell (decommissioned${k.farewell.by ? ` by ${clip(k.farewell.by, 80)}` : ""}): retired; anything later from it is retired_device`, now, action: "retire", reason: "decommission", old_fingerprint: k.farewell.fingerprint ?? null, new_fingerprint: null }));
    }
  }

  /** The hash chain: `prev` must be the hash of the event before, where that one is known. */
  private checkLink(b: BootRow, e: Envelope, out: OutLine[], now: number): void {
    if (this.opts.continuity === false) return;
    let expected: string | null | undefined;
    if (e.seq === 0) {
      const boot = (e.ocsf.unmapped as { boot?: { previous_boot?: number | null; previous_last_seq?: number | null } } | undefined)?.boot;
      if (boot?.previous_boot != null && boot.previous_last_seq != null) {
        expected = (this.q.hash.get(e.device, boot.previous_boot, boot.previous_last_seq) as { hash: string } | undefined)?.hash;
      }
    } else if (e.seq === b.hw + 1) {
      expected = b.hw_hash;
    } else {
      expected = (this.q.hash.get(e.device, e.boot, e.seq - 1) as { hash: string } | undefined)?.hash;
    }
    if (expected && expected !== e.prev) {
      out.push(problem("fork", { device: e.device, boot: e.boot, first: e.seq, last: e.seq, detail: `chain break: prev ${e.prev.slice(0, 12)}… does not match the hash of the event before (${expected.slice(0, 12)}…)`, now }));
    }
  }

  /** Boot events settle the previous boot; loss records cover the positions they name. */
  private onSpecial(b: BootRow, e: Envelope, out: OutLine[], now: number): void {
    const unm = e.ocsf.unmapped as { boot?: { previous_boot?: number | null; previous_last_seq?: number | null }; loss?: LossBody } | undefined;
    if (e.seq === 0 && e.class === "system" && unm?.boot) {
      const last = this.q.device.get(e.device) as { last_boot: number } | undefined;
      const pb = unm.boot.previous_boot;
      const pl = unm.boot.previous_last_seq;
      const backwards = last !== undefined && last.last_boot > e.boot;
      if (last && backwards) out.push(clone(e.device, e.boot, last.last_boot, `boot ${e.boot} started after boot ${last.last_boot} of the same device: boot epochs go backwards`, now));
      else if (pb == null) {
        // Only a device's first boot names no previous boot (and starts from the all-zero hash).
        // A later one restarted the chain: its outbox (or its whole identity) was reset, or a
        // second device runs under the identity.
        const other = (this.q.otherBoot.get(e.device, e.boot) as { b: number | null }).b;
        if (other !== null) this.endAtReset(e.device, other, e.boot);
        if (other !== null) out.push(problem("chain_reset", { device: e.device, boot: e.boot, first: 0, last: 0, detail: `boot ${e.boot} restarts the hash chain${e.prev === GENESIS_HASH ? " from the all-zero hash" : ""} as a first boot, but boot ${other} was already received: the device's outbox or identity was reset (what it lost is not reported by it), or a second device runs under this identity`, now, boots: [Math.min(e.boot, other), Math.max(e.boot, other)] }));
      }
      this.q.upDevice.run(e.device, e.boot);
      if (pb != null && pl != null && this.opts.continuity !== false) {
        // First contact at a later boot: the previous boot's events never arrived (seq 0..pl).
        const prev = (this.q.boot.get(e.device, pb) as BootRow | undefined) ?? { device: e.device, boot: pb, hw: -1, hw_hash: null, gap_since: null, end_seq: null, next_boot: null, cloned: null };
        if (prev.next_boot !== null && prev.next_boot !== e.boot) {
          if (!backwards) out.push(clone(e.device, e.boot, prev.next_boot, `boot ${e.boot} and boot ${prev.next_boot} both continue boot ${pb}`, now));
        } else if (prev.hw > pl) out.push(problem("fork", { device: e.device, boot: pb, first: pl + 1, last: prev.hw, detail: `boot ${pb} ended at seq ${pl} by the device's record, but later events were received: events the device sent are gone from its storage (rolled back), or another device runs under this identity`, now }));
        // The lost tail is not reported at once: a loss record for it (a row quarantined
        // while the new boot forwards) may still come. It waits like any other hole.
        prev.end_seq = pl;
        this.touch(e.device, pb);
        prev.next_boot ??= e.boot;
        if (prev.hw < pl) prev.gap_since ??= now;
        this.q.putBoot.run(prev);
      }
    }
    if (e.class === "system" && unm?.loss) {
      const l = unm.loss;
      const all = Array.isArray(l.ranges) ? l.ranges : [];
      // A signed record is the device's word, but its size is not: at most MAX_LOSS_RANGES are
      // applied (positions of the rest, if never received, are reported as gaps).
      const ranges: [number, number, number][] = [];
      let first: number | null = null;
      let last: number | null = null;
      for (const r of all) {
        if (ranges.length >= MAX_LOSS_RANGES) break;
        if (!isRange(r)) continue;
        ranges.push(r);
        first = first === null ? r[1] : Math.min(first, r[1]);
        last = last === null ? r[2] : Math.max(last, r[2]);
      }
      const received = this.held(e.device, ranges);
      const reported = typeof l.count === "number" ? l.count : null;
      const count = reported === null ? null : Math.max(0, reported - received.count);
      const sent = this.sentUnacknowledged(e.device, l.sent_unacknowledged, ranges);
      out.push(
        problem("loss_record", {
          device: e.device,
          boot: ranges[0]?.[0] ?? null,
          first,
          last,
          count,
          detail: `device reports ${clip(e.ocsf.message)}${all.length > MAX_LOSS_RANGES ? ` (${all.length} ranges; the first ${MAX_LOSS_RANGES} are applied)` : ""}${received.count ? `; ${received.count} of them were received before they were dropped${count === null ? "" : `, ${count} are lost`}` : ""}${sent && sent.count > sent.received ? `; ${sent.count - sent.received} the device had sent were not received (yet): arriving later, they are verified and marked late` : ""}`,
          now,
          reason: l.reason ?? null,
          class: l.class ?? null,
          ranges,
          counts: l.counts ?? null,
          received,
          sent_unacknowledged: sent,
          record: { boot: e.boot, seq: e.seq },
        }),
      );
      for (const [rb, f, la] of ranges) {
        this.q.name.run(e.device, rb, f, la, e.boot, e.seq);
        this.touch(e.device, rb);
        const row = rb === b.boot ? b : this.bootRow(e.device, rb);
        if (la > row.hw) this.q.cover.run(e.device, rb, Math.max(f, row.hw + 1), la);
        if (row !== b) this.advance(row, now);
      }
    }
  }

  /**
   * The positions of a loss record's ranges this receiver already holds (received and verified,
   * within the de-duplication window): the device dropped them after they were delivered but
   * before the SOC's acknowledgement reached it. At most MAX_LOSS_RANGES runs are listed; the
   * count is exact.
   */
  private held(device: string, ranges: readonly [number, number, number][]): { count: number; ranges: [number, number, number][] } {
    const runs: [number, number, number][] = [];
    let count = 0;
    for (const [rb, f, la] of ranges) {
      for (const r of this.q.held.iterate(device, rb, f, la) as Iterable<{ f: number; l: number }>) {
        count += r.l - r.f + 1;
        if (runs.length < MAX_LOSS_RANGES) runs.push([rb, r.f, r.l]);
      }
    }
    return { count, ranges: runs };
  }

  /**
   * The device's `sent_unacknowledged` of a loss record (positions it had sent and not had
   * acknowledged when it evicted them), those within the record's applied ranges, and how many
   * of them this receiver holds; null when the record has none (a device before it said so).
   */
  private sentUnacknowledged(device: string, field: unknown, named: readonly [number, number, number][]): { count: number; ranges: [number, number, number][]; received: number } | null {
    const all = (field as { ranges?: unknown } | null | undefined)?.ranges;
    if (!Array.isArray(all)) return null;
    const given: [number, number, number][] = [];
    for (const r of all) {
      if (given.length >= MAX_LOSS_RANGES) break;
      if (isRange(r)) given.push(r);
    }
    const ranges = intersectRanges(given, named);
    return { count: rangeCount(ranges), ranges, received: this.held(device, ranges).count };
  }

  /**
   * Events of a boot past the end its successor's boot event stated, arriving after that boot
   * event: the old boot is still running beside the new one. Reported once per boot.
   */
  private checkPastEnd(b: BootRow, e: Envelope, out: OutLine[], now: number): void {
    if (this.opts.continuity === false || b.end_seq === null || e.seq <= b.end_seq || b.cloned) return;
    b.cloned = 1;
    this.q.putBoot.run(b);
    out.push(clone(e.device, e.boot, b.next_boot, `boot ${e.boot} goes on (seq ${e.seq}, past seq ${b.end_seq}) after boot ${b.next_boot ?? "?"} began: two devices run under this identity`, now, e.seq));
  }

  /**
   * A chain reset ends the boot seen before it where it got: should that boot go on (events past
   * what had arrived), it is still alive beside the new chain, and `checkPastEnd` reports a clone.
   */
  private endAtReset(device: string, old: number, next: number): void {
    const o = this.q.boot.get(device, old) as BootRow | undefined;
    if (!o || o.end_seq !== null) return;
    o.end_seq = Math.max(o.hw, (this.q.maxSeen.get(device, old) as { s: number | null }).s ?? -1);
    o.next_boot = next;
    this.q.putBoot.run(o);
  }

  private bootRow(device: string, boot: number): BootRow {
    const r = this.q.boot.get(device, boot) as BootRow | undefined;
    if (r) return r;
    const known = this.q.device.get(device) as { last_boot: number } | undefined;
    // Every boot starts at seq 0 (its boot event), also at first contact: a stream first seen
    // later has lost its start, and the hole is a gap like any other.
    const row: BootRow = { device, boot, hw: -1, hw_hash: null, gap_since: null, end_seq: null, next_boot: null, cloned: null };
    if (!known) this.q.upDevice.run(device, boot);
    this.q.putBoot.run(row);
    return row;
  }

  /** Moves hw over received and covered positions; tracks since when a hole has been open. */
  private advance(b: BootRow, now: number): void {
    for (;;) {
      const next = b.hw + 1;
      const s = this.q.seen.get(b.device, b.boot, next) as { seq: number; hash: string | null } | undefined;
      if (s) {
        b.hw = next;
        b.hw_hash = s.hash;
        continue;
      }
      const c = this.q.coveredAt.get(b.device, b.boot, next, next) as { last: number | null };
      if (c.last !== null) {
        b.hw = c.last;
        b.hw_hash = null;
        continue;
      }
      break;
    }
    this.q.delSeen.run(b.device, b.boot, b.hw);
    this.q.delCovered.run(b.device, b.boot, b.hw);
    const above = (this.q.minSeen.get(b.device, b.boot, b.hw) as { s: number | null }).s ?? (this.q.minCovered.get(b.device, b.boot, b.hw) as { f: number | null }).f;
    const tailOpen = b.end_seq !== null && b.hw < b.end_seq;
    b.gap_since = above === null && !tailOpen ? null : (b.gap_since ?? now);
    if (this.opts.continuity === false) b.gap_since = null;
    this.q.putBoot.run(b);
  }

  /** Reports every hole below the highest known position (or up to `upTo`) as a gap. */
  private settle(b: BootRow, upTo: number | undefined, now: number): ProblemLine[] {
    const out: ProblemLine[] = [];
    this.touch(b.device, b.boot);
    for (let guard = 0; guard < 1_000_000; guard++) {
      this.advance(b, now);
      const s = (this.q.minSeen.get(b.device, b.boot, b.hw) as { s: number | null }).s;
      const c = (this.q.minCovered.get(b.device, b.boot, b.hw) as { f: number | null }).f;
      const nextKnown = s === null ? c : c === null ? s : Math.min(s, c);
      let last: number;
      if (nextKnown !== null) last = nextKnown - 1;
      else if (upTo !== undefined && upTo > b.hw) last = upTo;
      else break;
      const first = b.hw + 1;
      if (last >= first) out.push(problem("gap", { device: b.device, boot: b.boot, first, last, count: last - first + 1, detail: upTo !== undefined && nextKnown === null ? `events ${first}..${last} never arrived (the device's next boot says boot ${b.boot} ended at seq ${upTo})` : `events ${first}..${last} never arrived`, now }));
      b.hw = last;
      b.hw_hash = null;
    }
    this.advance(b, now);
    return out;
  }

  /** Gaps that waited long enough; call periodically. */
  sweep(now: number): OutLine[] {
    const out: OutLine[] = [];
    for (const b of this.q.overdue.all(now - this.opts.gapTimeoutMs) as BootRow[]) out.push(...this.settle(b, b.end_seq ?? undefined, now));
    return out;
  }

  /** Settles every open hole now (end of an offline verification). */
  finish(now: number): OutLine[] {
    const out: OutLine[] = [];
    for (const b of this.q.open.all() as BootRow[]) out.push(...this.settle(b, b.end_seq ?? undefined, now));
    return out;
  }

  /** Forgets hashes far below each boot's high-water mark. */
  prune(): void {
    this.q.prune.run(this.opts.dedupeWindow);
    this.q.pruneNamed.run(this.opts.dedupeWindow);
  }
}

/**
 * Thrown by `ingest` with `mayWait` for an event signed by a key this receiver may not have seen
 * yet (see `unseenKey`), before the event changed any state.
 */
export class AwaitingKey extends Error {
  constructor(readonly device: string) {
    super(`an event of ${device} waits for a key rotation not seen yet`);
  }
}

/** Ranges of one loss record applied to the receiver's state. */
export const MAX_LOSS_RANGES = 10_000;

/** An element of a batch that is not JSON (see `ingest`). */
export const NOT_JSON: unique symbol = Symbol("not JSON");

interface LossBody {
  reason?: string;
  class?: string;
  count?: number;
  ranges?: unknown[];
  counts?: Record<string, number>;
  sent_unacknowledged?: { count?: number; ranges?: unknown[] };
}

/** Two live streams under one device identity; `boots` names both. */
function clone(device: string, boot: number, other: number | null, detail: string, now: number, seq?: number): ProblemLine {
  return problem("clone", { device, boot, first: seq ?? 0, last: seq ?? 0, detail, now, boots: other === null ? [boot] : [Math.min(boot, other), Math.max(boot, other)] });
}

export function problem(
  kind: Problem,
  f: { device?: string | null; boot?: number | null; first?: number | null; last?: number | null; count?: number | null; detail: string; now: number; [k: string]: unknown },
): ProblemLine {
  const { device, boot, first, last, count, detail, now, ...extra } = f;
  const cnt = count ?? (first != null && last != null ? last - first + 1 : null);
  return { problem: kind, device: device ?? null, boot: boot ?? null, first: first ?? null, last: last ?? null, count: cnt, detail, received_at: now, ...extra };
}
