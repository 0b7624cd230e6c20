import { describe, expect, it } from "vitest";
import { Outage } from "../../../agent/sinks/outage";

describe("an outage episode of the SOC broker", () => {
  it("counts attempts by cause, names at most 8 causes (the rest together), and starts afresh after each report", () => {
    let now = 1000;
    const o = new Outage(() => now);
    o.begin();
    for (let i = 0; i < 20; i++) {
      o.failed(`cause ${i % 10}`);
      now += 100;
    }
    o.failed("cause 0");
    const r = o.up(1000)!;
    expect(r).toMatchObject({ from: 1000, to: 3000, seconds: 2, attempts: 21 });
    expect(r.causes).toHaveLength(9);
    expect(r.causes.find((c) => c.cause === "cause 0")).toEqual({ cause: "cause 0", count: 3 });
    expect(r.causes.map((c) => c.count)).toEqual([...r.causes.map((c) => c.count)].sort((a, b) => b - a));
    expect(r.causes.find((c) => c.cause === "(other causes)")).toEqual({ cause: "(other causes)", count: 4 });
    expect(r.causes.reduce((n, c) => n + c.count, 0)).toBe(21);
    // A short one is not an outage worth an event; nor is a connection without a failure.
    o.failed("x");
    now += 500;
    expect(o.up(1000)).toBeUndefined();
    now += 5000;
    expect(o.up(1000)).toBeUndefined();
  });
});
