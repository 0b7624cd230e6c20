/**
 * Seeded synthetic feeder for the energy physics, through the whole engine: a main energy
 * meter, three sub-meters (counters with 0.1 kWh resolution, installed at different times),
 * and the main feeder's active power with its line voltage, current and power factor. Two weeks
 * of learning, then one week twice: a clean copy (no incident may open) and a copy with one
 * attack (an incident must open on the attacked point within the stated delay).
 */
import { describe, expect, it } from "vitest";
import type { EventDraft } from "../../../agent/core/events";
import { DetectionEngine } from "../../../detectors/engine";
import { parseSite } from "../../../detectors/site";
import type { SignalSpec } from "../../../detectors/signal-detectors";
import { prng, T0 } from "./_helpers";

const MIN = 60_000;
const DAYS_LEARN = 14;
const DAYS_TEST = 7;
const N = (DAYS_LEARN + DAYS_TEST) * 1440;
const SPLIT = DAYS_LEARN * 1440;
const COLS = ["E_MAIN", "E_A", "E_B", "E_C", "P_MAIN", "V_MAIN", "I_MAIN", "PF_MAIN"] as const;
type Col = (typeof COLS)[number];
type Row = Record<Col, number>;

const SITE = parseSite(`
name: feeder
meters:
  - { main: E_MAIN, subs: [E_A, E_B, E_C], tolerance_pct: 3, tolerance_abs: 0.4 }
power:
  - { power: P_MAIN, voltage: V_MAIN, current: I_MAIN, power_factor: PF_MAIN, phases: 3, scale: 0.001, tolerance_pct: 5 }
`);

const POINTS: Record<Col, SignalSpec> = {
  E_MAIN: { kind: "energy_counter", range: { min: 0, max: 1e8 } },
  E_A: { kind: "energy_counter", range: { min: 0, max: 1e8 } },
  E_B: { kind: "energy_counter", range: { min: 0, max: 1e8 } },
  E_C: { kind: "energy_counter", range: { min: 0, max: 1e8 } },
  P_MAIN: { kind: "power", range: { min: 0, max: 600 } },
  V_MAIN: { kind: "voltage", range: { min: 360, max: 440 } },
  I_MAIN: { kind: "current", range: { min: 0, max: 1000 } },
  PF_MAIN: { kind: "power_factor", range: { min: 0, max: 1 } },
};

/** One reading per minute: three loads with a daily profile and noise; the main meter sees their sum plus 1 % losses. */
function feeder(seed: number): Row[] {
  const rnd = prng(seed);
  const gauss = () => (rnd() + rnd() + rnd() + rnd() - 2) / 0.58;
  const base = [60, 45, 30];
  const kwh = [12_000.3, 3_500.1, 800.7];
  let main = 51_234.5;
  const rows: Row[] = [];
  for (let i = 0; i < N; i++) {
    const h = (i % 1440) / 60;
    const shape = 1 + 0.5 * Math.sin((2 * Math.PI * (h - 9)) / 24);
    const loads = base.map((b) => Math.max(0, b * shape * (1 + 0.03 * gauss())));
    const total = loads.reduce((a, b) => a + b, 0) * 1.01;
    loads.forEach((l, k) => (kwh[k]! += l / 60));
    main += total / 60;
    const v = 400 * (1 + 0.005 * gauss());
    const pf = 0.92 + 0.005 * gauss();
    const amps = (total * 1000) / (Math.sqrt(3) * v * pf);
    const q = (x: number, step: number) => Math.floor(x / step) * step;
    rows.push({
      E_MAIN: q(main, 0.1), E_A: q(kwh[0]!, 0.1), E_B: q(kwh[1]!, 0.1), E_C: q(kwh[2]!, 0.1),
      P_MAIN: Math.round(total * 10) / 10, V_MAIN: Math.round(v * 10) / 10, I_MAIN: Math.round(amps * 10) / 10, PF_MAIN: Math.round(pf * 1000) / 1000,
    });
  }
  return rows;
}

interface Opened { minute: number; point: string; detector: string }

function run(rows: readonly Row[]): Opened[] {
  const events: EventDraft[] = [];
  const engine = new DetectionEngine({ points: POINTS, site: SITE, sink: { record: (d) => events.push(d) } });
  const opened: Opened[] = [];
  rows.forEach((row, i) => {
    const ts = T0 + i * MIN;
    for (const c of COLS) {
      const r = { point: c, value: row[c], ts, source: "test", quality: "good" as const };
      if (i < SPLIT) engine.learn(r);
      else engine.reading(r);
    }
    events.length = 0;
    engine.flush();
    for (const e of events) {
      if (e.ocsf.activity_id !== 1) continue;
      const ev = (e.ocsf.evidences as { data: { point: string; detector: string } }[])[0]!.data;
      opened.push({ minute: i - SPLIT, point: ev.point, detector: ev.detector });
    }
  });
  return opened;
}

describe("synthetic attacks on a metered feeder (energy counters, power against V x A x PF)", () => {
  const clean = feeder(4242);
  const start = 1440 + Math.floor(prng(99)() * 3 * 1440); // seeded, within test days 2-4

  it("the clean copy raises no incident", () => {
    expect(run(clean)).toEqual([]);
  });

  const attacks: [string, Col, string, number, (rows: Row[], s: number) => void][] = [
    ["meter tampering: E_B advances at 70 % of its load", "E_MAIN", "meter_balance", 45, (rows, s) => {
      const at = rows[SPLIT + s]!.E_B;
      for (let i = SPLIT + s; i < rows.length; i++) rows[i]!.E_B = Math.floor((at + (rows[i]!.E_B - at) * 0.7) * 10) / 10;
    }],
    ["power under-reported by 15 %", "P_MAIN", "power_balance", 5, (rows, s) => {
      for (let i = SPLIT + s; i < SPLIT + s + 360; i++) rows[i]!.P_MAIN = Math.round(rows[i]!.P_MAIN * 0.85 * 10) / 10;
    }],
    ["counter rollback: E_MAIN set back 50 kWh", "E_MAIN", "counter", 2, (rows, s) => {
      for (let i = SPLIT + s; i < rows.length; i++) rows[i]!.E_MAIN = Math.round((rows[i]!.E_MAIN - 50) * 10) / 10;
    }],
  ];

  it.each(attacks)("%s: %s incident (%s) within %d min", (_name, point, detector, maxDelay, inject) => {
    const rows = clean.map((r) => ({ ...r }));
    inject(rows, start);
    const opened = run(rows);
    expect(opened.every((o) => o.minute >= start), JSON.stringify(opened)).toBe(true);
    const hit = opened.find((o) => o.point === point);
    expect(hit, JSON.stringify(opened)).toBeDefined();
    expect(hit!.minute - start).toBeLessThanOrEqual(maxDelay);
    expect(opened.some((o) => o.point === point && o.detector === detector), JSON.stringify(opened)).toBe(true);
  });

  it("a lasting imbalance is one incident, not one per window", () => {
    const rows = clean.map((r) => ({ ...r }));
    attacks[0]![4](rows, start);
    expect(run(rows).filter((o) => o.detector === "meter_balance").length).toBe(1);
  });

  it("a counter that goes backwards restarts the balance window instead of raising a balance alarm", () => {
    const rows = clean.map((r) => ({ ...r }));
    attacks[2]![4](rows, start);
    expect(run(rows).filter((o) => o.detector === "meter_balance")).toEqual([]);
  });
});
