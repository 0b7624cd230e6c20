/** The spine's drain benchmark runs, and measures both baselines (tiny run; figures not checked). */
import { describe, expect, it } from "vitest";
import { benchDrain, startAedesThread } from "../../build/bench-spine";
import { tempDir } from "../helpers/fixture";

describe("spine drain bench", () => {
  const t = tempDir();

  it("measures the drain against per-event publishing and against the forwarder's own batches and window", async () => {
    const aedes = await startAedesThread();
    try {
      const r = await benchDrain(t.dir, "aedes", aedes.url, 4, 2000);
      expect(r.events_per_s).toBeGreaterThan(0);
      expect(r.bare_per_event_msgs_per_s).toBeGreaterThan(0);
      // The like-for-like baseline: as many messages as the forwarder sent, of its mean size,
      // with its window; the per-event one publishes each of the 2,001 events (the boot event too),
      // 100 in flight.
      expect(r.bare_same_batches_events_per_s).toBeGreaterThan(0);
      expect(r.messages).toBeGreaterThan(1);
      expect(r.messages).toBeLessThan(2000);
      expect(r.batching).toMatch(new RegExp(`^${r.messages} messages of \\d+ events \\(\\d+ B on average\\), 16 in flight; per-event baseline: 2001 messages of \\d+ B, 100 in flight$`));
    } finally {
      await aedes.stop();
      t.cleanup();
    }
  });
});
