import { afterEach, describe, expect, it, vi } from "vitest";
import { boundedStackLog } from "../../../protocols/opcua/stack-log";

describe("node-opcua's own log lines", () => {
  afterEach(() => vi.useRealTimers());

  it("are bounded per window, and what a window suppressed is said once when it ends", () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
    const out: string[] = [];
    const log = boundedStackLog((l) => out.push(l), { lines: 3, windowMs: 60_000 });
    for (let i = 0; i < 1000; i++) log("PREVENTING DDOS ATTACK => maxConnection =", 32, i);
    expect(out).toEqual(["PREVENTING DDOS ATTACK => maxConnection = 32 0", "PREVENTING DDOS ATTACK => maxConnection = 32 1", "PREVENTING DDOS ATTACK => maxConnection = 32 2"]);
    vi.advanceTimersByTime(60_000); // the flood stopped: the window's end says how much it held back
    expect(out.slice(3)).toEqual(["node-opcua: 997 more line(s) suppressed in 60 s"]);
    log("next");
    expect(out.slice(4)).toEqual(["next"]);
    vi.advanceTimersByTime(120_000);
    expect(out).toHaveLength(5); // nothing suppressed, nothing said
    log("x".repeat(2000));
    expect(out[5]).toHaveLength(500);
  });
});
