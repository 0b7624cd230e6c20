import { describe, expect, it } from "vitest";
import { outcomeLines } from "../../../agent/commands/demo";

describe("the demo's outcome lines", () => {
  it("name resent copies apart from the problems, and say none when only copies came", () => {
    const [counts, verdict] = outcomeLines(989, 989, { duplicate: 17 }, true);
    expect(counts).toBe("[demo] gateway committed 989 signed events; the SOC verified 989 (and recognised 17 resent copies of events it already had: acknowledgements lost with the outage; dropped); problems: none");
    expect(verdict).toBe("[demo] OK: the SOC verified every event once, signed and chained, across the outage.");
    expect(outcomeLines(5, 5, { duplicate: 1 }, true)[0]).toContain("1 resent copy of events");
    expect(outcomeLines(149, 149, {}, true)[0]).toBe("[demo] gateway committed 149 signed events; the SOC verified 149; problems: none");
  });

  it("list every real problem, and a mismatch says so", () => {
    const [counts, verdict] = outcomeLines(10, 8, { gap: 1, duplicate: 2 }, false);
    expect(counts).toMatch(/; problems: gap=1$/);
    expect(verdict).toBe("[demo] MISMATCH: see the problem lines above.");
  });
});
