import { describe, expect, it } from "vitest";
import { closest } from "../../../agent/core/suggest";
import { parseSite, siteNames, sitePoints, unknownSiteNames } from "../../../detectors/site";

const TEXT = [
  "name: s", // 1
  "signals:", // 2
  "  E_MAIN: { kind: energy_counter, reset_register: E_RESETS }", // 3
  "  V_L9: { kind: voltage }", // 4
  "tanks:", // 5
  "  T1:", // 6
  "    level: L_T1", // 7
  "    area_m2: 10", // 8
  "    inflows:", // 9
  "      - F_PU1", // 10
  "      - F_PU2", // 11
  "    controls:", // 12
  "      - { actuator: S_PU1, on_below: 1, off_above: 2 }", // 13
  "relations:", // 14
  "  - { target: F_PU1, states: [S_PU1], regressor: L_T1 }", // 15
  "meters:", // 16
  "  - { main: E_MAIN, subs: [E_SUB] }", // 17
  "power:", // 18
  "  - { power: P, voltage: [V_L1], current: [I_L1], energy: E_MAIN }", // 19
  "",
].join("\n");

describe("site names against the configured points", () => {
  const site = parseSite(TEXT, "s.yaml");

  it("lists every name a site file uses with the key that names it", () => {
    expect(siteNames(site).map((n) => `${n.path.join(".")}=${n.point}`)).toEqual([
      "signals.E_MAIN=E_MAIN", "signals.E_MAIN.reset_register=E_RESETS", "signals.V_L9=V_L9",
      "tanks.T1.level=L_T1", "tanks.T1.inflows.0=F_PU1", "tanks.T1.inflows.1=F_PU2", "tanks.T1.controls.0.actuator=S_PU1",
      "relations.0.target=F_PU1", "relations.0.states.0=S_PU1", "relations.0.regressor=L_T1",
      "meters.0.main=E_MAIN", "meters.0.subs.0=E_SUB",
      "power.0.power=P", "power.0.voltage.0=V_L1", "power.0.current.0=I_L1", "power.0.energy=E_MAIN",
    ]);
    // What the checks read: not the signals section's own keys (unless a check uses them).
    expect([...sitePoints(site)].sort()).toEqual(["E_MAIN", "E_SUB", "F_PU1", "F_PU2", "I_L1", "L_T1", "P", "S_PU1", "V_L1"]);
  });

  it("names the file, line and key of each unknown one, with a close configured name", () => {
    const known = new Set(["E_MAIN", "E_SUB", "F_PU1", "F_PU2", "I_L1", "L_T1", "P", "S_PU1", "V_L1", "RESET_COUNT"]);
    expect(unknownSiteNames(site, TEXT, "s.yaml", known, "among the configured points")).toEqual([
      { file: "s.yaml", path: "signals.E_MAIN.reset_register", line: 3, code: "unknown_point", message: "E_RESETS is not among the configured points" },
      { file: "s.yaml", path: "signals.V_L9", line: 4, code: "unknown_point", message: "V_L9 is not among the configured points (did you mean V_L1?)" },
    ]);
    known.delete("F_PU2");
    known.delete("S_PU1");
    expect(unknownSiteNames(site, TEXT, "s.yaml", known, "among the configured points").map((i) => [i.path, i.line, i.message])).toEqual([
      ["signals.E_MAIN.reset_register", 3, "E_RESETS is not among the configured points"],
      ["signals.V_L9", 4, "V_L9 is not among the configured points (did you mean V_L1?)"],
      ["tanks.T1.inflows.1", 11, "F_PU2 is not among the configured points (did you mean F_PU1?)"],
      ["tanks.T1.controls.0.actuator", 13, "S_PU1 is not among the configured points (did you mean F_PU1?)"],
      ["relations.0.states.0", 15, "S_PU1 is not among the configured points (did you mean F_PU1?)"],
    ]);
  });

  it("suggests only a likely slip of the keyboard", () => {
    expect(closest("L_T9", ["L_T1", "L_T10", "F_PU1"])).toBe("L_T1");
    expect(closest("l_t1", ["L_T1"])).toBe("L_T1");
    expect(closest("SHOP_kwh", ["SHOP_kWh", "HOUSES_kWh"])).toBe("SHOP_kWh");
    expect(closest("PRESSURE", ["L_T1", "F_PU1"])).toBeUndefined();
    expect(closest("A", ["B"])).toBe("B");
    expect(closest("S_PU3", ["F_PU1", "S_PU2", "F_PU3"])).toBe("S_PU2"); // the kind prefix counts
    expect(closest("S_PU3", ["F_PU3", "E_PU3"])).toBe("E_PU3");
    expect(closest("x", [])).toBeUndefined();
  });
});
