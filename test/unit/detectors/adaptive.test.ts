/** Adaptive alarm behaviour: restarts, daily profiles, drift warm-up, the budget's strength rule and frozen-sensor incidents' share of it. */
import { describe, expect, it } from "vitest";
import type { Finding } from "../../../detectors/detector";
import { EwmaCusumDetector } from "../../../detectors/ewma-cusum";
import { GroupShiftDetector } from "../../../detectors/group-shift";
import { LevelShiftDetector } from "../../../detectors/level-shift";
import { newSignalState, stepSignal } from "../../../detectors/incidents";
import { RateOfChangeDetector } from "../../../detectors/rate-of-change";
import { SeasonalDetector } from "../../../detectors/seasonal";
import { feed, noise, prng, readings, T0 } from "./_helpers";

describe("rate of change across a restart", () => {
  it("does not compare the first reading after a long silence with the last one before it", () => {
    const d = new RateOfChangeDetector("p", { warmup: 100 });
    for (const r of readings(noise(400, 1, 10), 1000)) d.train(r);
    // A new recording a month later at a different operating point: not a step.
    const later = readings(noise(50, 2, 500), 1000, "p", T0 + 30 * 86_400_000);
    expect(feed(d, later).at).toEqual([]);
    // ...while a spike within the new recording still is.
    const vals = noise(50, 3, 500);
    vals[40] = vals[39]! + 30;
    expect(feed(d, readings(vals, 1000, "p", T0 + 31 * 86_400_000)).at).toContain(40);
  });
  it("does not compare across time going backwards (live data older than the history)", () => {
    const d = new RateOfChangeDetector("p", { warmup: 100 });
    for (const r of readings(noise(400, 1, 10), 1000, "p", T0 + 86_400_000)) d.train(r);
    expect(feed(d, readings(noise(20, 2, 500), 1000)).at).toEqual([]);
  });
});

describe("level shift across a restart", () => {
  it("keeps the signal's normal swing learned from a long history: a calm start of a new recording does not make its usual wander a shift", () => {
    const wander = (n: number, seed: number, amp: number): number[] =>
      noise(n, seed, 10, 0.05).map((v, i) => v + amp * Math.sin((2 * Math.PI * i) / 200));
    const d = new LevelShiftDetector("p");
    for (const r of readings(wander(3000, 1, 1), 60_000)) d.train(r);
    // A new recording a month later: calm for its first 400 readings, then the usual wander.
    const later = readings([...wander(400, 2, 0), ...wander(600, 3, 1)], 60_000, "p", T0 + 30 * 86_400_000);
    expect(feed(d, later).at).toEqual([]);
    // ...while a real step in the new recording is still a shift.
    const step = readings([...wander(400, 4, 0), ...wander(600, 5, 1).map((v, i) => (i > 300 ? v + 20 : v))], 60_000, "p", T0 + 60 * 86_400_000);
    expect(feed(d, step).at.length).toBeGreaterThan(0);
  });
});

describe("seasonal daily profile", () => {
  const demand = (h: number): number => 10 + 8 * Math.max(0, Math.sin((2 * Math.PI * (h % 24)) / 24));
  const day = 24;
  it("reports against the hour of day once the daily profile has min_days, before three weeks", () => {
    const rnd = prng(5);
    const vals = Array.from({ length: day * 8 }, (_, h) => demand(h) * (1 + (rnd() - 0.5) * 0.05));
    vals[day * 6 + 3] = demand(3) * 3.1;
    const { at, findings } = feed(new SeasonalDetector("p", { min_days: 4 }), readings(vals, 3_600_000));
    expect(at).toEqual([day * 6 + 3]);
    expect(findings[0]!.reason).toMatch(/3\.\d+x its usual 03:00 level .*daily profile/);
  });
  it("stays quiet before min_days, and without min_days", () => {
    const vals = Array.from({ length: day * 8 }, (_, h) => demand(h));
    vals[day * 2 + 3] = 1000;
    expect(feed(new SeasonalDetector("p", { min_days: 4 }), readings(vals, 3_600_000)).at).toEqual([]);
    vals[day * 6 + 3] = 1000;
    expect(feed(new SeasonalDetector("p"), readings(vals, 3_600_000)).at).toEqual([]);
  });
  it("widens its band for spikes that keep recurring at the same hour", () => {
    const rnd = prng(9);
    const vals = Array.from({ length: day * 60 }, (_, h) => demand(h) * (1 + (rnd() - 0.5) * 0.05) + (h % day === 3 ? 15 : 0) * (h > day * 6 ? 1 : 0));
    const { at } = feed(new SeasonalDetector("p", { min_days: 4 }), readings(vals, 3_600_000));
    // Reported at first, then learned as this hour's normal.
    expect(at.length).toBeGreaterThan(0);
    expect(at.filter((i) => i > day * 40)).toEqual([]);
  });
});

describe("drift warm-up", () => {
  it("defaults to three time constants of the running mean", () => {
    const vals = noise(1000, 4).map((v, i) => (i < 400 ? v + (400 - i) * 0.02 : v)); // settling start
    expect(feed(new EwmaCusumDetector("p"), readings(vals)).at.filter((i) => i < 600)).toEqual([]);
    expect(feed(new EwmaCusumDetector("p", { alpha: 0.01 }), readings(noise(10, 1))).at).toEqual([]);
  });
});

describe("false-alarm budget: strength rule", () => {
  const o = { open_after: 1, close_after: 1, budget_per_day: 0.15 };
  const f = (ts: number, score: number): Finding => ({
    point: "p", detector: "level_shift", ts, score, observed: 0, expected: 0, reason: "x",
  });
  const run = (scores: number[]): number => {
    const st = newSignalState();
    let opens = 0;
    scores.forEach((s, i) => {
      const ts = T0 + i * 2 * 60_000;
      if (stepSignal(st, "p", ts, [f(ts, s)], o, () => null)?.kind === "open") opens++;
      stepSignal(st, "p", ts + 60_000, [], o, () => null); // closes it
    });
    return opens;
  };
  it("beyond the budget, recurring anomalies weaker than the recent ones stay quiet", () => {
    expect(run([50, 50, 45, 45, 45, 45])).toBe(2);
  });
  it("beyond the budget, a stronger anomaly still opens an incident", () => {
    expect(run([50, 50, 45, 400])).toBe(3);
  });
});

describe("false-alarm budget: frozen-sensor incidents and the signal's moves", () => {
  const o = { open_after: 1, close_after: 1, budget_per_day: 0.15 };
  const f = (ts: number, detector: string, score: number): Finding => ({
    point: "p", detector, ts, score, observed: 0, expected: 0, reason: "x",
  });
  /** Whether each finding in turn opens an incident (each closed before the next). */
  const run = (seq: [string, number][]): boolean[] => {
    const st = newSignalState();
    return seq.map(([det, score], i) => {
      const ts = T0 + i * 2 * 60_000;
      const opened = stepSignal(st, "p", ts, [f(ts, det, score)], o, () => null)?.kind === "open";
      stepSignal(st, "p", ts + 60_000, [], o, () => null); // closes it
      return opened;
    });
  };
  it("frozen-sensor incidents do not hold back a weak shift finding on the same signal", () => {
    expect(run([["stuck", 3], ["stuck", 3], ["group_shift", 1.6]])).toEqual([true, true, true]);
  });
  it("the signal's whole budget counts every incident: after two shift incidents a weak frozen-sensor finding is held back", () => {
    expect(run([["level_shift", 3], ["group_shift", 3], ["stuck", 1.6]])).toEqual([true, true, false]);
  });
  it("recurring weak findings of each kind are still held back", () => {
    expect(run([["stuck", 3], ["stuck", 3], ["stuck", 1.6], ["level_shift", 3], ["group_shift", 3], ["level_shift", 1.6]]))
      .toEqual([true, true, false, true, true, false]);
  });
});

describe("group shift after a restart", () => {
  it("keeps the first reading of the new recording", () => {
    const g = new GroupShiftDetector("g", ["a", "b"], { window: 4, warmup: 0 });
    const tick = (ts: number, a: number, b: number): void => {
      g.train({ point: "a", value: a, ts, source: "t", quality: "good" });
      g.train({ point: "b", value: b, ts, source: "t", quality: "good" });
      g.flush(null);
    };
    for (let i = 0; i < 100; i++) tick(T0 + i * 1000, 1, 2);
    tick(T0 + 10_000_000, 7, 8);
    const s = g.snapshot();
    expect(s.members.a!.win).toEqual([7]);
    expect(s.members.b!.win).toEqual([8]);
  });
});

describe("group shift: sustained-shift stage", () => {
  const pts = ["a", "b", "c", "d", "e", "f", "g", "h"];
  /** Ticks of eight noisy members (uniform noise, amplitude 1); member a is offset by `shift` in [from, to). */
  const ticks = (n: number, seed: number, shift = 0, from = 0, to = 0): number[][] => {
    const cols = pts.map((_, k) => noise(n, seed + k, 10 + k));
    return Array.from({ length: n }, (_, i) => cols.map((c, k) => c[i]! + (k === 0 && i >= from && i < to ? shift : 0)));
  };
  const run = (g: GroupShiftDetector, rows: number[][], t0: number, learn: boolean): Finding[] => {
    const out: Finding[] = [];
    rows.forEach((row, i) => {
      const ts = t0 + i * 1000;
      row.forEach((v, k) => {
        const r = { point: pts[k]!, value: v, ts, source: "t", quality: "good" as const };
        if (learn) g.train(r);
        else g.observe(r, (f) => out.push(f));
      });
      g.flush(learn ? null : (f) => out.push(f));
    });
    return out;
  };
  const detector = (opts = {}): GroupShiftDetector => {
    const g = new GroupShiftDetector("g", pts, opts);
    run(g, ticks(3000, 11), T0, true);
    return g;
  };
  it("reports a small lasting shift of one signal that the averaged first stage misses, and nothing on the clean copy", () => {
    // 1.4 times the noise amplitude, for 400 ticks: averaged with seven unchanged signals, the first stage stays quiet.
    const live = ticks(1500, 21, 1.4, 800, 1200);
    const found = run(detector(), live, T0 + 10_000_000, false).map((f) => f.ts);
    expect(found.length).toBeGreaterThan(0);
    expect(Math.min(...found)).toBeGreaterThanOrEqual(T0 + 10_000_000 + 800 * 1000);
    expect(Math.min(...found)).toBeLessThan(T0 + 10_000_000 + 1000 * 1000);
    // Without the stage the same shift goes unreported: the finding is the new stage's.
    expect(run(detector({ long_window: 0 }), live, T0 + 10_000_000, false)).toEqual([]);
    expect(run(detector(), ticks(1500, 21), T0 + 10_000_000, false)).toEqual([]);
  });
  it("stops reporting when the readings are back, though its long average still remembers the shift", () => {
    // A larger shift (3 times the noise amplitude) that ends at tick 1200: the long average
    // needs several spans to forget it; the evidence ends with the readings.
    const t1 = T0 + 10_000_000;
    const found = run(detector(), ticks(1500, 21, 3, 800, 1200), t1, false).map((f) => (f.ts - t1) / 1000);
    expect(found.some((i) => i >= 800 && i < 1200)).toBe(true);
    // At most the short window (16 readings) after the end: the window still holds shifted readings.
    expect(Math.max(...found)).toBeLessThan(1200 + 16);
  });
  it("names the shifted signal and its usual level", () => {
    const f = run(detector(), ticks(1500, 21, 1.4, 800, 1200), T0 + 10_000_000, false)[0]!;
    expect(f.point).toBe("a");
    expect(f.reason).toMatch(/^a held a shifted level: averaging 10\.\d+ over its last ~48 readings against a usual (9\.9\d*|10(\.0\d*)?),/);
  });
  it("snapshot/restore resumes with identical output and state", () => {
    const live = ticks(1500, 31, 1.4, 700, 1100);
    const a = detector();
    run(a, live.slice(0, 650), T0 + 10_000_000, false);
    const b = new GroupShiftDetector("g", pts);
    b.restore(JSON.parse(JSON.stringify(a.snapshot())), a.stateVersion);
    const t1 = T0 + 10_000_000 + 650 * 1000;
    const fa = run(a, live.slice(650), t1, false);
    const fb = run(b, live.slice(650), t1, false);
    expect(fa.length).toBeGreaterThan(0);
    expect(fb).toEqual(fa);
    expect(b.snapshot()).toEqual(a.snapshot());
  });
  it("keeps its state bounded whatever the stream length", () => {
    const g = detector();
    const size = (): number => JSON.stringify(g.snapshot()).length;
    run(g, ticks(500, 41), T0 + 10_000_000, false);
    const early = size();
    run(g, ticks(5000, 42), T0 + 20_000_000, false);
    for (const m of Object.values(g.snapshot().members)) expect(m.lsize).toBe(48);
    expect(size()).toBeLessThan(early * 1.2);
  });
  it("restores a snapshot from before the stage with the stage empty, and rejects a bad window count", () => {
    const g = detector();
    const old = JSON.parse(JSON.stringify(g.snapshot())) as Record<string, unknown> & { members: Record<string, Record<string, unknown>> };
    for (const m of Object.values(old.members)) for (const k of ["lm", "lsize", "base", "bn", "lspread", "ld", "lcal"]) delete m[k];
    delete old.flagged_long;
    const e = new GroupShiftDetector("g", pts);
    e.restore(old as never, 1);
    expect(e.snapshot().members.a).toMatchObject({ lm: 0, lsize: 0, base: null, lcal: 0 });
    const bad = JSON.parse(JSON.stringify(g.snapshot())) as { members: Record<string, { lsize: number }> };
    bad.members.a!.lsize = 99;
    expect(() => new GroupShiftDetector("g", pts).restore(bad as never, 1)).toThrow(expect.objectContaining({ code: "DETECTOR_STATE" }));
  });
});

describe("older snapshots", () => {
  it("a seasonal snapshot without the daily profile restores with an empty one", () => {
    const d = new SeasonalDetector("p", { min_days: 2 });
    feed(d, readings(noise(500, 3), 3_600_000));
    const old = d.snapshot() as unknown as Record<string, unknown>;
    for (const k of ["d_mean", "d_dev", "d_count", "days", "last_day"]) delete old[k];
    const e = new SeasonalDetector("p", { min_days: 2 });
    e.restore(old as never, 1);
    expect(e.snapshot().days).toEqual(new Array(24).fill(0));
  });
  it("a rate-of-change snapshot without its typical interval restores", () => {
    const r = new RateOfChangeDetector("p");
    const s = r.snapshot() as unknown as Record<string, unknown>;
    delete s.dt;
    expect(() => r.restore(s as never, r.stateVersion)).not.toThrow();
  });
});

describe("group shift: a quantised signal's spread", () => {
  /**
   * Member q is read in 0.33 steps and sits on one value, with a one-reading blip every 40
   * readings (the window's trimmed mean never moves: its spread decays towards 0); member n is
   * noise. After learning, q settles three steps lower.
   */
  const rows = (n: number, seed: number, dropAt = Infinity): [number, number][] => {
    const nz = noise(n, seed, 5);
    return Array.from({ length: n }, (_, i) => [(i >= dropAt ? -0.93 : 0.06) + (i % 40 === 39 ? 0.33 : 0), nz[i]!]);
  };
  const run = (g: GroupShiftDetector, data: [number, number][], t0: number, learn: boolean): Finding[] => {
    const out: Finding[] = [];
    data.forEach(([q, n], i) => {
      const ts = t0 + i * 1000;
      for (const [point, value] of [["q", q], ["n", n]] as const) {
        const r = { point, value, ts, source: "t", quality: "good" as const };
        if (learn) g.train(r);
        else g.observe(r, (f) => out.push(f));
      }
      g.flush(learn ? null : (f) => out.push(f));
    });
    return out;
  };
  it("is never below its reading step: a three-step move is about 10 sd, not 10^10, and the learned limit stays sensible", () => {
    const g = new GroupShiftDetector("g", ["q", "n"], { long_window: 0 });
    run(g, rows(3000, 5), T0, true);
    const found = run(g, rows(600, 6, 300), T0 + 10_000_000, false);
    expect(found.length).toBeGreaterThan(0);
    for (const f of found) {
      expect(Number.isFinite(f.score)).toBe(true);
      expect(f.expected).toBeLessThan(100); // the learned limit: 9 (the floor) here, not inflated by a zero spread
      const sd = /q ([-+][\d.e+]+) sd/.exec(f.reason);
      expect(sd).not.toBeNull();
      // Three steps of 0.33 against a spread floored at its rounding error (0.33 / 4 x 1.25): -9.6 sd.
      expect(Math.abs(Number(sd![1]))).toBeGreaterThan(3);
      expect(Math.abs(Number(sd![1]))).toBeLessThan(10);
    }
    expect(g.snapshot().members.q!.step).toBeCloseTo(0.33, 9);
  });
  it("uses a configured resolution instead of the smallest change seen", () => {
    const g = new GroupShiftDetector("g", ["q", "n"], { long_window: 0, resolution: { q: 0.66 } });
    run(g, rows(3000, 5), T0, true);
    expect(g.snapshot().members.q!.step).toBe(0.66);
  });
});
