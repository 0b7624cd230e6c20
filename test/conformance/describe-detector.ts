/**
 * Conformance suite every detector must pass (MQTT.js abstract_store / Vector component
 * tests): restore(snapshot()) gives identical subsequent output, snapshots survive a JSON
 * round trip, an unknown version or a malformed state throws DETECTOR_STATE, and the state
 * stays within a size bound however long the detector runs.
 */
import { describe, expect, it } from "vitest";
import type { Reading } from "../../agent/core/readings";
import { isDaemonError } from "../../agent/core/errors";
import type { Detector, Finding } from "../../detectors/detector";

export interface DetectorCase {
  /** A fresh detector (same configuration every call). */
  make: () => Detector;
  /** The readings to feed, deterministic, in time order (anomalies included). */
  readings: (n: number) => Reading[];
  /** Upper bound on JSON.stringify(snapshot()).length after any number of readings. */
  maxStateBytes: number;
  /** Optional end-of-tick hook (site detectors evaluate per tick). */
  flush?: (d: Detector, emit: (f: Finding) => void) => void;
}

function run(d: Detector, rs: readonly Reading[], c: DetectorCase): Finding[] {
  const out: Finding[] = [];
  const emit = (f: Finding): void => {
    out.push(f);
  };
  for (const r of rs) {
    d.observe(r, emit);
    c.flush?.(d, emit);
  }
  return out;
}

export function describeDetector(name: string, c: DetectorCase): void {
  describe(`detector conformance: ${name}`, () => {
    const rs = c.readings(3000);
    it("restore(snapshot()) gives identical subsequent output", () => {
      for (const cut of [0, 1, 7, 1500, 2999]) {
        const a = c.make();
        run(a, rs.slice(0, cut), c);
        const b = c.make();
        b.restore(JSON.parse(JSON.stringify(a.snapshot())), a.stateVersion);
        expect(run(b, rs.slice(cut), c)).toEqual(run(a, rs.slice(cut), c));
        expect(b.snapshot()).toEqual(a.snapshot());
      }
    });
    it("is deterministic and reports on the anomalous test signal", () => {
      const f = run(c.make(), rs, c);
      expect(f.length).toBeGreaterThan(0);
      expect(run(c.make(), rs, c)).toEqual(f);
    });
    it("snapshots are JSON-safe", () => {
      const d = c.make();
      run(d, rs, c);
      const s = d.snapshot();
      expect(JSON.parse(JSON.stringify(s))).toEqual(s);
    });
    it("restore throws DETECTOR_STATE on an unknown version", () => {
      const d = c.make();
      const s = d.snapshot();
      expect(() => d.restore(s, d.stateVersion + 1)).toThrow(expect.objectContaining({ code: "DETECTOR_STATE" }));
    });
    it("restore throws DETECTOR_STATE on a malformed state", () => {
      const d = c.make();
      if (d.snapshot() === null) return; // stateless
      for (const bad of [42, "x", [], { n: "1" }]) {
        let err: unknown;
        try {
          d.restore(bad as never, d.stateVersion);
        } catch (e) {
          err = e;
        }
        expect(isDaemonError(err, "DETECTOR_STATE")).toBe(true);
      }
    });
    it(`state stays under ${c.maxStateBytes} bytes`, () => {
      const d = c.make();
      const long = c.readings(20_000);
      run(d, long.slice(0, 5000), c);
      const mid = JSON.stringify(d.snapshot()).length;
      run(d, long.slice(5000), c);
      const end = JSON.stringify(d.snapshot()).length;
      expect(mid).toBeLessThanOrEqual(c.maxStateBytes);
      expect(end).toBeLessThanOrEqual(c.maxStateBytes);
    });
  });
}
