import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import { generateKeyPairSync } from "node:crypto";
import { join } from "node:path";
import { Recorder } from "../../../agent/events/recorder";
import { Outbox } from "../../../agent/outbox/store";
import { simulatedDraft } from "../../../agent/simulate";
import { silent, tempDir } from "../../helpers/fixture";

const { privateKey } = generateKeyPairSync("ed25519");

/**
 * SD-card wear, measured by the outbox's own accounting (WAL frames appended and pages
 * checkpointed; see Outbox.writes): the simulated mix at 20 events/s on a clock the test
 * advances, each commit delivered (WAL synced for sending, then acknowledged) as the forwarder
 * does. Not a timing test: the figure depends only on how commits and deletes are grouped.
 */
function bytesPerEvent(dir: string, lowFlushMs: number, events: number): { perEvent: number; rowBytes: number; commits: number } {
  const outbox = new Outbox(join(dir, "outbox.db"), 256 * 1024 ** 2);
  let now = 1_800_000_000_000;
  vi.setSystemTime(now);
  const rec = new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 20, lowFlushMs, maxPending: 10_000, log: silent, now: () => now });
  rec.start();
  let rowBytes = 0;
  let rows = 0;
  rec.onCommit((_envs, ids) => {
    if (!ids.length) return;
    for (const r of outbox.readAfter(ids[0]! - 1, ids.length)) rowBytes += r.bytes;
    rows += ids.length;
    outbox.syncForSend(ids[ids.length - 1]!);
    outbox.ack([...ids]);
  });
  const before = outbox.writes();
  for (let i = 0; i < events; i++) {
    rec.record(simulatedDraft(i));
    now += 50;
    vi.advanceTimersByTime(50);
  }
  now += 20_000;
  vi.advanceTimersByTime(20_000); // the last telemetry and the deferred deletes
  const after = outbox.writes();
  rec.close("test");
  outbox.close();
  return { perEvent: (after.bytes - before.bytes) / events, rowBytes: rowBytes / rows, commits: after.commits - before.commits };
}

describe("SD-card wear per event", () => {
  const t = tempDir();
  afterAll(t.cleanup);
  afterEach(() => vi.useRealTimers());

  it("at 20 events/s: telemetry waits for durable commits, deletes ride on commits, within 4x the row size", () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
    const batched = bytesPerEvent(join(t.dir, "batched"), 5000, 400);
    expect(batched.rowBytes).toBeGreaterThan(400);
    // 3.5x here (2 KiB pages; each of the mix's audit and finding events commits on its own).
    expect(batched.perEvent).toBeLessThanOrEqual(4 * batched.rowBytes);
    // The same stream committed as it comes (every event its own commit, every delivery its
    // own delete) writes several times more: the accounting sees the difference.
    const unbatched = bytesPerEvent(join(t.dir, "unbatched"), 20, 400);
    expect(unbatched.commits).toBeGreaterThan(batched.commits * 2);
    expect(unbatched.perEvent).toBeGreaterThan(1.5 * batched.perEvent);
  });

  it("a durable event is committed within flush_ms even while telemetry waits", () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
    const outbox = new Outbox(join(t.dir, "durable", "outbox.db"), 64 * 1024 ** 2);
    const rec = new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 20, lowFlushMs: 5000, maxPending: 10_000, log: silent });
    rec.start();
    rec.record(simulatedDraft(5)); // telemetry
    vi.advanceTimersByTime(100);
    expect(rec.pendingCount()).toBe(1);
    rec.record(simulatedDraft(20)); // a finding
    vi.advanceTimersByTime(20);
    expect(rec.pendingCount()).toBe(0);
    expect(outbox.readAfter(0, 10).map((r) => (JSON.parse(r.body) as { class: string }).class)).toEqual(["system", "telemetry", "finding"]);
    rec.record(simulatedDraft(6));
    vi.advanceTimersByTime(4999);
    expect(rec.pendingCount()).toBe(1);
    vi.advanceTimersByTime(1);
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
    expect(outbox.stats().depth).toBe(4);
    rec.close("test");
    outbox.close();
  });
});
