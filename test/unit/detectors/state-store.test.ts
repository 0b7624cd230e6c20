import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DetectionEngine } from "../../../detectors/engine";
import { DetectorStateStore } from "../../../agent/detection/state-store";
import { T0 } from "./_helpers";

describe("DetectorStateStore", () => {
  it("saves an engine snapshot by detector instance id and restores it after a restart", () => {
    const file = join(mkdtempSync(join(tmpdir(), "gw-state-")), "state.db");
    const make = () => new DetectionEngine({ points: { p: { kind: "flow", range: { min: 0, max: 100 } } }, sink: { record: () => {} } });
    const a = make();
    for (let i = 0; i < 500; i++) {
      a.reading({ point: "p", value: 50 + Math.sin(i / 10), ts: T0 + i * 60_000, source: "t", quality: "good" });
      a.flush();
    }
    const store = new DetectorStateStore(file);
    store.save(a.snapshot(), T0 + 499 * 60_000);
    store.close();

    const reopened = new DetectorStateStore(file);
    const snap = reopened.load();
    expect(Object.keys(snap)).toContain("p/level_shift");
    expect(Object.keys(snap)).toContain("engine/alarms");
    const b = make();
    b.restore(snap);
    expect(b.snapshot()).toEqual(a.snapshot());
    reopened.close();
  });
});
