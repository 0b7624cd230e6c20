import { describe, expect, it } from "vitest";
import { Uplink } from "../../../agent/opcua-child";
import type { EventDraft } from "../../../agent/core/events";
import { MAX_QUEUED, MAX_UNFLUSHED, type ToCore } from "../../../protocols/opcua/process-protocol";

type Batch = Extract<ToCore, { t: "batch" }>;
const draft = (i: number): EventDraft => ({ class: "audit", severity: 1, ocsf: { class_uid: 3002, activity_id: 1, message: `e${i}` } });
const turn = () => new Promise((r) => setImmediate(r));

/** The OPC UA process's queue to the core: batched per turn, bounded, and every drop counted. */
describe("Uplink", () => {
  it("batches what one turn produced into one message", async () => {
    const sent: Batch[] = [];
    const u = new Uplink((m, done) => (sent.push(m as Batch), done?.(null)));
    for (let i = 0; i < 3; i++) u.record(draft(i));
    u.reading({ point: "L", value: 1, ts: 1, source: "opcua:x", quality: "good" });
    await u.drained();
    expect(sent).toEqual([{ t: "batch", events: [draft(0), draft(1), draft(2)], readings: [{ point: "L", value: 1, ts: 1, source: "opcua:x", quality: "good" }] }]);
  });

  it("queues at most MAX_QUEUED while the channel is backed up, and hands the count of the rest to the core", async () => {
    const sent: Batch[] = [];
    const pending: (() => void)[] = [];
    const u = new Uplink((m, done) => {
      sent.push(m as Batch);
      pending.push(() => done?.(null));
    });
    // MAX_UNFLUSHED batches written and not flushed: the channel is full.
    for (let i = 0; i < MAX_UNFLUSHED; i++) {
      u.record(draft(i));
      await turn();
    }
    expect(sent.length).toBe(MAX_UNFLUSHED);
    for (let i = 0; i < MAX_QUEUED + 5; i++) u.record(draft(i));
    for (let i = 0; i < MAX_QUEUED + 7; i++) u.reading({ point: "L", value: i, ts: i, source: "opcua:x", quality: "good" });
    await turn();
    expect(sent.length).toBe(MAX_UNFLUSHED); // nothing more until the channel drains
    pending.shift()!();
    await turn();
    const last = sent.at(-1)!;
    expect(last.events.length).toBe(MAX_QUEUED);
    expect(last.readings.length).toBe(MAX_QUEUED);
    expect(last.dropped).toEqual({ events: 5, readings: 7 });
    // Once the channel drains, everything queued has been handed over.
    while (pending.length) {
      pending.shift()!();
      await turn();
    }
    await u.drained();
  });
});
