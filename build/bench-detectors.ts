/**
 * Benchmark of local detection: readings per second per core through the full per-signal
 * detector set (range, rate of change, stuck, level shift, EWMA+CUSUM, seasonal, replay, novelty),
 * bytes of saved state per signal, and the engine end to end (incidents, site physics).
 * Single-threaded, so readings/s is per core. Deterministic input (seeded PRNG).
 */
import type { Reading } from "../agent/core/readings";
import type { Detector, Finding } from "../detectors/detector";
import { DetectionEngine } from "../detectors/engine";
import { parseSite } from "../detectors/site";
import { readFileSync } from "node:fs";
import { createSignalDetectors } from "../detectors/signal-detectors";
import { prng } from "../agent/demo/prng";


function series(n: number, seed: number): Float64Array {
  const rnd = prng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = 50 + 10 * Math.sin((2 * Math.PI * i) / 1440) + Math.round((rnd() - 0.5) * 400) / 100;
  return out;
}

function perSignal(signals: number, perSignalReadings: number): { rate: number; findings: number } {
  const sets: Detector[][] = [];
  const data: Float64Array[] = [];
  for (let s = 0; s < signals; s++) {
    sets.push(createSignalDetectors(`p${s}`, { kind: "flow", range: { min: 0, max: 200 } }));
    data.push(series(perSignalReadings, 1000 + s));
  }
  let findings = 0;
  const emit = (_f: Finding): void => {
    findings++;
  };
  const r: Reading = { point: "", value: 0, ts: 0, source: "bench", quality: "good" };
  // Point ids exist before the readings do (as in the daemon): no string building in the loop.
  const ids = sets.map((_, s) => `p${s}`);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < perSignalReadings; i++) {
    r.ts = 1_700_000_000_000 + i * 60_000;
    for (let s = 0; s < signals; s++) {
      r.point = ids[s]!;
      r.value = data[s]![i]!;
      for (const d of sets[s]!) d.observe(r, emit);
    }
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  return { rate: (signals * perSignalReadings) / secs, findings };
}

function stateBytes(): number {
  const ds = createSignalDetectors("p0", { kind: "flow", range: { min: 0, max: 200 } });
  const data = series(20_000, 7);
  const emit = (): void => {};
  data.forEach((v, i) => {
    const r: Reading = { point: "p0", value: v, ts: 1_700_000_000_000 + i * 60_000, source: "bench", quality: "good" };
    for (const d of ds) d.observe(r, emit);
  });
  return ds.reduce((sum, d) => sum + Buffer.byteLength(JSON.stringify(d.snapshot())), 0);
}

function engineRate(rows: number): number {
  const site = parseSite(readFileSync(new URL("../detectors/sites/ctown.yaml", import.meta.url), "utf8"), "detectors/sites/ctown.yaml");
  const names = new Set<string>();
  for (const t of Object.values(site.tanks)) [t.level, ...t.inflows, ...t.outflows, ...t.controls.map((c) => c.actuator)].forEach((p) => names.add(p));
  for (const r of site.relations) [r.target, ...r.states, ...(r.regressor ? [r.regressor] : [])].forEach((p) => names.add(p));
  const ids = [...names];
  const points = Object.fromEntries(ids.map((id) => [id, { kind: id.startsWith("S_") ? ("state" as const) : id.startsWith("L_") ? ("level" as const) : id.startsWith("P_") ? ("pressure" as const) : ("flow" as const) }]));
  const engine = new DetectionEngine({ points, site, sink: { record: () => {} } });
  const rnd = prng(42);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < rows; i++) {
    const ts = 1_700_000_000_000 + i * 3_600_000;
    for (const id of ids) {
      const v = id.startsWith("S_") ? (rnd() < 0.5 ? 1 : 0) : 2 + rnd();
      engine.reading({ point: id, value: v, ts, source: "bench", quality: "good" });
    }
    engine.flush();
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  return (rows * ids.length) / secs;
}

/** Timed rounds of the per-signal loop (fresh detectors and data each): the median is reported. */
const ROUNDS = 5;

export async function benchDetectors(): Promise<Record<string, number | string>> {
  perSignal(4, 20_000); // warm the JIT
  // One round is at the mercy of a noisy host for its whole second; the median of several is
  // the figure, and the slowest and fastest show the spread.
  const rates: number[] = [];
  for (let k = 0; k < ROUNDS; k++) rates.push(perSignal(16, 100_000).rate);
  rates.sort((x, y) => x - y);
  return {
    "detectors.per_signal_readings_per_s": Math.round(rates[ROUNDS >> 1]!),
    "detectors.per_signal_readings_per_s_min": Math.round(rates[0]!),
    "detectors.per_signal_readings_per_s_max": Math.round(rates[ROUNDS - 1]!),
    "detectors.per_signal_rounds": ROUNDS,
    "detectors.per_signal_set": "range, rate_of_change, stuck, level_shift, ewma_cusum, seasonal, replay, novelty",
    "detectors.state_bytes_per_signal": stateBytes(),
    "detectors.engine_readings_per_s_ctown": Math.round(engineRate(5_000)),
  };
}
