import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { splitBatch } from "../../../agent/soc/bounds";

const lim = { eventsPerBatch: 50, eventBytes: 4096, depth: 8 };
const depthOf = (v: unknown): number => (typeof v === "object" && v !== null ? 1 + Math.max(0, ...Object.values(v).map(depthOf)) : 0);

describe("splitBatch", () => {
  it("splits any JSON array into exactly its elements' texts (strings with brackets, quotes and escapes included)", () => {
    fc.assert(
      fc.property(fc.array(fc.jsonValue({ maxDepth: 6 }), { maxLength: 40 }), fc.boolean(), (arr, spaced) => {
        const text = JSON.stringify(arr, null, spaced ? 1 : undefined);
        const s = splitBatch(Buffer.from(text), lim);
        const tooBig = arr.some((v) => JSON.stringify(v).length > lim.eventBytes || depthOf(v) > lim.depth);
        if (tooBig) return;
        expect(s.ok).toBe(true);
        if (!s.ok) return;
        expect(Array.from({ length: s.count }, (_, i) => JSON.parse(s.element(i)) as unknown)).toEqual(JSON.parse(text));
      }),
      { numRuns: 300 },
    );
  });

  it("refuses, after bounded work, what exceeds a bound or is not an array", () => {
    const no = (text: string) => {
      const s = splitBatch(Buffer.from(text), lim);
      return s.ok ? "ok" : s.reason;
    };
    expect(no("[" + "[".repeat(9) + "]".repeat(9) + "]")).toMatch(/nested deeper than 8/);
    expect(no("[" + "[".repeat(8) + "]".repeat(8) + "]")).toBe("ok");
    expect(no("[" + "0,".repeat(50) + "0]")).toMatch(/more than 50 events/);
    expect(no(`["${"x".repeat(5000)}"]`)).toMatch(/larger than 4096 bytes/);
    expect(no('{"a":1}')).toMatch(/not a JSON array/);
    expect(no("[1,2")).toMatch(/not a complete JSON array/);
    expect(no('["abc')).toMatch(/ends inside a string/);
    expect(no("[1,]")).toMatch(/empty array element/);
    expect(no("[1}")).toMatch(/unbalanced/);
    expect(no("[1] x")).toMatch(/data after/);
    expect(no(" [ ] ")).toBe("ok");
  });
});
