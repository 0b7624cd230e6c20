import { describe, expect, it } from "vitest";
import { Debouncer, inMaintenance } from "../../../firmware-hooks/tamper";

describe("tamper input debounce and maintenance windows", () => {
  it("a change counts once it has held for the debounce time; a shorter glitch never does", () => {
    const d = new Debouncer(200);
    expect(d.feed(false, 0)).toBe(false); // the first reading sets the state
    expect(d.feed(true, 100)).toBeUndefined();
    expect(d.feed(false, 250)).toBeUndefined(); // glitch of 150 ms: ignored
    expect(d.feed(true, 300)).toBeUndefined();
    expect(d.feed(true, 450)).toBeUndefined();
    expect(d.feed(true, 500)).toBe(true); // held 200 ms
    expect(d.feed(true, 900)).toBeUndefined();
    expect(d.feed(false, 1000)).toBeUndefined();
    expect(d.feed(false, 1200)).toBe(false);
  });

  it("windows by weekday and local time, also across midnight", () => {
    const at = (day: number, h: number, m = 0) => new Date(2026, 11, 6 + day, h, m); // 2026-12-06 is a Sunday
    const w = [{ days: [1, 2, 3, 4, 5], from: "08:00", to: "17:00" }];
    expect(inMaintenance(w, at(1, 9))).toBe(true);
    expect(inMaintenance(w, at(1, 17))).toBe(false);
    expect(inMaintenance(w, at(0, 9))).toBe(false);
    const night = [{ days: [5], from: "22:00", to: "02:00" }];
    expect(inMaintenance(night, at(5, 23))).toBe(true);
    expect(inMaintenance(night, at(6, 1, 30))).toBe(true);
    expect(inMaintenance(night, at(6, 2))).toBe(false);
    expect(inMaintenance(night, at(4, 23))).toBe(false);
  });
});
