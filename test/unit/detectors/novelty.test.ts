/** Novelty against the historical envelope, the seasonal periodicity gate and the budget rule for self-limiting findings. */
import { describe, expect, it } from "vitest";
import type { Finding } from "../../../detectors/detector";
import { EwmaCusumDetector } from "../../../detectors/ewma-cusum";
import { newSignalState, stepSignal } from "../../../detectors/incidents";
import { NoveltyDetector } from "../../../detectors/novelty";
import { SeasonalDetector } from "../../../detectors/seasonal";
import { feed, noise, prng, readings, T0 } from "./_helpers";

const FIVE_MIN = 300_000;

/** A daily wave with noise, sampled every 5 minutes. */
function daily(days: number, seed: number, amp = 10, noiseAmp = 2): number[] {
  const rnd = prng(seed);
  return Array.from({ length: days * 288 }, (_, i) => 50 + amp * Math.sin((2 * Math.PI * i) / 288) + (rnd() - 0.5) * 2 * noiseAmp);
}

describe("novelty detector", () => {
  it("reports a value beyond everything the signal has done, and says so", () => {
    const vals = daily(10, 1);
    vals[2000] = 75; // the wave's envelope is about 38..62
    vals[2500] = 20;
    const { at, findings } = feed(new NoveltyDetector("p"), readings(vals, FIVE_MIN));
    expect(at).toEqual([2000, 2500]);
    expect(findings[0]!.reason).toContain("above the highest value it has ever had");
    expect(findings[1]!.reason).toContain("below the lowest");
    expect(findings[0]!.score).toBeGreaterThan(5);
  });
  it("stays quiet on clean periodic data, however long", () => {
    expect(feed(new NoveltyDetector("p"), readings(daily(60, 2), FIVE_MIN)).at).toEqual([]);
  });
  it("does not report before its envelope has a day of history", () => {
    const vals = daily(3, 3);
    vals[200] = 200; // 16.7 h in: warm-up in readings is over, a day is not
    vals[600] = 300;
    expect(feed(new NoveltyDetector("p"), readings(vals, FIVE_MIN)).at).toEqual([600]);
  });
  it("is self-limiting: a runaway alarms a few times, not on every reading", () => {
    const vals = daily(4, 4);
    for (let i = 0; i < 500; i++) vals.push(62 + i * 5); // climbs 2500 above the old maximum
    const { at } = feed(new NoveltyDetector("p"), readings(vals, FIVE_MIN));
    expect(at.length).toBeGreaterThan(3);
    expect(at.length).toBeLessThan(30);
  });
  it("leaves a slow ramp (steps well inside the margin) to the drift detector", () => {
    const vals = daily(4, 4);
    for (let i = 0; i < 500; i++) vals.push(62 + i * 0.2);
    expect(feed(new NoveltyDetector("p"), readings(vals, FIVE_MIN)).at).toEqual([]);
  });
  it("on a quantised signal, takes one resolution step beyond the envelope for rounding, two for novelty", () => {
    // A coarse sensor: readings on a 0.5 grid, from 0 to 4 (margin 5 % of the span = 0.2, under one step).
    const rnd = prng(7);
    const grid = (): number[] => Array.from({ length: 600 }, () => 0.5 * Math.floor(rnd() * 9));
    const d = new NoveltyDetector("p");
    for (const r of readings(grid(), FIVE_MIN)) d.train(r);
    const later = readings(grid(), FIVE_MIN, "p", T0 + 3 * 86_400_000);
    later[400]!.value = 4.5; // one step above the highest value: the smallest change the sensor can show
    later[500]!.value = 5.5 + 1e-7; // two steps above the new highest (4.5), decimals rounded up
    const { at, findings } = feed(d, later);
    expect(at).toEqual([500]);
    expect(findings[0]!.score).toBeCloseTo(1 / 0.75, 3);
  });
  it("restores a snapshot from before the resolution floor and learns the resolution afresh", () => {
    const d = new NoveltyDetector("p");
    for (const r of readings([0, 0.5, 1, 1.5, 2, 1.5, 1, 0.5], FIVE_MIN)) d.train(r);
    const { last: _last, res: _res, ...old } = d.snapshot();
    const e = new NoveltyDetector("p");
    e.restore(old, d.stateVersion);
    expect(e.snapshot()).toMatchObject({ lo: 0, hi: 2, last: null, res: 0 });
    for (const r of readings([1, 1.5], FIVE_MIN, "p", T0 + 8 * FIVE_MIN)) e.train(r);
    expect(e.snapshot()).toMatchObject({ last: 1.5, res: 0.5 });
    expect(() => e.restore({ ...old, res: -1 }, d.stateVersion)).toThrow();
  });
  it("keeps the fine-resolution margin for a continuous signal", () => {
    const d = new NoveltyDetector("p");
    for (const r of readings(daily(2, 8), FIVE_MIN)) d.train(r);
    const later = readings(daily(2, 9), FIVE_MIN, "p", T0 + 3 * 86_400_000);
    later[400]!.value = 62 + 0.1 * 24; // about 0.1 of the span beyond: reported with the plain 5 % margin
    expect(feed(d, later).at).toEqual([400]);
  });
  it("learns the envelope from training history", () => {
    const d = new NoveltyDetector("p");
    for (const r of readings(daily(2, 5, 30), FIVE_MIN)) d.train(r); // wide swings: 18..82
    const later = readings(daily(2, 6), FIVE_MIN, "p", T0 + 2 * 86_400_000);
    later[300]!.value = 80; // inside the trained envelope
    expect(feed(d, later).at).toEqual([]);
  });
});

describe("seasonal periodicity gate", () => {
  const spiky = (days: number, periodic: boolean): number[] => {
    const rnd = prng(9);
    return Array.from({ length: days * 144 }, (_, i) => {
      const wave = periodic ? 20 * Math.sin((2 * Math.PI * i) / 144) : 0;
      return 50 + wave + (rnd() - 0.5) * 4 + (i % 997 === 500 ? 60 : 0);
    });
  };
  it("a strongly periodic signal's profile explains most of its variance and reports an off-profile value", () => {
    const d = new SeasonalDetector("p", { min_days: 4 });
    const vals = spiky(12, true);
    const { at } = feed(d, readings(vals, 600_000));
    expect(d.explained()).toBeGreaterThan(0.8);
    expect(at.length).toBeGreaterThan(0);
  });
  it("an aperiodic signal's hourly profile explains little and never reports", () => {
    const d = new SeasonalDetector("p", { min_days: 4 });
    const { at } = feed(d, readings(spiky(12, false), 600_000));
    expect(d.explained()).toBeLessThan(0.2);
    expect(at).toEqual([]);
  });
});

describe("false-alarm budget: self-limiting findings", () => {
  const o = { open_after: 1, close_after: 1, budget_per_day: 0.15 };
  const f = (ts: number, detector: string, score: number): Finding => ({
    point: "p", detector, ts, score, observed: 0, expected: 0, reason: "x",
  });
  it("a novelty finding opens an incident when the budget is spent, and spends a token when there is one", () => {
    const st = newSignalState();
    const kinds: (string | undefined)[] = [];
    const seq: [string, number][] = [["level_shift", 50], ["level_shift", 50], ["level_shift", 45], ["novelty", 1.2], ["level_shift", 45]];
    seq.forEach(([det, score], i) => {
      const ts = T0 + i * 2 * 60_000;
      kinds.push(stepSignal(st, "p", ts, [f(ts, det, score)], o, () => null)?.kind);
      stepSignal(st, "p", ts + 60_000, [], o, () => null);
    });
    expect(kinds).toEqual(["open", "open", undefined, "open", undefined]);
    const fresh = newSignalState();
    stepSignal(fresh, "p", T0, [f(T0, "novelty", 2)], o, () => null);
    expect(fresh.tokens).toBe(1);
  });
});

describe("drift detector on heavy-tailed data", () => {
  it("pairs of isolated spikes are not a drift; a sustained shift still is", () => {
    const spiky = noise(3000, 12).map((v, i) => (i % 400 === 0 || i % 400 === 1 ? v + 30 : v));
    expect(feed(new EwmaCusumDetector("p"), readings(spiky)).at).toEqual([]);
    const drifting = [...spiky, ...noise(600, 13).map((v, i) => v + i * 0.05)];
    const { at } = feed(new EwmaCusumDetector("p"), readings(drifting));
    expect(at.length).toBeGreaterThan(0);
    expect(at[0]!).toBeGreaterThan(3000);
  });
});
