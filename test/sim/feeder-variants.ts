/**
 * The feeder simulator's runs as other feeders and other gateways would record them: a check that
 * detection does not depend on how this simulator happens to write its data. Each variant changes
 * one thing an unseen feeder may do differently; the attacks and the labels stay as simulated.
 *
 * - `learn-3d`: three days of learning history instead of seven (a gateway installed this week).
 * - `whole-kwh`: sub-meters that count whole kWh, a main meter in 0.1 kWh, voltages in whole volts,
 *   with the site file that says so (`feeder-site-whole-kwh.yaml`).
 * - `sampled-power`: power and currents read as instantaneous samples of a load that varies within
 *   the minute (about 3 % noise, now and then ±2 kW), while the counters count the true energy.
 * - `every-5-min`: one reading every five minutes, learning history included.
 * - `missed-polls`: 0.5 % of the live readings never arrive, and one two-hour stretch is missing.
 * - `jittered`: each reading stamped 0-19 s late.
 * - `wrapping-registers`: the counters show five digits before the decimals and wrap to 0 at
 *   100,000 kWh once in the live part (those never exchanged or set back in the run; the site
 *   file does not say so).
 */
import { fileURLToPath } from "node:url";
import { prng } from "../helpers/prng";
import { simulateFeeder, type FeederColumn, type FeederOptions, type FeederRun } from "./feeder";
import { FEEDER_SITE } from "./run-feeder";

export const FEEDER_VARIANTS = ["learn-3d", "whole-kwh", "sampled-power", "every-5-min", "missed-polls", "jittered", "wrapping-registers"] as const;
export type FeederVariant = (typeof FEEDER_VARIANTS)[number];

/** The site file an engineer writes for the feeder with whole-kWh sub-meters. */
export const WHOLE_KWH_SITE = fileURLToPath(new URL("./feeder-site-whole-kwh.yaml", import.meta.url));

const SUBS = ["HOUSES_kWh", "SHOP_kWh", "LAMPS_kWh", "EV_kWh"] as const;

/** The run with only the rows `keep` accepts (the learning history too when `learning`). */
function keepRows(run: FeederRun, keep: (i: number) => boolean, learning: boolean): FeederRun {
  const idx: number[] = [];
  for (let i = 0; i < run.ts.length; i++) if ((!learning && i < run.split) || keep(i)) idx.push(i);
  const values = {} as Record<FeederColumn, Float64Array>;
  for (const c of run.columns) values[c] = Float64Array.from(idx, (i) => run.values[c][i]!);
  const at = (row: number): number => {
    const k = idx.findIndex((i) => i >= row);
    return k < 0 ? idx.length - 1 : k;
  };
  return {
    ...run, values, ts: idx.map((i) => run.ts[i]!), label: Uint8Array.from(idx, (i) => run.label[i]!), split: at(run.split),
    attacks: run.attacks.map((a) => ({ ...a, from: at(a.from), to: Math.max(at(a.from), at(a.to + 1) - 1) })),
  };
}

const map = (v: Float64Array, f: (x: number) => number): Float64Array => v.map((x) => (Number.isNaN(x) ? x : f(x)));

/** One seed of the feeder as `variant` records it, with the site file for it. */
export function simulateVariant(seed: number, variant: FeederVariant, o: FeederOptions = {}): { run: FeederRun; site: string } {
  const learnDays = variant === "learn-3d" ? 3 : (o.learnDays ?? 7);
  const run = simulateFeeder(seed, { days: learnDays + 21, ...o, learnDays });
  const rnd = prng(seed * 7 + 1);
  switch (variant) {
    case "learn-3d":
      return { run, site: FEEDER_SITE };
    case "whole-kwh": {
      for (const s of SUBS) run.values[s] = map(run.values[s], Math.floor);
      run.values.E_MAIN = map(run.values.E_MAIN, (x) => Math.floor(x * 10 + 1e-9) / 10);
      for (const c of ["V_L1", "V_L2", "V_L3"] as const) run.values[c] = map(run.values[c], Math.round);
      return { run, site: WHOLE_KWH_SITE };
    }
    case "sampled-power": {
      for (let i = 0; i < run.ts.length; i++) {
        const p = run.values.P_MAIN[i]!;
        const f = 1 + 0.06 * (rnd() + rnd() + rnd() - 1.5) + (rnd() < 0.05 ? ((rnd() - 0.5) * 4) / Math.max(p, 1) : 0);
        run.values.P_MAIN[i] = Math.round(p * f * 100) / 100;
        for (const c of ["I_L1", "I_L2", "I_L3"] as const) run.values[c][i] = Math.round(run.values[c][i]! * f * 100) / 100;
      }
      return { run, site: FEEDER_SITE };
    }
    case "every-5-min":
      return { run: keepRows(run, (i) => i % 5 === 0, true), site: FEEDER_SITE };
    case "missed-polls": {
      const gapAt = run.split + Math.floor(rnd() * (run.ts.length - run.split - 200));
      return { run: keepRows(run, (i) => rnd() > 0.005 && (i < gapAt || i >= gapAt + 120), false), site: FEEDER_SITE };
    }
    case "jittered":
      run.ts = run.ts.map((t, i) => (i === 0 ? t : t + Math.floor(rnd() * 20) * 1000));
      return { run, site: FEEDER_SITE };
    case "wrapping-registers": {
      const WRAP = 100_000;
      for (const c of ["E_MAIN", ...SUBS] as const) {
        const v = run.values[c];
        // A register that was exchanged or set back in this run keeps its readings (its new
        // meter starts near 0 anyway).
        let last = Number.NEGATIVE_INFINITY;
        let monotone = true;
        for (const x of v) {
          if (Number.isNaN(x)) continue;
          if (x < last) monotone = false;
          last = x;
        }
        const at = run.split + Math.floor(rnd() * (run.ts.length - run.split));
        let k = at;
        while (k < v.length && Number.isNaN(v[k]!)) k++;
        if (!monotone || k >= v.length) continue;
        const steps = c === "E_MAIN" ? 100 : 10; // per kWh: 0.01 and 0.1 kWh registers
        const offset = WRAP - v[k]!;
        run.values[c] = map(v, (x) => Math.floor(((x + offset) % WRAP) * steps + 1e-6) / steps);
      }
      return { run, site: FEEDER_SITE };
    }
  }
}
