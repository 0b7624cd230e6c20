import type { Reading } from "../../../agent/core/readings";
import type { Detector, Finding } from "../../../detectors/detector";
import { prng } from "../../helpers/prng";
export { prng };


export const T0 = Date.UTC(2024, 0, 1);

export function readings(values: readonly number[], stepMs = 60_000, point = "p", t0 = T0): Reading[] {
  return values.map((value, i) => ({ point, value, ts: t0 + i * stepMs, source: "test", quality: "good" as const }));
}

/** Feeds readings; returns the indexes of readings that produced a finding, and the findings. */
export function feed(d: Detector, rs: readonly Reading[]): { at: number[]; findings: Finding[] } {
  const at: number[] = [];
  const findings: Finding[] = [];
  rs.forEach((r, i) => {
    let hit = false;
    d.observe(r, (f) => {
      findings.push(f);
      hit = true;
    });
    if (hit) at.push(i);
  });
  return { at, findings };
}

export function noise(n: number, seed: number, level = 10, amp = 1): number[] {
  const rnd = prng(seed);
  return Array.from({ length: n }, () => level + (rnd() - 0.5) * 2 * amp);
}
