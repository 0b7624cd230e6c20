import { afterEach, describe, expect, it, vi } from "vitest";
import type { EventDraft } from "../../../agent/core/events";
import { SimulatedSource } from "../../../agent/simulate";

describe("simulated events (simulate.events_per_s)", () => {
  afterEach(() => vi.useRealTimers());

  it("follow the clock when the timer runs late, and skip what is more than a second behind instead of bursting", () => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "Date"] });
    const got: EventDraft[] = [];
    const sim = new SimulatedSource(100, { record: (d) => got.push(d) });
    sim.start();
    vi.advanceTimersByTime(1000);
    expect(got).toHaveLength(100);
    // A loaded machine: the clock moves 500 ms, the 10 ms timer fires once.
    vi.setSystemTime(Date.now() + 490);
    vi.advanceTimersByTime(10);
    expect(got).toHaveLength(150);
    // A 5 s stall: one second's worth at once, the rest skipped; then the rate again.
    vi.setSystemTime(Date.now() + 4990);
    vi.advanceTimersByTime(10);
    expect(got).toHaveLength(250);
    vi.advanceTimersByTime(1000);
    expect(got).toHaveLength(350);
    sim.stop();
    vi.advanceTimersByTime(1000);
    expect(got).toHaveLength(350);
    expect(got.filter((d) => d.class === "finding")).toHaveLength(18); // one in 20, numbered on
  });
});
