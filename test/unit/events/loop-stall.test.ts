import { describe, expect, it } from "vitest";
import type { EventDraft } from "../../../agent/core/events";
import { CHECK_MS, LoopStallWatch } from "../../../agent/loop-stall";
import { silent, until } from "../../helpers/fixture";

const sink = () => {
  const drafts: EventDraft[] = [];
  return { drafts, record: (d: EventDraft) => void drafts.push(d) };
};

describe("event loop hold-ups", () => {
  it("a real hold-up of the loop is reported once it ends, with no storage to blame", async () => {
    const s = sink();
    const w = new LoopStallWatch({ thresholdMs: 500, sink: s, log: silent, slowestCommit: () => 3 });
    w.start();
    try {
      // Hold the loop: the watch's timer cannot fire meanwhile.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 900);
      await until(() => s.drafts.length > 0, 5000, "the hold-up to be reported");
    } finally {
      w.stop();
    }
    const d = s.drafts[0]!;
    expect(d).toMatchObject({ class: "system", severity: 3, ocsf: { class_uid: 6002, activity_id: 99, unmapped: { error_type: "loop_stall", slowest_commit_ms: 3, stalls: 1 } } });
    const held = (d.ocsf.unmapped as { stall_ms: number }).stall_ms;
    expect(held).toBeGreaterThanOrEqual(500);
    expect(d.ocsf.message).toMatch(/^The daemon's event loop was held up for \d+\.\d s: the Modbus proxy did not answer, and detection and the SOC link waited, meanwhile; no outbox commit explains it: the process was stopped, starved of CPU or busy$/);
    expect(w.takeMax()).toBeGreaterThanOrEqual(held);
    expect(w.takeMax()).toBe(0);
  });

  it("names slow storage when a commit took half the hold-up; one event a minute, the next counts the rest", () => {
    let now = 0;
    let commit = 0;
    const s = sink();
    const w = new LoopStallWatch({ thresholdMs: 2000, sink: s, log: silent, slowestCommit: () => commit, mono: () => now });
    w.start();
    w.stop(); // driven by hand from here
    const tick = (held: number, commitMs = 0) => {
      now += CHECK_MS + held;
      commit = commitMs;
      w.tick();
    };
    tick(0);
    tick(1999); // under the threshold: counted for the heartbeat only
    expect(s.drafts).toEqual([]);
    expect(w.takeMax()).toBe(1999);
    tick(3000, 2900);
    expect(s.drafts.map((d) => d.ocsf.message)).toEqual([
      "The daemon's event loop was held up for 3.0 s: the Modbus proxy did not answer, and detection and the SOC link waited, meanwhile; an outbox commit alone took 2.9 s: the storage was slow to write (a worn or failing SD card)",
    ]);
    tick(2500);
    tick(4000);
    expect(s.drafts).toHaveLength(1);
    for (let i = 0; i < 60_000 / CHECK_MS; i++) tick(0); // a quiet minute
    tick(2100);
    expect(s.drafts).toHaveLength(2);
    expect(s.drafts[1]!.ocsf.message).toMatch(/held up for 2\.1 s.*no outbox commit explains it.* \(2 more hold-up\(s\) since the last such event, up to 4\.0 s\)$/);
    expect(s.drafts[1]!.ocsf.unmapped).toMatchObject({ stall_ms: 2100, stalls: 3, longest_ms: 4000 });
  });
});
