/**
 * Seeded synthetic attack suite on recorded normal data (test/fixtures/detectors): the engine
 * learns on the first part of a normal recording, then sees the rest twice: a clean copy
 * (no incident may open) and a copy with one injected attack (an incident must open on the
 * attacked signal within the stated delay).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { EventDraft } from "../../../agent/core/events";
import { parseCsv, type CsvTable } from "../../../detectors/csv";
import { DetectionEngine } from "../../../detectors/engine";
import { inferSignals, inferSite } from "../../../detectors/infer";
import { parseSite, type SiteConfig } from "../../../detectors/site";
import type { SignalSpec } from "../../../detectors/signal-detectors";
import { prng } from "./_helpers";

const FIX = join(__dirname, "..", "..", "fixtures", "detectors");
const batadal = parseCsv(readFileSync(join(FIX, "batadal-dataset03-6weeks.csv"), "utf8"), "batadal");
const skab = parseCsv(readFileSync(join(FIX, "skab-anomaly-free-1800s.csv"), "utf8"), "skab");
const CTOWN = parseSite(readFileSync(join(__dirname, "..", "..", "..", "detectors", "sites", "ctown.yaml"), "utf8"), "ctown.yaml");

/** The site file given (C-Town for BATADAL, as `--site`), else what the CLI infers. */
function siteFor(t: CsvTable): SiteConfig | undefined {
  if (t === batadal) return CTOWN;
  const s = inferSite(t);
  return s.relations.length + s.meters.length ? s : undefined;
}

type Rows = number[][]; // rows[i][c]

function rowsOf(t: CsvTable, from: number, to: number): Rows {
  const out: Rows = [];
  for (let i = from; i < to; i++) out.push(t.values.map((col) => col[i]!));
  return out;
}

interface Opened { row: number; point: string; detector: string }

/** Learns on rows [0, split) then replays `test` rows (timestamps of rows split..). */
function run(t: CsvTable, split: number, test: Rows, points: Record<string, SignalSpec>, extra?: (i: number) => [string, number][]): Opened[] {
  const events: EventDraft[] = [];
  const site = siteFor(t);
  const engine = new DetectionEngine({ points, site, sink: { record: (d) => events.push(d) } });
  const feed = (ts: number, vals: readonly number[], learn: boolean, more: [string, number][]): void => {
    vals.forEach((value, c) => {
      const r = { point: t.columns[c]!, value, ts, source: "test", quality: "good" as const };
      if (learn) engine.learn(r);
      else engine.reading(r);
    });
    for (const [point, value] of more) {
      const r = { point, value, ts, source: "test", quality: "good" as const };
      if (learn) engine.learn(r);
      else engine.reading(r);
    }
    engine.flush();
  };
  for (let i = 0; i < split; i++) feed(t.ts[i]!, t.values.map((col) => col[i]!), true, extra?.(i) ?? []);
  const opened: Opened[] = [];
  test.forEach((vals, k) => {
    events.length = 0;
    feed(t.ts[split + k]!, vals, false, extra?.(split + k) ?? []);
    for (const e of events) {
      if (e.ocsf.activity_id !== 1) continue;
      const ev = (e.ocsf.evidences as { data: { point: string; detector: string } }[])[0]!.data;
      opened.push({ row: k, point: ev.point, detector: ev.detector });
    }
  });
  return opened;
}

const col = (t: CsvTable, name: string): number => {
  const c = t.columns.indexOf(name);
  if (c < 0) throw new Error(name);
  return c;
};

describe("synthetic attacks on BATADAL normal operation (C-Town site, hourly)", () => {
  const split = 24 * 35; // learn 5 weeks, test the 6th
  const points = inferSignals(batadal);
  const clean = rowsOf(batadal, split, batadal.ts.length);
  const rnd = prng(20240601);
  const start = 24 + Math.floor(rnd() * 48); // seeded attack start within the test week

  it("the clean copy raises no incident", () => {
    expect(run(batadal, split, clean, points)).toEqual([]);
  });

  const attacks: [string, string, number, (rows: Rows) => void][] = [
    ["frozen sensor: L_T4 stuck at its last value", "L_T4", 24, (rows) => {
      const c = col(batadal, "L_T4");
      for (let i = start; i < start + 60; i++) rows[i]![c] = rows[start]![c]!;
    }],
    ["replayed window: L_T7 replays the previous day", "L_T7", 8, (rows) => {
      const c = col(batadal, "L_T7");
      for (let i = start; i < start + 24; i++) rows[i]![c] = rows[i - 24]![c]!;
    }],
    ["slow drift: P_J14 drifts up 0.15 m per hour", "P_J14", 48, (rows) => {
      const c = col(batadal, "P_J14");
      for (let i = start; i < rows.length; i++) rows[i]![c] = rows[i]![c]! + 0.15 * (i - start);
    }],
    ["step spoof: L_T1 reads 1.5 m high", "L_T1", 6, (rows) => {
      const c = col(batadal, "L_T1");
      for (let i = start; i < start + 24; i++) rows[i]![c] = Math.round((rows[i]![c]! + 1.5) * 100) / 100;
    }],
    ["setpoint manipulation: PU7 driven at 70 % speed (flow follows)", "F_PU7", 12, (rows) => {
      const c = col(batadal, "F_PU7");
      for (let i = start; i < start + 48; i++) rows[i]![c] = Math.round(rows[i]![c]! * 0.7 * 100) / 100;
    }],
  ];
  it.each(attacks)("%s: incident on %s within %d h", (_name, point, maxDelay, inject) => {
    const rows = clean.map((r) => [...r]);
    inject(rows);
    const opened = run(batadal, split, rows, points);
    const first = opened.find((o) => o.point === point || o.row >= start);
    expect(first, JSON.stringify(opened)).toBeDefined();
    expect(first!.row).toBeGreaterThanOrEqual(start);
    expect(first!.row - start).toBeLessThanOrEqual(maxDelay);
    expect(opened.some((o) => o.point === point && o.row - start <= maxDelay)).toBe(true);
  });
});

describe("synthetic attacks on SKAB normal operation (water pump test bed, 1 Hz)", () => {
  const split = 1200;
  const clean = rowsOf(skab, split, skab.ts.length);
  const rnd = prng(777);
  const start = 200 + Math.floor(rnd() * 200);
  const points = inferSignals(skab);
  // An energy counter derived from the recorded current and voltage (kWh), for the rollback attack.
  const cur = col(skab, "Current");
  const volt = col(skab, "Voltage");
  const energy: number[] = [];
  let kwh = 1234;
  for (let i = 0; i < skab.ts.length; i++) {
    kwh += (skab.values[cur]![i]! * skab.values[volt]![i]!) / 3_600_000;
    energy.push(Math.round(kwh * 10_000) / 10_000);
  }
  const withCounter = { ...points, E_kWh: { kind: "energy_counter" as const } };

  it("the clean copy raises no incident", () => {
    expect(run(skab, split, clean, withCounter, (i) => [["E_kWh", energy[i]!]])).toEqual([]);
  });

  const attacks: [string, string, number, (rows: Rows) => void][] = [
    ["frozen sensor: Accelerometer1RMS stuck", "Accelerometer1RMS", 120, (rows) => {
      const c = col(skab, "Accelerometer1RMS");
      for (let i = start; i < start + 150; i++) rows[i]![c] = rows[start]![c]!;
    }],
    ["replayed window: Current replays the previous minute", "Current", 10, (rows) => {
      const c = col(skab, "Current");
      for (let i = start; i < start + 60; i++) rows[i]![c] = rows[i - 60]![c]!;
    }],
    ["step spoof: Volume Flow RateRMS reads 8 % low", "Volume Flow RateRMS", 30, (rows) => {
      const c = col(skab, "Volume Flow RateRMS");
      for (let i = start; i < start + 120; i++) rows[i]![c] = rows[i]![c]! * 0.92;
    }],
    ["slow drift: Thermocouple drifts up 0.01 per second", "Thermocouple", 120, (rows) => {
      const c = col(skab, "Thermocouple");
      for (let i = start; i < rows.length; i++) rows[i]![c] = rows[i]![c]! + 0.01 * (i - start);
    }],
  ];
  it.each(attacks)("%s: incident on %s within %d s", (_name, point, maxDelay, inject) => {
    const rows = clean.map((r) => [...r]);
    inject(rows);
    const opened = run(skab, split, rows, withCounter, (i) => [["E_kWh", energy[i]!]]);
    const mine = opened.filter((o) => o.point === point);
    expect(mine.length, JSON.stringify(opened)).toBeGreaterThan(0);
    expect(mine[0]!.row).toBeGreaterThanOrEqual(start);
    expect(mine[0]!.row - start).toBeLessThanOrEqual(maxDelay);
    expect(opened.filter((o) => o.row < start)).toEqual([]);
  });

  it("counter rollback: E_kWh runs backwards: incident within 1 s", () => {
    const rolled = energy.map((v, i) => (i >= split + start ? v - 0.5 : v));
    const opened = run(skab, split, clean, withCounter, (i) => [["E_kWh", rolled[i]!]]);
    expect(opened).toEqual([{ row: start, point: "E_kWh", detector: "counter" }]);
  });
});
