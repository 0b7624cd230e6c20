import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import { generateKeyPairSync } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { LOW_BATCH_ROWS, Recorder } from "../../../agent/events/recorder";
import { Outbox } from "../../../agent/outbox/store";
import { rowSizes } from "../../../agent/outbox/row-sizes";
import { WalIndex } from "../../../agent/outbox/wal-index";
import { simulatedDraft } from "../../../agent/simulate";
import { silent, tempDir } from "../../helpers/fixture";

const { privateKey } = generateKeyPairSync("ed25519");

/**
 * SD-card wear in simulated time: the simulated mix (`simulate.events_per_s`: per 20 events a
 * finding, 3 audit records and 16 telemetry) at `rate` events/s on a clock the test advances,
 * each commit delivered (WAL synced for sending, then acknowledged) as the forwarder does. Two
 * counts: the outbox's own (WAL frames appended and pages checkpointed; see Outbox.writes) and the
 * 4 KiB pages of the WAL those frames dirty when every commit is fsynced before the next (what
 * the kernel's `write_bytes` counts for them: a commit re-dirties the page the last one ended
 * in). Byte counts, not timings: they depend only on how commits and deletes are grouped.
 */
function wearAt(dir: string, rate: number, events: number, lowFlushMs = 30_000): { outbox: number; walPages: number; row: number; commits: number } {
  const outbox = new Outbox(join(dir, "outbox.db"), 256 * 1024 ** 2);
  let now = 1_800_000_000_000;
  vi.setSystemTime(now);
  const rec = new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 20, lowFlushMs, maxPending: 10_000, log: silent, now: () => now });
  const sizes = rowSizes(outbox, rec);
  const wal = new WalIndex(join(dir, "outbox.db"));
  const frame = outbox.writes().page_size + 24;
  let seen = { frames: 0, salt: -1 };
  let walPages = 0;
  const dirtied = () => {
    const h = wal.header()!;
    const from = h.salt === seen.salt ? seen.frames : 0;
    if (h.frames > from) walPages += Math.floor((32 + h.frames * frame - 1) / 4096) - Math.floor((32 + from * frame) / 4096) + 1;
    seen = h;
  };
  rec.onCommit((_envs, ids) => {
    dirtied();
    outbox.syncForSend(ids[ids.length - 1]!);
    outbox.ack([...ids]);
  });
  rec.start();
  outbox.ack(outbox.readAfter(0, 10).map((r) => r.id)); // the boot event, delivered
  dirtied();
  const before = outbox.writes();
  let carry = 0;
  for (let n = 0; n < events; ) {
    carry += rate / 100;
    for (; carry >= 1 && n < events; carry--) rec.record(simulatedDraft(n++));
    now += 10;
    vi.advanceTimersByTime(10);
    dirtied();
  }
  now += 130_000;
  vi.advanceTimersByTime(130_000); // the last telemetry and the deferred deletes
  dirtied();
  const after = outbox.writes();
  rec.close("test");
  outbox.close();
  wal.close();
  return { outbox: (after.bytes - before.bytes) / events, walPages: (walPages * 4096) / events, row: sizes.mean(), commits: after.commits - before.commits };
}

/** A started recorder on fake timers, flush_ms 20 and telemetry waiting `lowFlushMs`. */
function waitingRecorder(path: string, lowFlushMs: number): { outbox: Outbox; rec: Recorder } {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
  const outbox = new Outbox(path, 64 * 1024 ** 2);
  const rec = new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 20, lowFlushMs, maxPending: 10_000, log: silent });
  rec.start();
  return { outbox, rec };
}

const classes = (outbox: Outbox) => outbox.readAfter(0, 10).map((r) => (JSON.parse(r.body) as { class: string }).class);

describe("SD-card wear per event", () => {
  const t = tempDir();
  afterAll(t.cleanup);
  afterEach(() => vi.useRealTimers());

  it("the outbox writes at most 4x the row size per event at 1, 20 and 2,000 events/s, and so do its fsynced WAL pages", () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
    const at = (rate: number, events: number, lowFlushMs?: number) => wearAt(join(t.dir, `rate-${rate}-${lowFlushMs ?? "default"}`), rate, events, lowFlushMs);
    const slow = at(1, 600);
    const mid = at(20, 1200);
    const fast = at(2000, 8000);
    for (const w of [slow, mid, fast]) {
      expect(w.row).toBeGreaterThan(600);
      expect(w.outbox).toBeLessThanOrEqual(4 * w.row);
      expect(w.walPages).toBeLessThanOrEqual(4 * w.row);
    }
    // 1 KiB pages: a commit of one row appends one 1,048 B frame (3.15x here; 3.78x with 2 KiB
    // pages, whose single-row commits append 2,072 B), which leaves room under 4x for what the
    // kernel adds (the chain head's copy, the heartbeat's commits, checkpoints).
    expect(slow.walPages).toBeLessThanOrEqual(3.5 * slow.row);
    // At 1 event/s every audit record and finding commits alone with its fsync; what keeps the
    // total under 4x is telemetry waiting for them (low_flush_ms 30 s): with 5 s it commits on
    // its own three times between them, and deletes ran alone 10 s after delivery.
    const eager = at(1, 600, 5000);
    expect(eager.walPages).toBeGreaterThan(4 * eager.row);
    expect(eager.walPages).toBeGreaterThan(1.2 * slow.walPages);
    // The same stream committed as it comes (telemetry waits no longer than audit records)
    // commits several times as often, and its fsynced pages show it.
    const unbatched = wearAt(join(t.dir, "unbatched"), 20, 1200, 20);
    expect(unbatched.commits).toBeGreaterThan(mid.commits * 2);
    expect(unbatched.walPages).toBeGreaterThan(1.5 * mid.walPages);
  });

  it("the WAL index stays in memory (no -shm file, no other connection); the WAL's frames are counted from the WAL itself", () => {
    const path = join(t.dir, "exclusive", "outbox.db");
    const outbox = new Outbox(path, 64 * 1024 ** 2);
    const rec = new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 20, maxPending: 10_000, log: silent });
    rec.start();
    for (let i = 0; i < 50; i++) {
      rec.record(simulatedDraft(i));
      if (i % 7 === 0) rec.flush();
    }
    rec.flush();
    expect(existsSync(`${path}-shm`)).toBe(false);
    expect(() => new Outbox(path, 64 * 1024 ** 2)).toThrow(expect.objectContaining({ code: "OUTBOX_LOCKED", message: expect.stringContaining(path) }));
    // SQLite's own count of the frames in the WAL (a PASSIVE checkpoint reports it) is ours.
    const counted = new WalIndex(path).header()!.frames;
    expect(counted).toBeGreaterThan(8);
    const [r] = outbox.db.pragma("wal_checkpoint(PASSIVE)") as { log: number }[];
    expect(counted).toBe(r!.log);
    rec.close("test");
    outbox.close();
  });

  it("a durable event is committed within flush_ms even while telemetry waits", () => {
    const { outbox, rec } = waitingRecorder(join(t.dir, "durable", "outbox.db"), 5000);
    rec.record(simulatedDraft(5)); // telemetry
    vi.advanceTimersByTime(100);
    expect(rec.pendingCount()).toBe(1);
    rec.record(simulatedDraft(20)); // a finding
    vi.advanceTimersByTime(20);
    expect(rec.pendingCount()).toBe(0);
    expect(classes(outbox)).toEqual(["system", "telemetry", "finding"]);
    rec.record(simulatedDraft(6));
    vi.advanceTimersByTime(4999);
    expect(rec.pendingCount()).toBe(1);
    vi.advanceTimersByTime(1);
    expect(rec.pendingCount()).toBe(0);
    rec.close("test");
    outbox.close();
  });

  it("a heartbeat commits within flush_ms without an fsync, taking waiting telemetry along; telemetry alone commits once LOW_BATCH_ROWS wait", () => {
    const { outbox, rec } = waitingRecorder(join(t.dir, "heartbeat", "outbox.db"), 30_000);
    rec.record(simulatedDraft(5)); // telemetry
    vi.advanceTimersByTime(1000);
    expect(rec.pendingCount()).toBe(1);
    rec.record({ ...simulatedDraft(6), class: "heartbeat" });
    vi.advanceTimersByTime(19);
    expect(rec.pendingCount()).toBe(2);
    vi.advanceTimersByTime(1);
    expect(rec.pendingCount()).toBe(0);
    expect(classes(outbox)).toEqual(["system", "telemetry", "heartbeat"]);
    expect(outbox.db.pragma("synchronous", { simple: true })).toBe(1); // NORMAL: the WAL is not fsynced for it
    for (let i = 0; i < LOW_BATCH_ROWS - 1; i++) rec.record(simulatedDraft(5));
    expect(rec.pendingCount()).toBe(LOW_BATCH_ROWS - 1);
    rec.record(simulatedDraft(5));
    expect(rec.pendingCount()).toBe(0);
    rec.close("test");
    outbox.close();
  });

  it("commits do not write the chain table; deleting the newest rows keeps the head, across a restart", () => {
    const path = join(t.dir, "head", "outbox.db");
    let outbox = new Outbox(path, 64 * 1024 ** 2);
    let rec = new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 20, maxPending: 10_000, log: silent });
    rec.start();
    for (let i = 0; i < 30; i++) rec.record(simulatedDraft(i));
    rec.flush();
    const head = outbox.head()!;
    expect(head.seq).toBe(30);
    expect(outbox.db.prepare("SELECT seq FROM chain").pluck().get()).toBeUndefined(); // never written: the rows say it
    rec.close("test");
    outbox.close();
    // Next run: every row is delivered and deleted before anything new commits.
    outbox = new Outbox(path, 64 * 1024 ** 2);
    const closed = outbox.head()!;
    expect(closed.seq).toBe(31); // the shutdown event
    const ids = outbox.readAfter(0, 100).map((r) => r.id);
    outbox.ack(ids, undefined, [closed.boot, closed.seq]);
    expect(outbox.stats().depth).toBe(0);
    expect(outbox.head()).toEqual(closed);
    outbox.close();
    outbox = new Outbox(path, 64 * 1024 ** 2);
    expect(outbox.head()).toEqual(closed);
    rec = new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 20, maxPending: 10_000, log: silent });
    const boot = rec.start().env!;
    expect(boot.prev).toBe(closed.hash);
    expect((boot.ocsf.unmapped as { boot: { previous_last_seq: number } }).boot.previous_last_seq).toBe(31);
    rec.close("test");
    outbox.close();
  });

  it("ids are never reused within a run, even after the outbox drains, without AUTOINCREMENT's page", () => {
    const outbox = new Outbox(join(t.dir, "ids", "outbox.db"), 64 * 1024 ** 2);
    const rec = new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 20, maxPending: 10_000, log: silent });
    rec.start();
    for (let i = 4; i < 10; i++) rec.record(simulatedDraft(i));
    rec.flush();
    const first = outbox.readAfter(0, 100).map((r) => r.id);
    outbox.ack(first);
    expect(outbox.stats().depth).toBe(0);
    rec.record(simulatedDraft(10));
    rec.flush();
    const next = outbox.readAfter(0, 100).map((r) => r.id);
    expect(next).toEqual([Math.max(...first) + 1]);
    // The forwarder's cursor, at the last id it sent, still precedes the new row.
    expect(outbox.readRawAfter(Math.max(...first), 10).map((r) => r.id)).toEqual(next);
    expect(outbox.db.prepare("SELECT name FROM sqlite_master WHERE name = 'sqlite_sequence'").get()).toBeUndefined();
    rec.close("test");
    outbox.close();
  });

  it("a delivered row whose delete waits is never read again, counted, nor evicted", () => {
    const outbox = new Outbox(join(t.dir, "deferred", "outbox.db"), 64 * 1024 ** 2);
    const rec = new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 20, maxPending: 10_000, log: silent });
    rec.start();
    for (let i = 4; i < 10; i++) rec.record(simulatedDraft(i));
    rec.flush();
    const rows = outbox.readAfter(0, 100);
    expect(rows).toHaveLength(7);
    outbox.ack(rows.slice(0, 3).map((r) => r.id));
    expect(outbox.readAfter(0, 100).map((r) => r.id)).toEqual(rows.slice(3).map((r) => r.id));
    expect(outbox.readRawAfter(0, 2).map((r) => r.id)).toEqual(rows.slice(3, 5).map((r) => r.id));
    expect(outbox.firstSendableId()).toBe(rows[3]!.id);
    const written = outbox.writes().commits;
    expect(outbox.stats()).toMatchObject({ depth: 4, bytes: rows.slice(3).reduce((n, r) => n + r.bytes, 0), oldest_time: Math.min(...rows.slice(3).map((r) => r.time)) });
    expect(outbox.writes().commits).toBe(written); // looking writes nothing: the deletes still wait
    rec.close("test");
    outbox.close();
  });
});
