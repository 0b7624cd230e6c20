import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runDetect } from "../../../detectors/run";
import { parseCsv, parseTimestamp } from "../../../detectors/csv";

const dir = mkdtempSync(join(tmpdir(), "gw-detect-"));
function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

describe("CSV input", () => {
  it.each([
    ["2016-09-13 23:00:00", Date.UTC(2016, 8, 13, 23)],
    ["2016-09-13T23:00:00Z", Date.UTC(2016, 8, 13, 23)],
    ["2016-09-13T23:00:00+02:00", Date.UTC(2016, 8, 13, 21)],
    ["2020-03-09 10:14:33.5", Date.UTC(2020, 2, 9, 10, 14, 33, 500)],
    ["1473807600", Date.UTC(2016, 8, 13, 23)],
    ["1473807600.25", Date.UTC(2016, 8, 13, 23) + 250],
    ["13/09/2016", null],
  ])("timestamp %s", (text, ms) => {
    expect(parseTimestamp(text)).toBe(ms);
  });
  it("reads , or ; and keeps the timestamp text", () => {
    const t = parseCsv("datetime;a;b\n2020-01-01 00:00:00;1;2.5\n2020-01-01 00:00:01;;3\n", "x.csv");
    expect(t.columns).toEqual(["a", "b"]);
    expect(t.tsText).toEqual(["2020-01-01 00:00:00", "2020-01-01 00:00:01"]);
    expect(Number.isNaN(t.values[0]![1]!)).toBe(true);
  });
  it("skips and counts unreadable rows, naming line and problem, and keeps the rest", () => {
    const t = parseCsv("timestamp,a\n2020-01-01 00:00:00,1,2\nyesterday,1\n2020-01-01 00:00:01,1\n2020-01-01 01:00:00,abc\n2020-01-01 01:00:01,4\n", "x.csv");
    expect(t.skipped).toEqual({ count: 3, first: [expect.objectContaining({ line: 2, problem: "fields" }), expect.objectContaining({ line: 3, problem: "timestamp" }), expect.objectContaining({ line: 5, problem: "number" })] });
    expect(t.tsText).toEqual(["2020-01-01 00:00:01", "2020-01-01 01:00:01"]);
    expect(Array.from(t.values[0]!)).toEqual([1, 4]);
    expect(t.backwards?.count).toBe(0);
  });
  it("a number beyond the range of a double (1e400) skips its row, named, never an infinite reading", () => {
    const t = parseCsv("timestamp,a\n2020-01-01 00:00:00,1\n2020-01-01 00:00:01,1e400\n2020-01-01 00:00:02,-1e999\n2020-01-01 00:00:03,2\n", "x.csv");
    expect(t.skipped).toEqual({ count: 2, first: [{ line: 3, problem: "number", detail: 'column a: "1e400" is beyond the range of a number' }, expect.objectContaining({ line: 4, problem: "number" })] });
    expect(Array.from(t.values[0]!)).toEqual([1, 2]);
  });
  it("counts timestamps going backwards, keeping those rows", () => {
    const t = parseCsv("timestamp,a\n2020-01-01 00:00:02,1\n2020-01-01 00:00:01,2\n2020-01-01 00:00:03,3\n", "x.csv");
    expect(t.ts).toHaveLength(3);
    expect(t.backwards).toEqual({ count: 1, first: [{ line: 3, ts: "2020-01-01 00:00:01", previous: "2020-01-01 00:00:02" }] });
  });
  it.each([
    ["timestamp,a\nyesterday,1\n", /x\.csv: no data rows \(1 unreadable/],
    ["timestamp,a,a\n", /duplicate column a/],
    ["timestamp\n", /at least one signal/],
    ["timestamp,a\n", /no data rows/],
  ])("malformed CSV is INPUT_INVALID naming file and line (%#)", (text, msg) => {
    expect(() => parseCsv(text, "x.csv")).toThrow(expect.objectContaining({ code: "INPUT_INVALID", message: expect.stringMatching(msg) }));
  });
});

describe("detect", () => {
  const rows = (n: number, f: (i: number) => string, t0 = Date.UTC(2024, 0, 1)): string =>
    Array.from({ length: n }, (_, i) => `${new Date(t0 + i * 60_000).toISOString().replace("T", " ").slice(0, 19)},${f(i)}`).join("\n");
  it("prints one JSON line per flagged row; learning rows are never reported", () => {
    const learn = file("learn.csv", `timestamp,S_P1,F_P1\n${rows(600, (i) => (i % 20 < 10 ? `1,${50 + Math.sin(i)}` : "0,0"))}\n`);
    const input = file("input.csv", `timestamp,S_P1,F_P1\n${rows(200, (i) => (i % 20 < 10 ? `1,${i >= 160 && i < 170 ? 5 : 50 + Math.sin(i)}` : "0,0"), Date.UTC(2024, 0, 2))}\n`);
    const out: string[] = [];
    const s = runDetect({ input, learn }, (l) => out.push(l));
    expect(s.site).toBe("inferred: 1 state/flow pairs, 0 meter trees, 0 power relations (see --propose-site)");
    const flagged = out.map((l) => JSON.parse(l) as { ts: string; signal: string; detector: string; score: number; reason: string });
    expect(flagged.length).toBeGreaterThan(0);
    expect(flagged[0]).toMatchObject({ ts: "2024-01-02 02:40:00", signal: "F_P1", detector: "state_vs_flow" });
    expect(typeof flagged[0]!.score).toBe("number");
    expect(flagged[0]!.reason).toContain("S_P1=on");
    expect(flagged.every((f) => f.ts >= "2024-01-02 02:40:00" && f.ts <= "2024-01-02 02:55:00")).toBe(true);
  });
  it("a bad row does not stop the file: it is skipped, counted and reported, as is time going backwards", () => {
    const good = rows(100, (i) => `${10 + Math.sin(i)}`).split("\n");
    good.splice(50, 0, "2024-01-01 00:49:30,oops");
    good.splice(70, 0, "2024-01-01 00:10:00,10");
    const input = file("i4.csv", `timestamp,a\n${good.join("\n")}\n`);
    const s = runDetect({ input }, () => {});
    expect(s).toMatchObject({ rows: 101, skipped_rows: 1, backwards_rows: 1 });
    expect(s.warnings).toHaveLength(2);
  });
  it("a learn file missing an input column is INPUT_INVALID", () => {
    const learn = file("l2.csv", "timestamp,a\n2024-01-01 00:00:00,1\n");
    const input = file("i2.csv", "timestamp,a,b\n2024-01-01 00:00:00,1,2\n");
    expect(() => runDetect({ input, learn }, () => {})).toThrow(expect.objectContaining({ code: "INPUT_INVALID" }));
  });
  it("a bad site file is SITE_INVALID", () => {
    const input = file("i3.csv", "timestamp,a\n2024-01-01 00:00:00,1\n");
    const site = file("bad.yaml", "name: x\ntanks: 3\n");
    expect(() => runDetect({ input, site }, () => {})).toThrow(expect.objectContaining({ code: "SITE_INVALID" }));
  });
  it("a site name that is not a column of the input is SITE_INVALID naming the site file, line and key", () => {
    const input = file("i5.csv", `timestamp,S_P1,F_P1\n${rows(20, () => "1,50")}\n`);
    const site = file("typo.yaml", "name: x\nrelations:\n  - target: F_P1\n    states: [S_PI]\n");
    let err: unknown;
    try {
      runDetect({ input, site }, () => {});
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: "SITE_INVALID", issues: [{ file: site, line: 4, path: "relations.0.states.0", code: "unknown_point" }] });
    expect((err as Error).message).toBe(`${site}:4: relations.0.states.0: S_PI is not among the columns of ${input} (did you mean S_P1?)`);
    writeFileSync(site, "name: x\nrelations:\n  - target: F_P1\n    states: [S_P1]\n");
    expect(runDetect({ input, site }, () => {}).site).toBe(site);
  });
});

describe("detect --propose-site", () => {
  it("infers kinds, resolutions, intermittent loads and the meter tree of a feeder, as a valid site file", async () => {
    const { mkdtempSync, writeFileSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const { simulateFeeder, feederCsv } = await import("../../sim/feeder");
    const { proposeSite } = await import("../../../detectors/run");
    const { parseSite } = await import("../../../detectors/site");
    const dir = mkdtempSync(join(tmpdir(), "gw-propose-"));
    try {
      const run = simulateFeeder(3, { learnDays: 3, days: 4, attacks: [], ordinary: false });
      writeFileSync(join(dir, "learn.csv"), feederCsv(run, 0, run.split));
      writeFileSync(join(dir, "in.csv"), feederCsv(run, run.split, run.ts.length));
      const text = proposeSite({ input: join(dir, "in.csv"), learn: join(dir, "learn.csv") });
      const site = parseSite(text, "proposed");
      expect(site.signals.E_MAIN).toMatchObject({ kind: "energy_counter", resolution: 0.01 });
      expect(site.signals.LAMPS_kWh).toMatchObject({ kind: "energy_counter", resolution: 0.1, intermittent: true });
      expect(site.signals.V_L1!.kind).toBe("voltage");
      expect(site.signals.I_L2!.kind).toBe("current");
      expect(site.signals.PF_L3!.kind).toBe("power_factor");
      expect(site.meters).toEqual([expect.objectContaining({ main: "E_MAIN", subs: expect.arrayContaining(["HOUSES_kWh", "SHOP_kWh", "LAMPS_kWh", "EV_kWh"]) })]);
      // The power relation, found by the numbers: P_MAIN reads the phases' V x A x PF / 1000, and
      // E_MAIN counts what it sums to. P_MAIN is power (its name alone would say pressure).
      expect(site.signals.P_MAIN).toMatchObject({ kind: "power", resolution: 0.01 });
      expect(site.signals.V_L1).toMatchObject({ resolution: 0.1 });
      expect(site.power).toEqual([expect.objectContaining({
        power: "P_MAIN", voltage: ["V_L1", "V_L2", "V_L3"], current: ["I_L1", "I_L2", "I_L3"], power_factor: ["PF_L1", "PF_L2", "PF_L3"],
        scale: 0.001, energy: "E_MAIN", energy_per_power_hour: 1,
      })]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it("finds no power relation when no column reads V x A x PF, and keeps a named counter that stood still", async () => {
    const { simulateFeeder } = await import("../../sim/feeder");
    const { inferSite } = await import("../../../detectors/infer");
    const run = simulateFeeder(3, { learnDays: 3, days: 4, attacks: [], ordinary: false });
    const n = run.split;
    const shuffled = Float64Array.from({ length: n }, (_, i) => run.values.P_MAIN[(i * 7919) % n]!);
    const still = new Float64Array(n).fill(812.4);
    const columns = [...run.columns];
    const values = columns.map((c) => (c === "P_MAIN" ? shuffled : c === "EV_kWh" ? still : run.values[c].slice(0, n)));
    const ts = run.ts.slice(0, n);
    const site = inferSite({ file: "learn.csv", columns, ts, tsText: ts.map(String), values });
    expect(site.power).toEqual([]);
    expect(site.signals.EV_kWh).toMatchObject({ kind: "energy_counter", intermittent: true });
    expect(site.meters[0]?.subs).toContain("EV_kWh");
  });
  it("tells a coarse counter on a load that never stops from an intermittent one", async () => {
    // Whole-kWh registers: the shop's counter stands still between steps most readings, but moves
    // every few windows all day; the lighting circuit's stands still all day.
    const { simulateVariant } = await import("../../sim/feeder-variants");
    const { inferSite } = await import("../../../detectors/infer");
    const { run } = simulateVariant(3, "whole-kwh", { learnDays: 3, days: 4, attacks: [], ordinary: false });
    const n = run.split;
    const ts = run.ts.slice(0, n);
    const site = inferSite({ file: "learn.csv", columns: [...run.columns], ts, tsText: ts.map(String), values: run.columns.map((c) => run.values[c].slice(0, n)) });
    expect(site.signals.SHOP_kWh).toMatchObject({ kind: "energy_counter", resolution: 1, intermittent: false });
    expect(site.signals.HOUSES_kWh!.intermittent).toBe(false);
    expect(site.signals.LAMPS_kWh!.intermittent).toBe(true);
  });
  it("pairs phases by other common tag names (VOLTAGE_A, CURRENT_A, COSPHI_A)", async () => {
    const { simulateFeeder } = await import("../../sim/feeder");
    const { inferSite } = await import("../../../detectors/infer");
    const run = simulateFeeder(3, { learnDays: 3, days: 4, attacks: [], ordinary: false });
    const n = run.split;
    const rename: Record<string, string> = {
      V_L1: "VOLTAGE_A", V_L2: "VOLTAGE_B", V_L3: "VOLTAGE_C", I_L1: "CURRENT_A", I_L2: "CURRENT_B", I_L3: "CURRENT_C",
      PF_L1: "COSPHI_A", PF_L2: "COSPHI_B", PF_L3: "COSPHI_C", P_MAIN: "P_TOTAL", E_MAIN: "ENERGY_TOTAL",
    };
    const columns = run.columns.map((c) => rename[c] ?? c);
    const ts = run.ts.slice(0, n);
    const site = inferSite({ file: "learn.csv", columns, ts, tsText: ts.map(String), values: run.columns.map((c) => run.values[c].slice(0, n)) });
    expect(site.signals.VOLTAGE_B!.kind).toBe("voltage");
    expect(site.signals.CURRENT_C!.kind).toBe("current");
    expect(site.power).toEqual([expect.objectContaining({
      power: "P_TOTAL", voltage: ["VOLTAGE_A", "VOLTAGE_B", "VOLTAGE_C"], current: ["CURRENT_A", "CURRENT_B", "CURRENT_C"],
      power_factor: ["COSPHI_A", "COSPHI_B", "COSPHI_C"], scale: 0.001, energy: "ENERGY_TOTAL",
    })]);
  });
  it("finds per-phase power relations when each phase has its own power column", async () => {
    const { simulateFeeder } = await import("../../sim/feeder");
    const { inferSite } = await import("../../../detectors/infer");
    const run = simulateFeeder(3, { learnDays: 3, days: 4, attacks: [], ordinary: false });
    const n = run.split;
    const phase = (k: 1 | 2 | 3): Float64Array => Float64Array.from({ length: n }, (_, i) =>
      Math.round(run.values[`V_L${k}`][i]! * run.values[`I_L${k}`][i]! * run.values[`PF_L${k}`][i]!) / 1000);
    const columns = [...run.columns.filter((c) => c !== "P_MAIN"), "P_L1", "P_L2", "P_L3"];
    const values = columns.map((c) => (c.startsWith("P_L") ? phase(Number(c.slice(3)) as 1 | 2 | 3) : run.values[c as "E_MAIN"].slice(0, n)));
    const ts = run.ts.slice(0, n);
    const site = inferSite({ file: "learn.csv", columns, ts, tsText: ts.map(String), values });
    expect(site.power.map((p) => [p.power, p.voltage, p.current, p.power_factor, p.scale])).toEqual([
      ["P_L1", ["V_L1"], ["I_L1"], ["PF_L1"], 0.001],
      ["P_L2", ["V_L2"], ["I_L2"], ["PF_L2"], 0.001],
      ["P_L3", ["V_L3"], ["I_L3"], ["PF_L3"], 0.001],
    ]);
    expect(site.signals.P_L2!.kind).toBe("power");
  });
});

describe("detect without a site file on a feeder", () => {
  it("a quiet feeder after three days of learning raises no incident (the inferred site judges V, I, PF and P)", async () => {
    const { simulateFeeder } = await import("../../sim/feeder");
    const { detectFeeder } = await import("../../sim/run-feeder");
    const run = simulateFeeder(7, { learnDays: 3, days: 10, attacks: [], ordinary: false });
    expect(detectFeeder(run, {}).lines.map((l) => `${l.ts} ${l.signal}:${l.detector}`)).toEqual([]);
  });
});
