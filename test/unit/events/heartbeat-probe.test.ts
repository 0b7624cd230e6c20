import { describe, expect, it } from "vitest";
import type { EventDraft } from "../../../agent/core/events";
import { Heartbeat } from "../../../agent/heartbeat";
import { makeSite, silent, tempDir } from "../../helpers/fixture";
import { DevicePosture } from "../../../agent/posture";

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

describe("the posture when systeminformation hangs", () => {
  it("goes on without its figures: the secret files and the rest are still read", async () => {
    const t = tempDir();
    try {
      const c = makeSite(t.dir).load().config;
      const posture = new DevicePosture({ config: c, probe: { read: () => new Promise<never>(() => {}) }, outbox: () => ({ file_bytes: 0, budget_bytes: 1 }), integrity: () => "not_configured", sink: { record: () => {} }, figuresTimeoutMs: 100 });
      const p = await posture.read();
      expect(p).toMatchObject({ figures_error: "system figures not read within 100 ms", secret_files: [{ key: "device.key", mode: "0600", owner_only: true }], integrity: "not_configured" });
      expect(p).not.toHaveProperty("cpu_pct");
    } finally {
      t.cleanup();
    }
  });
});
