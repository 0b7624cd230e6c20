import { afterAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import pino from "pino";
import { startDetection } from "../../../agent/detection/start";
import type { EventDraft } from "../../../agent/core/events";
import { tempDir } from "../../helpers/fixture";

// The engine throws on no input; a bug that made it throw was swallowed by the proxy's tap (so
// that forwarding goes on), and detection was blind on that point with nobody told.
const points = { LEVEL: { source: { modbus: { device: "plc", unit: 1, table: "holding" as const, address: 0, type: "uint16" as const, word_order: "big" as const, scale: 1, offset: 0 } }, unit: "m", kind: "level" as const, range: { min: 0, max: 10 } } };

describe("a detection bug on a reading", () => {
  const t = tempDir();
  afterAll(t.cleanup);

  it("is skipped, told to the SOC at once and then at most every 10 minutes with a count, and detection goes on", async () => {
    const events: EventDraft[] = [];
    let mono = 0;
    const d = await startDetection({
      points,
      config: { state_path: join(t.dir, "det.db"), save_interval_ms: 60_000, groups: {}, open_after: 1, close_after: 3, budget_per_day: 0.15, correlation_window_ms: 900_000, utc_offset_min: 0, disabled: [] },
      sink: { record: (e) => void events.push(e) },
      log: pino({ level: "silent" }),
      mono: () => mono,
    });
    try {
      // The bug: the engine in use throws on readings above 7 (a stand-in for any defect).
      const engine = d.engine;
      const real = engine.reading.bind(engine);
      engine.reading = (r) => {
        if (r.value > 7) throw new RangeError("offset out of bounds");
        real(r);
      };
      const T0 = Date.UTC(2026, 5, 1, 8);
      const feed = (i: number, value: number) => {
        mono += 1000;
        d.readings.reading({ point: "LEVEL", value, ts: T0 + i * 1000, source: "poll", quality: "good" });
      };
      const failed = () => events.filter((e) => (e.ocsf.unmapped as { error_type?: string } | undefined)?.error_type === "detection_failed");
      for (let i = 0; i < 10; i++) feed(i, 4);
      expect(() => feed(10, 8)).not.toThrow();
      expect(failed().map((e) => e.ocsf.message)).toEqual(["Detection failed on a reading of LEVEL (offset out of bounds) and skipped it: anomalies in what it skips are not found"]);
      expect(failed()[0]).toMatchObject({ class: "system", severity: 4, ocsf: { unmapped: { point: "LEVEL", error: "offset out of bounds", count: 1 } } });
      for (let i = 11; i < 20; i++) feed(i, 8); // 9 more within the 10 minutes: counted
      expect(failed()).toHaveLength(1);
      const before = engine.stats().readings;
      feed(20, 4);
      expect(engine.stats().readings).toBe(before + 1); // detection goes on
      mono += 600_000;
      feed(21, 9);
      expect(failed()).toHaveLength(2);
      expect(failed()[1]!.ocsf.message).toMatch(/\(10 failures since the last such event\)$/);
    } finally {
      d.stop();
    }
  });
});
