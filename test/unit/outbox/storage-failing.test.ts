import { afterAll, describe, expect, it } from "vitest";
import { generateKeyPairSync } from "node:crypto";
import { join } from "node:path";
import { Recorder } from "../../../agent/events/recorder";
import type { EventClass, EventDraft } from "../../../agent/core/events";
import { Outbox } from "../../../agent/outbox/store";
import { silent, tempDir, until } from "../../helpers/fixture";

const { privateKey } = generateKeyPairSync("ed25519");

function draft(cls: EventClass, n: number): EventDraft {
  return { class: cls, severity: cls === "finding" ? 4 : 1, ocsf: { class_uid: 2004, activity_id: 1, message: `${cls} ${n}`, unmapped: { pad: "x".repeat(300) } } };
}

type Body = { class: string; seq: number; ocsf: { unmapped?: { error_type?: string; loss?: { reason: string; counts?: Record<string, number> } } } };

describe("outbox storage that fails (SQLite reports the disk full)", () => {
  const t = tempDir();
  afterAll(t.cleanup);

  it("backs off instead of re-signing on every event, keeps critical events in a bounded queue, and says what happened once storage works again", async () => {
    const outbox = new Outbox(join(t.dir, "outbox.db"), 64 * 1024 ** 2);
    const recorder = new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 5, maxPending: 100, log: silent });
    recorder.start();
    recorder.flush();
    // A real SQLITE_FULL: the database may not grow by a page.
    const pages = outbox.db.pragma("page_count", { simple: true }) as number;
    outbox.db.pragma(`max_page_count = ${pages}`);
    for (let i = 0; i < 2000; i++) recorder.record(draft("telemetry", i));
    for (let i = 0; i < 50; i++) recorder.record(draft("finding", i));
    recorder.flush();
    for (let i = 0; i < 2000; i++) recorder.record(draft("telemetry", 2000 + i));
    // One failed attempt for the first flush, one for the explicit one: no attempt per event.
    expect(recorder.counters.commit_errors).toBeLessThanOrEqual(3);
    expect(recorder.health.view()).toMatchObject({ state: "failing", mode: "disk" });
    expect(recorder.health.view().error).toMatch(/SQLITE_FULL/);
    // Bounded at 4 x max_pending; the lowest class went, the findings stayed.
    expect(recorder.pendingCount()).toBeLessThanOrEqual(400);
    expect(recorder.counters.dropped).toBeGreaterThan(3000);
    const shed = recorder.counters.dropped;

    outbox.db.pragma("max_page_count = 1073741823");
    await until(() => recorder.health.view().state === "ok" && recorder.pendingCount() === 0, 20_000, "the retry to commit");
    recorder.flush();
    const bodies = outbox.readAfter(0, 100_000).map((r) => JSON.parse(r.body) as Body);
    expect(bodies.filter((b) => b.class === "finding")).toHaveLength(50);
    // Loss records (one per attempt that committed it) add up to every shed draft.
    const losses = bodies.filter((b) => b.ocsf.unmapped?.loss?.reason === "store_unavailable");
    expect(losses.length).toBeGreaterThan(0);
    expect(losses.reduce((n, b) => n + (b.ocsf.unmapped?.loss?.counts?.telemetry ?? 0), 0)).toBe(shed);
    expect(losses.every((b) => Object.keys(b.ocsf.unmapped?.loss?.counts ?? {}).join() === "telemetry")).toBe(true);
    const told = bodies.find((b) => b.ocsf.unmapped?.error_type === "storage_failed");
    expect(told?.class).toBe("system");
    // Gap-free chain: every position was committed once.
    expect(bodies.map((b) => b.seq)).toEqual(bodies.map((_, i) => i));
    outbox.close();
  });
});
