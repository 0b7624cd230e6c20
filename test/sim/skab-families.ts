/**
 * A dev-only check of fault families the SKAB valve1 runs do not have, on the anomaly-free file
 * (the rig at its own operating point): its first 4,700 rows are the learning history, the rest
 * four runs of 1,150 rows, and each family is put into rows 500-799 of each run. Families, after
 * the SKAB experiments other than valve1 (rotor imbalance, water heating, cavitation, draining),
 * each sized in units of the affected signals' standard deviation over the learning rows:
 *   imbalance-step  both accelerometers step up by M sd
 *   imbalance-ramp  both accelerometers rise linearly to +M sd
 *   current-step    the motor current steps up by M sd
 *   drain           flow and pressure step down by M sd
 *   heating         the water temperature rises linearly to +M sd
 *   cavitation      flow and pressure gain extra noise of M sd
 * Scored as the team scorer does (the first 400 rows of a run unscored, event F1 and TNR over the
 * runs). The sizes are this check's own choice, not measured faults: it says which kinds of
 * change the detectors see at which size, not how a real fault would score.
 *   node .skab-families.mjs DIR [M ...]     (default M = 3 2 1; bundle as test/sim/report.ts says)
 */
import { join } from "node:path";
import { readCsv, type CsvTable } from "../../detectors/csv";
import { runDetectTables } from "../../detectors/run";
import { addScores, eventScore, figures, type EventScore } from "./score";

const LEARN = 4700;
const RUN = 1150;
const RUNS = 4;
const FAULT: [number, number] = [500, 800];
const WARMUP = 400;

function rows(t: CsvTable, a: number, b: number): CsvTable {
  return { ...t, ts: t.ts.slice(a, b), tsText: t.tsText.slice(a, b), values: t.values.map((v) => Float64Array.from(v.subarray(a, b))) };
}

function sd(v: Float64Array): number {
  const m = v.reduce((a, b) => a + b, 0) / v.length;
  return Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length);
}

/** A fixed-seed normal generator (the cavitation noise), the same for every run of the check. */
function normals(seed: number): () => number {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 2 ** 32;
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

type Shape = (j: number, len: number, noise: () => number) => number;
const step: Shape = () => 1;
const ramp: Shape = (j, len) => j / len;
const noisy: Shape = (_j, _len, noise) => noise();

const FAMILIES: Record<string, [string[], Shape, number]> = {
  "imbalance-step": [["Accelerometer1RMS", "Accelerometer2RMS"], step, 1],
  "imbalance-ramp": [["Accelerometer1RMS", "Accelerometer2RMS"], ramp, 1],
  "current-step": [["Current"], step, 1],
  drain: [["Volume Flow RateRMS", "Pressure"], step, -1],
  heating: [["Temperature"], ramp, 1],
  cavitation: [["Volume Flow RateRMS", "Pressure"], noisy, 1],
};

function main(): void {
  const dir = process.argv[2];
  if (!dir) throw new Error("usage: node .skab-families.mjs DIR [M ...]");
  const all = readCsv(join(dir, "anomaly-free", "anomaly-free.csv"));
  const learn = rows(all, 0, LEARN);
  const sizes = process.argv.slice(3).map(Number).filter((x) => x > 0);
  for (const M of sizes.length ? sizes : [3, 2, 1]) {
    let total: EventScore | undefined;
    const lines: string[] = [];
    for (const [name, [signals, shape, sign]] of Object.entries(FAMILIES)) {
      const runs: string[] = [];
      for (let r = 0; r < RUNS; r++) {
        const t = rows(all, LEARN + r * RUN, LEARN + (r + 1) * RUN);
        const noise = normals(1000 + r);
        const label = new Float64Array(t.ts.length);
        const [a, b] = FAULT;
        for (const s of signals) {
          const i = t.columns.indexOf(s);
          const unit = sd(learn.values[i]!);
          for (let j = a; j < b; j++) t.values[i]![j]! += sign * M * unit * shape(j - a, b - a, noise);
        }
        for (let j = a; j < b; j++) label[j] = 1;
        const index = new Map(t.tsText.map((x, i) => [x, i]));
        const flags: (string | null)[] = new Array<string | null>(t.ts.length).fill(null);
        runDetectTables({ input: t, learn, group: {}, engine: {} }, (l) => {
          const e = JSON.parse(l) as { ts: string; signal: string; detector: string };
          const i = index.get(e.ts);
          if (i !== undefined && flags[i] === null) flags[i] = `${e.signal} ${e.detector}`;
        });
        const s = eventScore(label, flags.map((f) => f !== null), WARMUP);
        total = total ? addScores(total, s) : s;
        const first = flags.slice(a, b).findIndex((f) => f !== null);
        runs.push(first < 0 ? "missed" : `${first} (${flags[a + first]})`);
      }
      lines.push(`  ${name}: ${runs.join("; ")}`);
    }
    const f = figures(total!);
    console.log(`M = ${M} sd: event F1 ${f.f1.toFixed(3)} (${total!.detected}/${total!.events}), TNR ${f.tnr.toFixed(3)}; readings into each fault of its first alarm:`);
    for (const l of lines) console.log(l);
  }
}

main();
