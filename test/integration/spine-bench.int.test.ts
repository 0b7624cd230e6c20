/** The spine's accept and drain benchmarks run, and measure their baselines (tiny runs; figures not checked). */
import { describe, expect, it } from "vitest";
import { benchAccept, benchDrain, startAedesThread } from "../../build/bench-spine";
import { tempDir } from "../helpers/fixture";

describe("spine drain bench", () => {
  const t = tempDir();

  it("measures accept alternated with the bare inserts, round by round, with CPU time per event", async () => {
    const r = await benchAccept(t.dir, "telemetry", 1000, 2);
    expect(r.rounds).toHaveLength(2);
    expect(r.events_per_s).toBeGreaterThan(0);
    expect(r.bare_rows_per_s).toBeGreaterThan(0);
    expect(r.cpu_us_per_event).toBeGreaterThan(0);
    expect(r.ratio_range[0]).toBeLessThanOrEqual(r.ratio_range[1]);
    expect(r.configuration).toMatch(/^2 rounds of 1000 events, alternated with the bare inserts/);
  });

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
