import { describe, expect, it } from "vitest";
import { takeBatch } from "../../../agent/opcua-process";
import type { EventDraft } from "../../../agent/core/events";
import type { Reading } from "../../../agent/core/readings";
import { MAX_QUEUED } from "../../../protocols/opcua/process-protocol";

const draft = (cls: EventDraft["class"], i = 0): EventDraft => ({ class: cls, severity: 3, ocsf: { class_uid: 3002, activity_id: 1, message: `m${i}` } });
const reading = (i: number): Reading => ({ point: "L", value: i, ts: i, source: "opcua:x", quality: "good" });

/** The core's side of a batch from the OPC UA process: nothing it hands on or loses goes uncounted. */
describe("takeBatch", () => {
  it("records the child's drafts and readings, refuses the core's own classes, and counts the child's drops", () => {
    const recorded: EventDraft[] = [];
    const taken: Reading[] = [];
    const n = takeBatch(
      { t: "batch", events: [draft("audit", 1), draft("system", 2), draft("finding", 3), draft("heartbeat", 4)], readings: [reading(1), reading(2)], dropped: { events: 3, readings: 9 } },
      { record: (d) => recorded.push(d) },
      { reading: (r) => taken.push(r) },
      () => undefined,
    );
    expect(recorded.map((d) => d.ocsf.message)).toEqual(["m1", "m3"]);
    expect(taken).toEqual([reading(1), reading(2)]);
    expect(n).toEqual({ events: 3, readings: 9, refused: 2 });
  });

  it("takes at most MAX_QUEUED of each and counts the rest; nonsense counts are not counts", () => {
    const recorded: EventDraft[] = [];
    let taken = 0;
    const n = takeBatch(
      { t: "batch", events: Array.from({ length: MAX_QUEUED + 4 }, (_, i) => draft("audit", i)), readings: Array.from({ length: MAX_QUEUED + 6 }, (_, i) => reading(i)), dropped: { events: -5, readings: Number.NaN } },
      { record: (d) => recorded.push(d) },
      { reading: () => void taken++ },
      () => undefined,
    );
    expect(recorded.length).toBe(MAX_QUEUED);
    expect(taken).toBe(MAX_QUEUED);
    expect(n).toEqual({ events: 4, readings: 6, refused: 0 });
  });

  it("goes on past a reading the detectors throw on, and says so", () => {
    const warned: string[] = [];
    let taken = 0;
    const detectors = {
      reading: (r: Reading) => {
        if (r.value === 1) throw new Error("no");
        taken++;
      },
    };
    takeBatch({ t: "batch", events: [], readings: [reading(1), reading(2)] }, { record: () => undefined }, detectors, (e) => warned.push(e));
    expect(taken).toBe(1);
    expect(warned).toEqual(["Error: no"]);
  });
});
