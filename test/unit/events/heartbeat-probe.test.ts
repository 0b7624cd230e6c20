import { describe, expect, it } from "vitest";
import type { EventDraft } from "../../../agent/core/events";
import { Heartbeat } from "../../../agent/heartbeat";
import { silent } from "../../helpers/fixture";

// The posture probe runs commands and reads /sys; one that never returned held the heartbeat's
// busy flag for good, and the gateway stopped beating while everything else went on.
describe("a heartbeat whose posture probe hangs", () => {
  it("goes out without the figures, saying why, and again at the next beat", async () => {
    const drafts: EventDraft[] = [];
    const hb = new Heartbeat({
      intervalMs: 60_000,
      sink: { record: (d) => void drafts.push(d) },
      probe: { read: () => new Promise<never>(() => {}) }, // never answers
      state: () => ({ outbox_depth: 0 }),
      log: silent,
      probeTimeoutMs: 200,
    });
    await hb.beat();
    await hb.beat();
    hb.stop();
    expect(drafts).toHaveLength(2);
    expect(drafts[0]).toMatchObject({ class: "heartbeat", ocsf: { unmapped: { heartbeat: { outbox_depth: 0, interval_ms: 60_000, posture: { error: "the posture probe did not answer within 200 ms" } } } } });
  });
});
