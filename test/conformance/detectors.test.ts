import { join } from "node:path";
import { readFileSync } from "node:fs";
import type { Reading } from "../../agent/core/readings";
import { CounterDetector } from "../../detectors/counter";
import type { Detector } from "../../detectors/detector";
import { EwmaCusumDetector } from "../../detectors/ewma-cusum";
import { GroupShiftDetector } from "../../detectors/group-shift";
import { LevelShiftDetector } from "../../detectors/level-shift";
import { NoveltyDetector } from "../../detectors/novelty";
import { RangeDetector } from "../../detectors/range";
import { RateOfChangeDetector } from "../../detectors/rate-of-change";
import { ReplayDetector } from "../../detectors/replay";
import { SeasonalDetector } from "../../detectors/seasonal";
import { parseSite, SiteDetector } from "../../detectors/site";
import { StuckDetector } from "../../detectors/stuck";
import { describeDetector } from "./describe-detector";
import { prng } from "../helpers/prng";


const T0 = Date.UTC(2024, 0, 1);
const STEP = 600_000; // 10 min: the seasonal profile sees several weeks in a few thousand readings

/** A daily wave with noise, a step, a frozen stretch, a spike, a replayed stretch and a gap. */
function signal(n: number, point = "p"): Reading[] {
  const rnd = prng(7);
  const out: Reading[] = [];
  let ts = T0;
  for (let i = 0; i < n; i++) {
    ts += i % 4000 === 3999 ? STEP * 400 : STEP;
    let v = 50 + 10 * Math.sin((2 * Math.PI * i) / 144) + Math.round((rnd() - 0.5) * 200) / 100;
    const k = i % 2500;
    if (k >= 1200 && k < 1300) v += 60;
    if (k >= 1400 && k < 1450) v = 42.42;
    if (k === 1600) v = 500;
    if (k >= 1800 && k < 1840) v = out[i - 144]?.value ?? v;
    out.push({ point, value: v, ts, source: "test", quality: "good" });
  }
  return out;
}

function counter(n: number): Reading[] {
  const rnd = prng(3);
  let c = 1000;
  return Array.from({ length: n }, (_, i) => {
    c += rnd() * 2;
    const k = i % 1000;
    const v = k === 500 ? c - 50 : k === 700 ? c + 5000 : c;
    return { point: "e", value: v, ts: T0 + i * 60_000, source: "test", quality: "good" as const };
  });
}

const cases: [string, () => Detector, (n: number) => Reading[], number][] = [
  ["range", () => new RangeDetector("p", 0, 100), signal, 16],
  ["rate_of_change", () => new RateOfChangeDetector("p", { warmup: 50 }), signal, 8_000],
  ["stuck", () => new StuckDetector("p", { tolerance: 0, min_run: 5, warmup: 50 }), signal, 300],
  ["level_shift", () => new LevelShiftDetector("p", { warmup: 50, factor: 4 }), signal, 1_000],
  ["ewma_cusum", () => new EwmaCusumDetector("p", { warmup: 50 }), signal, 400],
  ["seasonal", () => new SeasonalDetector("p", { min_weeks: 2 }), signal, 20_000],
  ["seasonal (daily profile)", () => new SeasonalDetector("p", { min_weeks: 2, min_days: 2 }), signal, 20_000],
  ["counter", () => new CounterDetector("e"), counter, 400],
  ["replay", () => new ReplayDetector("p", { history: 720, warmup: 50 }), signal, 40_000],
  ["novelty", () => new NoveltyDetector("p", { warmup: 50 }), signal, 200],
];
for (const [name, make, readings, maxStateBytes] of cases) describeDetector(name, { make, readings, maxStateBytes });

/** The C-Town site detector over synthetic tank/pump data with a falsified level stretch. */
const site = parseSite(readFileSync(join(__dirname, "..", "..", "detectors", "sites", "ctown.yaml"), "utf8"));
function ctownReadings(n: number): Reading[] {
  const rnd = prng(11);
  const out: Reading[] = [];
  const level = { L_T1: 3, L_T2: 3, L_T3: 3, L_T4: 3, L_T5: 2, L_T6: 4, L_T7: 3 } as Record<string, number>;
  const ticks = Math.ceil(n / 12);
  for (let t = 0; t < ticks && out.length < n; t++) {
    const ts = T0 + t * 3_600_000;
    const on = (t >> 3) & 1;
    for (const k of Object.keys(level)) level[k] = Math.min(6, Math.max(0.5, level[k]! + (on ? 0.2 : -0.2) + (rnd() - 0.5) * 0.02));
    const falsified = t % 500 > 400 && t % 500 < 420;
    const push = (point: string, value: number): void => {
      out.push({ point, value, ts, source: "test", quality: "good" });
    };
    push("L_T1", falsified ? 5.9 : level.L_T1!);
    push("S_PU1", on);
    push("F_PU1", on ? 90 + rnd() * 4 : 0);
    push("S_PU2", 0);
    push("F_PU2", 0);
    push("P_J269", on ? 40 + rnd() : 30 + rnd());
    push("L_T7", level.L_T7!);
    push("S_PU10", on);
    push("F_PU10", on ? 30 + rnd() : 0);
    push("S_PU11", 0);
    push("F_PU11", 0);
    push("P_J317", on ? 60 + rnd() : 50 + rnd());
  }
  return out.slice(0, n);
}
describeDetector("site (C-Town)", {
  make: () => new SiteDetector(site),
  readings: ctownReadings,
  maxStateBytes: 20_000,
  flush: (d, emit) => (d as SiteDetector).flush(emit),
});

/** Three signals of one device; the group detector sees them tick by tick. */
function group(n: number): Reading[] {
  const a = signal(Math.ceil(n / 3), "a");
  const rnd = prng(5);
  const out: Reading[] = [];
  a.forEach((r, i) => {
    const k = i % 2500;
    const shift = k >= 600 && k < 700 ? 3 : 0;
    out.push(r, { ...r, point: "b", value: 20 + rnd() + shift }, { ...r, point: "c", value: 5 + rnd() * 0.1 + shift * 0.1 });
  });
  return out.slice(0, n);
}
describeDetector("group_shift", {
  make: () => new GroupShiftDetector("dev", ["a", "b", "c"], { warmup: 100 }),
  readings: group,
  maxStateBytes: 4_000,
  flush: (d, emit) => (d as GroupShiftDetector).flush(emit),
});
