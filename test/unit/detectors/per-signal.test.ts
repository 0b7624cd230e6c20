import { describe, expect, it } from "vitest";
import { CounterDetector } from "../../../detectors/counter";
import { EwmaCusumDetector } from "../../../detectors/ewma-cusum";
import { LevelShiftDetector } from "../../../detectors/level-shift";
import { RangeDetector } from "../../../detectors/range";
import { RateOfChangeDetector } from "../../../detectors/rate-of-change";
import { ReplayDetector } from "../../../detectors/replay";
import { SeasonalDetector } from "../../../detectors/seasonal";
import { createSignalDetectors } from "../../../detectors/signal-detectors";
import { StuckDetector } from "../../../detectors/stuck";
import { feed, noise, prng, readings, T0 } from "./_helpers";

describe("range", () => {
  it.each([
    [50, false],
    [0, false],
    [100, false],
    [-0.1, true],
    [100.5, true],
  ])("value %d outside 0..100: %s", (v, flagged) => {
    const { findings } = feed(new RangeDetector("p", 0, 100), readings([v]));
    expect(findings.length > 0).toBe(flagged);
    if (flagged) expect(findings[0]).toMatchObject({ detector: "range", strength: "physical", expected: v < 0 ? 0 : 100 });
  });
});

describe("rate of change", () => {
  it.each([
    ["a spike far beyond normal steps", 30, true],
    ["a step within the normal spread", 0.5, false],
  ])("%s", (_name, jump, flagged) => {
    const vals = noise(400, 1);
    vals[350] = vals[349]! + jump;
    const { at } = feed(new RateOfChangeDetector("p", { warmup: 100 }), readings(vals));
    expect(at.includes(350)).toBe(flagged);
  });
  it("reports a step beyond the configured physical limit even during warm-up", () => {
    const { at } = feed(new RateOfChangeDetector("p", { max_rate_per_s: 0.01 }), readings([1, 1.1, 5]));
    expect(at).toEqual([2]);
  });
});

describe("stuck", () => {
  it.each([
    ["frozen for 40 readings after noisy operation", 40, true],
    ["frozen no longer than normal runs", 3, false],
  ])("%s", (_name, frozen, flagged) => {
    const vals = noise(300, 2).map((v) => Math.round(v * 100) / 100);
    for (let i = 250; i < 250 + frozen; i++) vals[i] = 12.34;
    const { at, findings } = feed(new StuckDetector("p", { tolerance: 0, min_run: 10, warmup: 100 }), readings(vals));
    expect(at.length > 0).toBe(flagged);
    if (flagged) expect(findings[0]!.reason).toContain("frozen at 12.34");
  });
  it("keeps quiet up to 1.5x the longest run seen in normal operation", () => {
    const vals = [...noise(50, 12), ...Array.from({ length: 550 }, () => 0)];
    const d = new StuckDetector("p", { tolerance: 0, min_run: 10, warmup: 50 });
    for (const r of readings(vals.slice(0, 300))) d.train(r); // a run of 250 is normal
    expect(feed(d, readings(vals.slice(300))).at[0]).toBe(375 - 250); // reported once the run reaches 1.5 x 250 + 1 = 376
  });
  it("never reports a signal that has never been seen changing", () => {
    const vals = Array.from({ length: 600 }, () => 0);
    expect(feed(new StuckDetector("p", { tolerance: 0, min_run: 10, warmup: 50 }), readings(vals)).at).toEqual([]);
  });
});

describe("level shift", () => {
  it.each([
    ["a step of 5 on noise +/-1", 5, true],
    ["a step of 0.2 on noise +/-1", 0.2, false],
  ])("%s", (_name, step, flagged) => {
    const vals = noise(800, 3).map((v, i) => (i >= 600 ? v + step : v));
    const { at } = feed(new LevelShiftDetector("p"), readings(vals));
    expect(at.some((i) => i >= 600 && i < 640)).toBe(flagged);
    expect(at.every((i) => i >= 600)).toBe(true);
  });
  it("reports a persisting new level while it is new, then no more (an ordinary on/off step ends its alarm)", () => {
    const vals = noise(1400, 3).map((v, i) => (i >= 600 ? v + 5 : v));
    const { at } = feed(new LevelShiftDetector("p"), readings(vals));
    expect(at.length).toBeGreaterThan(0);
    expect(at.length).toBeLessThanOrEqual(16);
    expect(at.every((i) => i >= 600 && i < 640)).toBe(true);
  });
  it("a fault that starts across a short outage is found: a gap shorter than the baseline's memory is no new recording", () => {
    // 1 Hz, 80 s without readings (80 intervals: beyond the 50 of a fresh warm-up, within the
    // reference span of 100), and the level has moved when readings resume.
    const vals = noise(900, 3);
    const rs = readings(vals, 1000).map((r, i) => (i >= 600 ? { ...r, ts: r.ts + 80_000, value: r.value + 5 } : r));
    const { at } = feed(new LevelShiftDetector("p"), rs);
    expect(at.some((i) => i >= 600 && i < 640)).toBe(true);
    expect(at.every((i) => i >= 600)).toBe(true);
    // A day without readings is a new recording: the baseline is learned afresh, nothing reported.
    const day = readings(vals, 1000).map((r, i) => (i >= 600 ? { ...r, ts: r.ts + 86_400_000, value: r.value + 5 } : r));
    expect(feed(new LevelShiftDetector("p"), day).at).toEqual([]);
  });
  it("never narrows its normal swing below the learning history's: a quiet live stretch does not make an ordinary step a shift", () => {
    const learn = readings(noise(3000, 8), 1000);
    // Live: the same signal, ten times quieter for a while, then an ordinary step (well within
    // the learned swing) and a real shift of 5.
    const live = (step: number): number[] => noise(900, 9, 10, 0.1).map((v, i) => (i >= 700 ? v + step : v));
    const run = (step: number): number[] => {
      const d = new LevelShiftDetector("p");
      for (const r of learn) d.train(r);
      return feed(d, readings(live(step), 1000, "p", T0 + 3000_000)).at;
    };
    expect(run(0.5)).toEqual([]);
    expect(run(5).some((i) => i >= 700 && i < 740)).toBe(true);
  });
  it("ignores a single spike (robust mean)", () => {
    const vals = noise(800, 4);
    vals[700] = 1000;
    expect(feed(new LevelShiftDetector("p"), readings(vals)).at).toEqual([]);
  });
});

describe("EWMA + CUSUM", () => {
  it("keeps its baseline across an outage shorter than its memory, and finds a drift that starts there", () => {
    const vals = noise(1500, 5).map((v, i) => (i >= 1000 ? v + (i - 1000) * 0.01 : v));
    const rs = readings(vals, 1000).map((r, i) => (i >= 1000 ? { ...r, ts: r.ts + 90_000 } : r));
    const { at } = feed(new EwmaCusumDetector("p"), rs);
    expect(at.filter((i) => i < 1000)).toEqual([]);
    expect(at.some((i) => i >= 1000 && i < 1500)).toBe(true);
  });
  it("detects a slow drift that no single reading reveals", () => {
    const vals = noise(1500, 5).map((v, i) => (i >= 1000 ? v + (i - 1000) * 0.01 : v));
    const { at } = feed(new EwmaCusumDetector("p"), readings(vals));
    expect(at.filter((i) => i < 1000)).toEqual([]);
    expect(at.some((i) => i >= 1000 && i < 1500)).toBe(true);
  });
  it("calibrates on normal data that drifts by itself", () => {
    const wander = (n: number, seed: number): number[] => {
      const rnd = prng(seed);
      let x = 0;
      return Array.from({ length: n }, () => (x += (rnd() - 0.5) * 0.2) + (rnd() - 0.5));
    };
    const d = new EwmaCusumDetector("p");
    for (const r of readings(wander(5000, 6))) d.train(r);
    expect(d.threshold()).toBeGreaterThan(12);
  });
  // Two short excursions 40 readings apart, each long enough for one CUSUM signal.
  const excursions = (first: number, second: number): number[] =>
    noise(1200, 8).map((v, i) => v + (i >= 1000 && i < 1010 ? first : i >= 1050 && i < 1060 ? second : 0));
  it("does not take a rise and a fall for a drift (a wander): only signals the same way confirm each other", () => {
    expect(feed(new EwmaCusumDetector("p"), readings(excursions(3, -3))).at).toEqual([]);
    expect(feed(new EwmaCusumDetector("p"), readings(excursions(-3, 3))).at).toEqual([]);
    const { findings } = feed(new EwmaCusumDetector("p"), readings(excursions(3, 3)));
    expect(findings.map((f) => f.reason)).toEqual([expect.stringMatching(/^p drifting up/)]);
  });
  it("keeps its noise scale over a long gap, so a fast move right after it calibrates the threshold", () => {
    // After a day offline the process falls by 6 in 80 readings as it starts again (a heater
    // cycling), then does the same 700 readings later: normal for it, no drift.
    const start = (i: number): number => (i < 80 ? -6 * (i / 80) : -6);
    const after = noise(1600, 9).map((v, i) => v + start(i) + (i >= 700 && i < 780 ? -6 * ((i - 700) / 80) : i >= 780 ? -6 : 0));
    const rs = [...readings(noise(1000, 10)), ...readings(after, 60_000, "p", T0 + 86_400_000 * 2)];
    const d = new EwmaCusumDetector("p");
    expect(feed(d, rs).at).toEqual([]);
    expect(d.threshold()).toBeGreaterThan(12);
  });
});

describe("seasonal profile", () => {
  const week = 7 * 24;
  const demand = (h: number): number => 10 + 8 * Math.max(0, Math.sin((2 * Math.PI * (h % 24)) / 24));
  it("reports a value 3x its usual level for that hour of the week, after three weeks", () => {
    const rnd = prng(7);
    const vals = Array.from({ length: week * 4 }, (_, h) => demand(h) * (1 + (rnd() - 0.5) * 0.05));
    vals[week * 3 + 27] = demand(27) * 3.1;
    const { at, findings } = feed(new SeasonalDetector("p"), readings(vals, 3_600_000));
    expect(at).toEqual([week * 3 + 27]);
    expect(findings[0]!.reason).toMatch(/3\.1x its usual (Monday|Tuesday) 03:00 level/);
  });
  it("does not report before a bin has seen three weeks", () => {
    const vals = Array.from({ length: week * 2 }, (_, h) => demand(h));
    vals[week + 5] = 1000;
    expect(feed(new SeasonalDetector("p"), readings(vals, 3_600_000)).at).toEqual([]);
  });
});

describe("counter sanity", () => {
  it.each([
    ["runs backwards", -5, true],
    ["jumps far beyond its learned rate", 5000, true],
    ["advances normally", 1, false],
  ])("a counter that %s", (_name, delta, flagged) => {
    const rnd = prng(8);
    let c = 100;
    const vals = Array.from({ length: 200 }, () => (c += rnd()));
    vals[150] = vals[149]! + delta;
    for (let i = 151; i < 200; i++) vals[i] = vals[i - 1]! + rnd() * 0.5 + (delta > 0 ? 0 : 0);
    const { at } = feed(new CounterDetector("e"), readings(vals));
    expect(at.includes(150)).toBe(flagged);
  });
  it("accepts a register rollover", () => {
    const { at } = feed(new CounterDetector("e", { rollover_at: 65536, max_rate_per_s: 100 }), readings([65500, 65530, 20, 50]));
    expect(at).toEqual([]);
  });
  it("takes a step from just below a power of ten to just above 0 for the display's wrap, when the rate explains it", () => {
    // Six digits with one decimal: 99,999.x wraps to 0.x. No rollover_at is configured.
    const vals = Array.from({ length: 60 }, (_, i) => Math.round((99_988 + i * 0.3 + (i % 2) * 0.1) * 10) / 10);
    const wrapped = vals.map((v) => (v >= 100_000 ? Math.round((v - 100_000) * 10) / 10 : v));
    expect(feed(new CounterDetector("e"), readings(wrapped)).at).toEqual([]);
    // A drop to 900 is no wrap: the counter could not have advanced 900 in one interval.
    expect(feed(new CounterDetector("e"), readings([...vals.slice(0, 30), 900, 900.3])).at).toEqual([30]);
    // Nor is a drop from 2 % below the power of ten.
    expect(feed(new CounterDetector("e"), readings([...vals.slice(0, 20).map((v) => v - 2000), 0.4, 0.7])).at).toEqual([20]);
    // And a drop from elsewhere to near 0 (the 5252 to 0.05) stays a finding.
    expect(feed(new CounterDetector("e"), readings([5250, 5251, 5252, 0.05, 0.1])).at).toEqual([3]);
  });
});

describe("replay", () => {
  it("reports a window that repeats an earlier one exactly, and keeps reporting while it follows it", () => {
    const vals = noise(600, 9).map((v) => Math.round(v * 100) / 100);
    for (let i = 0; i < 30; i++) vals[500 + i] = vals[400 + i]!;
    const { at, findings } = feed(new ReplayDetector("p"), readings(vals));
    // Reported once the copied run carries 32 bits (and twice the longest natural repeat), then on
    // readings while it follows the copy, and not after.
    expect(at[0]).toBeGreaterThanOrEqual(504);
    expect(at[0]).toBeLessThanOrEqual(515);
    expect(at.length).toBeGreaterThanOrEqual(10);
    expect(at[at.length - 1]!).toBeLessThanOrEqual(529);
    expect(findings[0]!.reason).toContain("100 readings earlier");
  });
  it("ignores flat stretches (too few distinct values)", () => {
    const vals = noise(600, 10).map((v) => Math.round(v * 100) / 100);
    for (let i = 200; i < 210; i++) vals[i] = 5;
    for (let i = 500; i < 510; i++) vals[i] = 5;
    expect(feed(new ReplayDetector("p"), readings(vals)).at).toEqual([]);
  });
});

describe("per-signal detector set", () => {
  it.each([
    ["flow", ["range", "rate_of_change", "stuck", "level_shift", "ewma_cusum", "seasonal", "replay", "novelty"]],
    ["level", ["range", "rate_of_change", "stuck", "level_shift", "ewma_cusum", "replay", "novelty"]],
    ["energy_counter", ["range", "counter", "stuck"]],
    ["state", ["range"]],
  ] as const)("%s gets %j", (kind, ids) => {
    const ds = createSignalDetectors("x", { kind, range: { min: 0, max: 1 } });
    expect(ds.map((d) => d.id.split("/")[1])).toEqual(ids);
  });
});

describe("replay across days, in bounded memory", () => {
  /** A signal at `stepMs` for `days`: a daily wave plus noise, quantised to `res`. */
  function wave(days: number, stepMs: number, res: number, seed: number): number[] {
    const rnd = prng(seed);
    const n = Math.round((days * 86_400_000) / stepMs);
    let ar = 0;
    return Array.from({ length: n }, (_, i) => {
      ar = 0.95 * ar + (rnd() - 0.5);
      const v = 230 + 3 * Math.sin((2 * Math.PI * i * stepMs) / 86_400_000) + ar;
      return Math.round(v / res) * res;
    });
  }
  it.each([
    ["one reading a minute", 60_000],
    ["one reading a second", 1_000],
  ])("finds yesterday's hours replayed today at %s", (_name, stepMs) => {
    const perDay = 86_400_000 / stepMs;
    const vals = wave(3, stepMs, 0.01, 5);
    const from = Math.round(2.4 * perDay);
    const len = Math.round(perDay / 12); // two hours
    for (let i = from; i < from + len; i++) vals[i] = vals[i - perDay]!;
    const d = new ReplayDetector("v");
    const { at, findings } = feed(d, readings(vals, stepMs, "v"));
    expect(at.length).toBeGreaterThan(0);
    expect(at[0]!).toBeGreaterThanOrEqual(from);
    // It ends with the copy, not one sampled window later (one in 512 at 1 s): each reading is
    // checked against its copy's fingerprint bit, which live readings miss one time in two.
    expect(at[at.length - 1]!).toBeLessThan(from + len + 10);
    expect(findings[0]!.reason).toContain(`${perDay} readings earlier`);
    // Bounded: two hash tables, whatever the rate.
    expect(JSON.stringify(d.snapshot()).length).toBeLessThan(80_000);
  });
  it("snapshot/restore in the middle of a replay at 1 s resumes with identical findings and state", () => {
    const perDay = 86_400;
    const vals = wave(3, 1000, 0.01, 7);
    const from = Math.round(2.4 * perDay);
    for (let i = from; i < from + 3600; i++) vals[i] = vals[i - perDay]!;
    const rs = readings(vals, 1000, "v");
    const cut = from + 1800;
    const a = new ReplayDetector("v");
    feed(a, rs.slice(0, cut));
    const b = new ReplayDetector("v");
    b.restore(JSON.parse(JSON.stringify(a.snapshot())), a.stateVersion);
    const fa = feed(a, rs.slice(cut));
    const fb = feed(b, rs.slice(cut));
    expect(fa.at.length).toBeGreaterThan(0);
    expect(fb.at).toEqual(fa.at);
    expect(fa.at[fa.at.length - 1]!).toBeLessThan(from + 3600 - cut + 10);
    expect(b.snapshot()).toEqual(a.snapshot());
    // A snapshot from before the fingerprint ring restores (the ring starts empty); a bad ring is refused.
    const old = JSON.parse(JSON.stringify(a.snapshot())) as Record<string, unknown>;
    for (const k of ["fp", "fp_bits", "fp_from"]) delete old[k];
    expect(() => new ReplayDetector("v").restore(old as never, a.stateVersion)).not.toThrow();
    const bad = { ...a.snapshot(), fp: "AAAA" };
    expect(() => new ReplayDetector("v").restore(bad, a.stateVersion)).toThrow(expect.objectContaining({ code: "DETECTOR_STATE" }));
  });
  it("chance repeats of a coarse signal (0.1 V steps) over three days raise nothing", () => {
    const vals = wave(3, 60_000, 0.1, 6);
    expect(feed(new ReplayDetector("v", { resolution: 0.1 }), readings(vals, 60_000, "v")).at).toEqual([]);
  });
});
