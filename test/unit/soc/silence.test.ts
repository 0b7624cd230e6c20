import { describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import { SilenceWatch } from "../../../agent/soc/silence";
import type { OutLine } from "../../../agent/soc/verifier";

const MIN = 60_000;
const ev = (device: string, boot: number, seq: number) => ({ device, boot, seq, verified: true }) as unknown as OutLine;

describe("silent devices at the SOC receiver", () => {
  it("one silent line after the silence, one silence_ended when heard again, none while it sends", () => {
    const db = new Database(":memory:");
    const w = new SilenceWatch(db, 5 * MIN, 0, () => false);
    expect(w.heard([ev("gw-1", 3, 10), ev("gw-1", 3, 11), ev("gw-2", 1, 4)], 1000)).toEqual([]);
    expect(w.sweep(4 * MIN)).toEqual([]);
    w.heard([ev("gw-2", 1, 5)], 4 * MIN);
    const silent = w.sweep(5 * MIN + 1000);
    expect(silent).toHaveLength(1);
    expect(silent[0]).toMatchObject({ problem: "silent", device: "gw-1", boot: 3, first: null, last: null, count: null, last_event: { boot: 3, seq: 11 }, last_received_at: 1000 });
    expect(silent[0]!.detail).toMatch(/^no event from gw-1 for 300 s \(last: 3:11, received at 1970-01-01T00:00:01\.000Z\); its heartbeat has stopped/);
    expect(w.sweep(20 * MIN)).toEqual([expect.objectContaining({ problem: "silent", device: "gw-2" })]); // gw-1 is not reported again
    const back = w.heard([ev("gw-1", 4, 0)], 30 * MIN);
    expect(back).toEqual([expect.objectContaining({ problem: "silence_ended", device: "gw-1", boot: 4, silent_ms: 30 * MIN - 1000, last_event: { boot: 4, seq: 0 } })]);
    expect(back[0]!.detail).toMatch(/^gw-1 is heard again after 1799 s without an event \(reported silent at .*; last event before: 3:11\)$/);
    expect(w.heard([ev("gw-1", 4, 1)], 30 * MIN + 1)).toEqual([]);
  });

  it("problem lines and unverified lines are not a sign of life", () => {
    const w = new SilenceWatch(new Database(":memory:"), MIN, 0, () => false);
    w.heard([ev("gw-1", 1, 0)], 0);
    w.heard([{ problem: "bad_signature", device: "gw-1", boot: 1, first: 1, last: 1, count: 1, detail: "", received_at: 10 } as OutLine], 30_000);
    expect(w.sweep(MIN)).toEqual([expect.objectContaining({ problem: "silent", device: "gw-1", last_event: { boot: 1, seq: 0 } })]);
  });

  it("a restarted receiver neither forgets a silence nor reports it twice; its own downtime does not count", () => {
    const db = new Database(":memory:");
    const a = new SilenceWatch(db, 5 * MIN, 0, () => false);
    a.heard([ev("gw-1", 1, 7), ev("gw-2", 1, 9)], 0);
    expect(a.sweep(6 * MIN)).toHaveLength(2);
    a.heard([ev("gw-2", 1, 10)], 7 * MIN);
    // Down from 8 to 60 min: gw-2's silence counts from the restart, not from its last event.
    const b = new SilenceWatch(db, 5 * MIN, 60 * MIN, () => false);
    expect(b.sweep(61 * MIN)).toEqual([]);
    expect(b.sweep(65 * MIN)).toEqual([expect.objectContaining({ device: "gw-2", detail: expect.stringMatching(/for 300 s/) })]);
    expect(b.heard([ev("gw-1", 2, 0)], 66 * MIN)).toEqual([expect.objectContaining({ problem: "silence_ended", device: "gw-1" })]);
  });

  it("a retired device is not expected to send", () => {
    const w = new SilenceWatch(new Database(":memory:"), MIN, 0, (d) => d === "gw-old");
    w.heard([ev("gw-old", 1, 5), ev("gw-1", 1, 5)], 0);
    expect(w.sweep(2 * MIN).map((l) => l.device)).toEqual(["gw-1"]);
    expect(w.sweep(10 * MIN)).toEqual([]);
  });

  it("a device whose heartbeats announce a longer interval is silent after three of them, not after --silence-ms", () => {
    const w = new SilenceWatch(new Database(":memory:"), 5 * MIN, 0, () => false);
    const beat = { device: "gw-slow", boot: 1, seq: 3, verified: true, class: "heartbeat", ocsf: { unmapped: { heartbeat: { interval_ms: 10 * MIN } } } } as unknown as OutLine;
    w.heard([beat, ev("gw-fast", 1, 3)], 0);
    w.heard([ev("gw-slow", 1, 4)], MIN); // a later event that is not a heartbeat keeps the interval
    expect(w.sweep(10 * MIN).map((l) => l.device)).toEqual(["gw-fast"]);
    expect(w.sweep(30 * MIN)).toEqual([]);
    const slow = w.sweep(31 * MIN + 1);
    expect(slow).toEqual([expect.objectContaining({ problem: "silent", device: "gw-slow", last_event: { boot: 1, seq: 4 } })]);
    expect(slow[0]!.detail).toMatch(/; it announced a heartbeat every 600 s\); its heartbeat has stopped/);
  });
});
