import { afterAll, describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import { generateKeyPairSync } from "node:crypto";
import { statSync } from "node:fs";
import { join } from "node:path";
import { Recorder } from "../../../agent/events/recorder";
import type { EventClass, EventDraft } from "../../../agent/core/events";
import { Outbox } from "../../../agent/outbox/store";
import { simulatedDraft } from "../../../agent/simulate";
import { silent, tempDir } from "../../helpers/fixture";

const { privateKey } = generateKeyPairSync("ed25519");
const MAX = 1024 ** 2; // the smallest budget the config accepts

function draft(cls: EventClass, n: number, pad: number): EventDraft {
  return { class: cls, severity: cls === "finding" ? 4 : 1, ocsf: { class_uid: 2004, activity_id: 1, message: `${cls} ${n}`, unmapped: { pad: "x".repeat(pad) } } };
}

/** Database + WAL + shared-memory file sizes, read from the file system (as the fault test does). */
function filesSum(db: string): number {
  let n = 0;
  for (const s of ["", "-wal", "-shm"]) {
    try {
      n += statSync(db + s).size;
    } catch {
      /* absent */
    }
  }
  return n;
}

/**
 * buffer.max_bytes is a hard bound on the outbox's three files, sampled after every commit and
 * every delete: with large batches (a loaded machine flushes late), evictions and deletes of
 * delivered rows.
 */
describe("outbox disk budget", () => {
  const t = tempDir();
  afterAll(t.cleanup);

  it("the files never exceed max_bytes; no other connection can open the outbox (and pin its WAL)", () => {
    const path = join(t.dir, "held", "outbox.db");
    const outbox = new Outbox(path, MAX);
    const recorder = new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 5, maxPending: 100_000, log: silent });
    let max = 0;
    let samples = 0;
    const sample = () => {
      max = Math.max(max, filesSum(path));
      samples++;
    };
    recorder.onCommit(sample);
    recorder.start();
    let n = 0;
    const round = (events: number, pad: number) => {
      for (let i = 0; i < events; i++) recorder.record(draft(i % 20 === 0 ? "finding" : i % 20 < 4 ? "audit" : "telemetry", n++, pad));
      recorder.flush();
    };
    // Delivers the oldest rows as the forwarder does (one batch, acknowledged), then samples.
    const deliver = (count: number) => {
      const rows = outbox.readAfter(0, count);
      if (!rows.length) return;
      try {
        outbox.ack(
          rows.map((r) => r.id),
          rows.reduce((a, r) => a + r.bytes, 0),
        );
      } catch {
        /* refused while the WAL cannot be reset: retried by the next round */
      }
      sample();
    };
    for (let r = 0; r < 10; r++) round(200, 400 + r * 40);
    expect(recorder.counters.evicted).toBeGreaterThan(0);
    // No other connection can open the file while the outbox has it (exclusive locking), so
    // none can hold a read that keeps the WAL from being reset.
    const reader = new Database(path, { readonly: true, timeout: 0 });
    expect(() => reader.prepare("SELECT COUNT(*) FROM events").pluck().get()).toThrow(expect.objectContaining({ code: "SQLITE_BUSY" }));
    reader.close();
    expect(() => new Outbox(path, MAX)).toThrow(expect.objectContaining({ code: "OUTBOX_LOCKED", message: expect.stringContaining(path) }));
    for (let r = 0; r < 20; r++) {
      round(150, 600);
      deliver(100);
    }
    expect(filesSum(path)).toBeLessThanOrEqual(MAX);
    // Writes go on within the budget, in large batches and small.
    for (let r = 0; r < 12; r++) {
      round(r % 2 ? 600 : 30, 500);
      deliver(r % 3 ? 300 : 20);
    }
    for (let r = 0; r < 40 && recorder.pendingCount(); r++) recorder.flush();
    expect(recorder.pendingCount()).toBe(0);
    expect(recorder.health.failing).toBe(false);
    // No transaction appended more WAL frames than it reserved.
    expect(outbox.budgetMisses).toBe(0);
    expect(samples).toBeGreaterThan(100);
    expect(max).toBeLessThanOrEqual(MAX);
    expect(outbox.fileBytes()).toBeLessThanOrEqual(MAX);
    expect(outbox.integrityCheck()).toBe("ok");
    recorder.close("test");
    outbox.close();
  });

  it("commits go on while the evictions not yet named by a loss record pile up (their list is written by every evicting commit)", () => {
    const path = join(t.dir, "pending", "outbox.db");
    const outbox = new Outbox(path, MAX);
    // No loss record for an hour: the pending list grows by a range per run of evicted rows.
    const recorder = new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 20, maxPending: 10_000, log: silent, lossIntervalMs: 3_600_000 });
    recorder.start();
    let max = 0;
    recorder.onCommit(() => (max = Math.max(max, filesSum(path))));
    let n = 0;
    for (let r = 0; r < 160; r++) {
      for (let i = 0; i < 80; i++) recorder.record(simulatedDraft(n++));
      recorder.flush();
    }
    expect(recorder.lastError).toBeUndefined();
    expect(recorder.pendingCount()).toBe(0);
    expect(recorder.counters.evicted).toBeGreaterThan(10_000);
    expect(max).toBeLessThanOrEqual(MAX);
    expect(outbox.budgetMisses).toBe(0);
    recorder.close("test");
    outbox.close();
  });
});
