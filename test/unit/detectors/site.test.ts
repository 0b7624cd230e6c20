import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { Finding } from "../../../detectors/detector";
import { parseSite, SiteDetector, sitePoints } from "../../../detectors/site";
import { T0 } from "./_helpers";

const root = join(__dirname, "..", "..", "..");

function tick(d: SiteDetector, ts: number, values: Record<string, number>): Finding[] {
  const out: Finding[] = [];
  for (const [point, value] of Object.entries(values)) d.observe({ point, value, ts, source: "t", quality: "good" }, (f) => out.push(f));
  d.flush((f) => out.push(f));
  return out;
}

describe("site file", () => {
  it("ships detectors/sites/ctown.yaml as a worked example, and it validates", () => {
    const text = readFileSync(join(root, "detectors", "sites", "ctown.yaml"), "utf8");
    const site = parseSite(text);
    expect(Object.keys(site.tanks)).toHaveLength(7);
    expect(site.tanks.T1!.controls).toContainEqual({ actuator: "S_PU1", on_below: 4, off_above: 6.3 });
    expect(sitePoints(site).size).toBe(42); // all 43 BATADAL SCADA tags but S_PU3 (PU3 never runs)
  });
  it.each([
    ["not YAML", "name: [unclosed"],
    ["an unknown key", "name: x\ncolour: red\n"],
    ["a negative area", "name: x\ntanks:\n  T1: { level: L, area_m2: -1 }\n"],
    ["inverted control levels", "name: x\ntanks:\n  T1: { level: L, area_m2: 1, controls: [{ actuator: S, on_below: 5, off_above: 1 }] }\n"],
  ])("rejects %s with SITE_INVALID", (_name, text) => {
    expect(() => parseSite(text, "site.yaml")).toThrow(expect.objectContaining({ code: "SITE_INVALID" }));
  });
});

describe("site physics", () => {
  it("control rule: a pump running above its stop level", () => {
    const d = new SiteDetector(parseSite("name: x\ntanks:\n  T7: { level: L_T7, area_m2: 40, controls: [{ actuator: S_PU10, on_below: 2.5, off_above: 4.8 }] }\n"));
    expect(tick(d, T0, { L_T7: 4.0, S_PU10: 1 })).toEqual([]);
    const f = tick(d, T0 + 3_600_000, { L_T7: 5.2, S_PU10: 1 });
    expect(f).toHaveLength(1);
    expect(f[0]).toMatchObject({ detector: "control_rule", point: "L_T7", related: ["S_PU10"], strength: "physical" });
    expect(f[0]!.reason).toContain("above its stop level 4.8 m");
    expect(tick(d, T0 + 7_200_000, { L_T7: 2.0, S_PU10: 0 })[0]!.reason).toContain("below its start level 2.5 m");
  });
  it("tank mass balance: the level rises while inflow minus outflow says it should fall", () => {
    const d = new SiteDetector(parseSite("name: x\ntanks:\n  T3: { level: L_T3, area_m2: 148, inflows: [F_IN], outflows: [F_OUT] }\n"));
    let level = 3;
    let found: Finding[] = [];
    for (let h = 0; h < 24 * 20; h++) {
      const fin = h % 6 < 3 ? 20 : 0;
      const fout = 8;
      const falsified = h >= 24 * 19;
      level += ((fin - fout) * 3.6) / 148;
      found = found.concat(tick(d, T0 + h * 3_600_000, { L_T3: falsified ? level + (h - 24 * 19) * 0.4 : level, F_IN: fin, F_OUT: fout }));
    }
    expect(found.length).toBeGreaterThan(0);
    expect(found.every((f) => f.ts >= T0 + 24 * 19 * 3_600_000)).toBe(true);
    expect(found[0]).toMatchObject({ detector: "tank_balance", point: "L_T3" });
    expect(found[0]!.reason).toMatch(/inflow minus outflow says/);
  });
  it("sub-meters against the main meter", () => {
    const d = new SiteDetector(parseSite("name: x\nmeters: [{ main: M, subs: [A, B], tolerance_pct: 2 }]\n"));
    expect(tick(d, T0, { M: 100, A: 60, B: 39 })).toEqual([]);
    expect(tick(d, T0 + 1000, { M: 100, A: 60, B: 20 })[0]).toMatchObject({ detector: "meter_balance", expected: 80 });
  });
  it("power against V x A x PF (three-phase)", () => {
    const d = new SiteDetector(parseSite("name: x\npower: [{ power: P, voltage: V, current: I, power_factor: PF, phases: 3, scale: 0.001 }]\n"));
    expect(tick(d, T0, { P: 10.39, V: 400, I: 16, PF: 0.9375 })).toEqual([]);
    expect(tick(d, T0 + 1000, { P: 20, V: 400, I: 16, PF: 0.9375 })[0]).toMatchObject({ detector: "power_balance" });
  });
  it("pump state against flow: a pump at 70 % speed", () => {
    const d = new SiteDetector(parseSite("name: x\nrelations: [{ target: F_PU7, states: [S_PU7], regressor: L_T4 }]\n"));
    let found: Finding[] = [];
    for (let h = 0; h < 400; h++) {
      const on = h % 10 < 6 ? 1 : 0;
      const lvl = 2 + (h % 10) * 0.2;
      const flow = on ? (h >= 380 ? 0.7 : 1) * (50 - 2 * lvl) + Math.sin(h) * 0.5 : 0;
      found = found.concat(tick(d, T0 + h * 3_600_000, { F_PU7: flow, S_PU7: on, L_T4: lvl }));
    }
    expect(found.length).toBeGreaterThan(0);
    expect(found.every((f) => f.ts >= T0 + 380 * 3_600_000)).toBe(true);
    expect(found[0]!.reason).toContain("S_PU7=on");
  });
});
