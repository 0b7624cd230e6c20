/**
 * Maintenance windows: a counter reset while online is a finding outside a window and nothing
 * inside one (offline `--maintenance FILE`), and `maintenance.start|end` on a real control socket
 * changes the engine and records an audit event for each.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { controlCall } from "../../../agent/core/control-client";
import { ControlServer } from "../../../agent/control/server";
import type { EventDraft } from "../../../agent/core/events";
import { DetectionEngine } from "../../../detectors/engine";
import { readMaintenanceFile, registerMaintenanceControl } from "../../../detectors/maintenance";
import { simulateFeeder, type FeederRun } from "../../sim/feeder";
import { parseSite } from "../../../detectors/site";
import { detectFeeder, FEEDER_SITE } from "../../sim/run-feeder";

const dir = mkdtempSync(join(tmpdir(), "gw-maint-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const iso = (ms: number): string => new Date(ms).toISOString().slice(0, 19).replace("T", " ");

describe("maintenance file (detect --maintenance)", () => {
  const run = simulateFeeder(21, { learnDays: 7, days: 10, attacks: [], ordinary: false });
  const at = run.split + 1440 + 500;
  // SHOP_kWh is reset to 0 while online (no blank readings): a reset nobody explained.
  const base = run.values.SHOP_kWh[at]!;
  for (let i = at; i < run.ts.length; i++) run.values.SHOP_kWh[i] = Number((run.values.SHOP_kWh[i]! - base).toFixed(1));

  it("outside a window, a reset while online is a counter finding", () => {
    const r = detectFeeder(run, { site: FEEDER_SITE });
    expect(r.lines.some((l) => l.signal === "SHOP_kWh" && l.detector === "counter")).toBe(true);
  });
  it("inside a window it re-baselines: no incident at all", () => {
    const file = join(dir, "windows.yaml");
    writeFileSync(file, `- { from: "${iso(run.ts[at - 10]!)}", to: "${iso(run.ts[at + 30]!)}", points: [SHOP_kWh], reason: meter reset by the utility }\n`);
    expect(detectFeeder(run, { site: FEEDER_SITE, maintenance: file }).lines).toEqual([]);
  });
  it.each([
    ["not a list of windows", "from: 1\n", "(root)"],
    ["a window that ends before it starts", "- { from: '2026-03-10 10:00', to: '2026-03-10 09:00', points: [A], reason: x }\n", "0"],
    ["a window without points", "- { from: '2026-03-10 08:00', to: '2026-03-10 09:00', reason: x }\n", "0.points"],
  ])("rejects %s with INPUT_INVALID naming the entry", (_n, text, where) => {
    const file = join(dir, "bad.yaml");
    writeFileSync(file, text);
    expect(() => readMaintenanceFile(file)).toThrow(expect.objectContaining({ code: "INPUT_INVALID", message: expect.stringContaining(`bad.yaml: ${where}`) }));
  });
});

describe("reset register (site file signals.<counter>.reset_register)", () => {
  const run = simulateFeeder(22, { learnDays: 7, days: 10, attacks: [], ordinary: false });
  const at = run.split + 1440 + 500;
  const base = run.values.SHOP_kWh[at]!;
  for (let i = at; i < run.ts.length; i++) run.values.SHOP_kWh[i] = Number((run.values.SHOP_kWh[i]! - base).toFixed(1));
  // The meter's reset count: 3 until the reset, 4 from the reading that shows it (the same poll).
  const withRegister = (changeAt: number): FeederRun => {
    const resets = new Float64Array(run.ts.length).map((_, i) => (i >= changeAt ? 4 : 3));
    return { ...run, columns: [...run.columns, "SHOP_RESETS"] as FeederRun["columns"], values: { ...run.values, SHOP_RESETS: resets } as FeederRun["values"] };
  };
  const site = join(dir, "feeder-reset.yaml");
  writeFileSync(site, readFileSync(FEEDER_SITE, "utf8").replace(
    "SHOP_kWh: { kind: energy_counter, unit: kWh, resolution: 0.1 }",
    "SHOP_kWh: { kind: energy_counter, unit: kWh, resolution: 0.1, reset_register: SHOP_RESETS }\n  SHOP_RESETS: { kind: state }",
  ));
  const counterLines = (r: ReturnType<typeof detectFeeder>) => r.lines.filter((l) => l.detector === "counter");

  it("a reset the register announces re-baselines: no incident", () => {
    expect(detectFeeder(withRegister(at), { site }).lines).toEqual([]);
  });
  it("an unexplained reset stays a finding: the register unchanged, or changed long before", () => {
    expect(counterLines(detectFeeder(withRegister(run.ts.length), { site })).map((l) => l.signal)).toContain("SHOP_kWh");
    expect(counterLines(detectFeeder(withRegister(at - 60), { site })).map((l) => l.signal)).toContain("SHOP_kWh");
  });
  it("without a reset register in the site file the same reset is a finding", () => {
    expect(counterLines(detectFeeder(withRegister(at), { site: FEEDER_SITE })).map((l) => l.signal)).toContain("SHOP_kWh");
  });
  it("a rollback (not to near 0) is a finding even when the register changes", () => {
    const rolled = withRegister(at);
    const v = Float64Array.from(run.values.SHOP_kWh);
    for (let i = at; i < v.length; i++) v[i] = v[i]! + base - 20; // back by 20 kWh, far from 0
    expect(counterLines(detectFeeder({ ...rolled, values: { ...rolled.values, SHOP_kWh: v } }, { site })).length).toBeGreaterThan(0);
  });
  it("the register's last value and the counter's reading times survive a snapshot and restore", () => {
    const regSite = parseSite("name: m\nsignals:\n  E: { kind: energy_counter, resolution: 0.1, reset_register: R }\n  R: { kind: state }\n");
    const make = (events: EventDraft[]) => new DetectionEngine({
      points: { E: { kind: "energy_counter", resolution: 0.1 }, R: { kind: "state" } }, site: regSite, sink: { record: (d) => events.push(d) },
    });
    const t0 = Date.UTC(2026, 2, 1);
    const feed = (e: DetectionEngine, from: number, to: number, resetAt: number | null): void => {
      for (let i = from; i < to; i++) {
        const ts = t0 + i * 60_000;
        const reset = resetAt !== null && i >= resetAt;
        const value = reset ? Number(((i - resetAt) * 0.1).toFixed(1)) : Number((1000 + i * 0.1).toFixed(1));
        for (const [point, v] of [["E", value], ["R", reset ? 4 : 3]] as const) {
          const r = { point, value: v, ts, source: "t", quality: "good" as const };
          if (i < 1440) e.learn(r);
          else e.reading(r);
        }
        e.flush();
      }
    };
    for (const announced of [true, false]) {
      const before: EventDraft[] = [];
      const a = make(before);
      feed(a, 0, 2000, null);
      const after: EventDraft[] = [];
      const b = make(after);
      b.restore(JSON.parse(JSON.stringify(a.snapshot())));
      // The reset at reading 2000; unannounced, the register keeps its value.
      if (announced) feed(b, 2000, 2100, 2000);
      else {
        for (let i = 2000; i < 2100; i++) {
          const ts = t0 + i * 60_000;
          b.reading({ point: "E", value: Number(((i - 2000) * 0.1).toFixed(1)), ts, source: "t", quality: "good" });
          b.reading({ point: "R", value: 3, ts, source: "t", quality: "good" });
          b.flush();
        }
      }
      const opened = after.filter((d) => d.ocsf.activity_id === 1).map((d) => d.ocsf.message);
      if (announced) expect(opened).toEqual([]);
      else expect(opened.some((m) => m.includes("E counter was reset"))).toBe(true);
    }
  });
  it.each([
    ["on a signal that is not a counter", "  P_X: { kind: power, reset_register: R }\n", "signals.P_X.reset_register"],
    ["naming the counter itself", "  E_X: { kind: energy_counter, reset_register: E_X }\n", "signals.E_X.reset_register"],
  ])("refuses a reset register %s, naming the key", (_n, line, key) => {
    expect(() => parseSite(`name: s\nsignals:\n${line}`, "s.yaml")).toThrow(expect.objectContaining({ code: "SITE_INVALID", message: expect.stringContaining(key) }));
  });
});

describe("maintenance through the daemon's control socket", () => {
  it("start and end change the engine and are audit events; unknown points are refused", async () => {
    const events: EventDraft[] = [];
    const sink = { record: (d: EventDraft) => events.push(d) };
    const engine = new DetectionEngine({ points: { E_A: { kind: "energy_counter" }, V: { kind: "voltage" } }, sink });
    const server = new ControlServer(join(dir, "ctl", "control.sock"));
    registerMaintenanceControl(server, engine, sink);
    await server.listen();
    try {
      const started = (await controlCall(server.path, "maintenance.start", { points: ["E_A"], reason: "meter exchange", by: "alice" })) as { point: string }[];
      expect(started.map((w) => w.point)).toEqual(["E_A"]);
      expect(engine.maintenanceWindows().map((w) => w.point)).toEqual(["E_A"]);
      expect(events).toHaveLength(1);
      expect(events[0]!.class).toBe("audit");
      expect(events[0]!.ocsf.message).toBe("Maintenance started on E_A by alice: meter exchange");
      await expect(controlCall(server.path, "maintenance.start", { points: ["NOPE"], reason: "x" })).rejects.toMatchObject({ code: "INPUT_INVALID", message: expect.stringContaining("unknown point NOPE") });
      await expect(controlCall(server.path, "maintenance.start", { points: ["E_A"] })).rejects.toMatchObject({ code: "CONTROL_BAD_REQUEST", message: expect.stringContaining("needs points and a reason") });
      const ended = (await controlCall(server.path, "maintenance.end", { all: true, by: "alice" })) as { point: string }[];
      expect(ended.map((w) => w.point)).toEqual(["E_A"]);
      expect(engine.maintenanceWindows()).toEqual([]);
      expect(events.map((e) => e.ocsf.message)).toEqual(["Maintenance started on E_A by alice: meter exchange", "Maintenance ended on E_A by alice"]);
    } finally {
      await server.close();
    }
  });
  it("a counter reset during maintenance opens no incident; after it ends, one does", () => {
    const events: EventDraft[] = [];
    const engine = new DetectionEngine({ points: { E_A: { kind: "energy_counter" } }, sink: { record: (d) => events.push(d) } });
    const t0 = Date.UTC(2026, 0, 1);
    let v = 100;
    const feed = (i: number, value: number): void => {
      engine.reading({ point: "E_A", value, ts: t0 + i * 60_000, source: "t", quality: "good" });
      engine.flush();
    };
    for (let i = 0; i < 100; i++) feed(i, (v += 0.5));
    engine.startMaintenance(["E_A"], "exchange", "bob", t0 + 100 * 60_000);
    feed(100, 0.2);
    feed(101, 0.7);
    engine.endMaintenance(["E_A"]);
    for (let i = 102; i < 110; i++) feed(i, 0.7 + (i - 101) * 0.5);
    expect(events.filter((e) => e.class === "finding")).toEqual([]);
    feed(110, 0.1);
    expect(events.filter((e) => e.class === "finding" && e.ocsf.activity_id === 1)).toHaveLength(1);
  });
});
