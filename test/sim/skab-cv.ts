/**
 * SKAB figures with the project's split, and the cross-validation that chooses between candidate
 * options (of the group check, or the engine's) using the dev runs only. `DIR` is the SKAB folder (`valve1/`,
 * `anomaly-free/`). Bundle as test/sim/report.ts says, then:
 *   node .skab-cv.mjs DIR cv            every candidate on the dev runs, and leave-one-run-out within them
 *   node .skab-cv.mjs DIR dev [NAME]    the defaults (or candidate NAME) on the dev runs, with the false alarm
 *                                       segments over all rows (the scorer's warm-up included); -v: each alarm segment
 *   node .skab-cv.mjs DIR heldout       the defaults on the held-out runs (reported, never chosen on)
 *   node .skab-cv.mjs DIR weak [S ...]  every candidate on the dev runs with each fault weakened to S of
 *                                       its effect (default 1 0.5 0.35 0.25; test/sim/skab-weaken.ts),
 *                                       with how many readings into each fault the first alarm came
 * Scoring is the team scorer's: the first 400 rows of each run are not scored (warm-up), event
 * F1 and TNR micro-averaged over runs.
 */
import { join } from "node:path";
import { readCsv, type CsvTable } from "../../detectors/csv";
import type { EngineOptionsInput } from "../../detectors/engine-options";
import type { GroupShiftOptions } from "../../detectors/group-shift";
import { runDetectTables } from "../../detectors/run";
import { addScores, eventScore, figures, type EventScore } from "./score";
import { weakenFault } from "./skab-weaken";

/** The split: constants may be chosen on the dev runs; the held-out runs are only reported. */
export const SKAB_DEV_RUNS = ["0", "1", "10", "11", "12", "13", "14", "15"];
export const SKAB_HELDOUT_RUNS = ["2", "3", "4", "5", "6", "7", "8", "9"];
const WARMUP = 400;
const LABELS = ["anomaly", "changepoint"];

/** Options of one candidate: the group check's and the engine's. */
export interface Candidate { group?: GroupShiftOptions; engine?: EngineOptionsInput }

/** Candidates compared by the cross-validation (the first: the defaults). */
export const CANDIDATES: Record<string, Candidate> = {
  defaults: {},
  "floor 9": { group: { long_min_threshold: 9 } },
  "floor 8": { group: { long_min_threshold: 8 } },
  "floor 7": { group: { long_min_threshold: 7 } },
  "floor 6": { group: { long_min_threshold: 6 } },
  "floor 5": { group: { long_min_threshold: 5 } },
  "span 96": { group: { long_window: 96 } },
  "span 96, floor 8": { group: { long_window: 96, long_min_threshold: 8 } },
  "span 144": { group: { long_window: 144 } },
  "span 144, floor 8": { group: { long_window: 144, long_min_threshold: 8 } },
};

function withoutLabels(t: CsvTable): { table: CsvTable; label: Float64Array } {
  const li = t.columns.indexOf("anomaly");
  const keep = t.columns.map((c, i) => [c, i] as const).filter(([c]) => !LABELS.includes(c));
  return {
    table: { ...t, columns: keep.map(([c]) => c), values: keep.map(([, i]) => t.values[i]!) },
    label: li >= 0 ? t.values[li]! : new Float64Array(t.ts.length),
  };
}

interface RunResult {
  score: EventScore;
  segments: string[];
  /** Readings into the fault of its first alarm (-1: missed). */
  first: number;
  /**
   * Alarm segments off the fault over all rows, the unscored warm-up included: false alarms there
   * are as real to an operator, and they can hide later ones by spending a signal's budget.
   */
  falseAll: number;
}

export function detectSkabRun(dir: string, run: string, learn: CsvTable, c: Candidate, scale = 1): RunResult {
  const read = withoutLabels(readCsv(join(dir, "valve1", `${run}.csv`)));
  const label = read.label;
  const table = weakenFault(read.table, label, scale);
  const index = new Map(table.tsText.map((t, i) => [t, i]));
  const flags: (string | null)[] = new Array<string | null>(table.ts.length).fill(null);
  runDetectTables({ input: table, learn, group: c.group ?? {}, engine: c.engine ?? {} }, (l) => {
    const j = JSON.parse(l) as { ts: string; signal: string; detector: string; reason: string };
    const i = index.get(j.ts);
    if (i !== undefined && flags[i] === null) flags[i] = `${j.signal}:${j.detector}: ${j.reason}`;
  });
  const score = eventScore(label, flags.map((f) => f !== null), WARMUP);
  const segments: string[] = [];
  for (let i = WARMUP; i < flags.length; i++) {
    if (flags[i] === null || (i > WARMUP && flags[i - 1] !== null)) continue;
    let j = i;
    while (j + 1 < flags.length && flags[j + 1] !== null) j++;
    let onEvent = false;
    for (let k = i; k <= j; k++) if (label[k]! > 0) onEvent = true;
    segments.push(`rows ${i}-${j} ${onEvent ? "on the fault" : "FALSE"}: ${flags[i]!.slice(0, 160)}`);
  }
  let falseAll = 0;
  for (let i = 0; i < flags.length; i++) {
    if (flags[i] === null || (i > 0 && flags[i - 1] !== null)) continue;
    let j = i;
    let onEvent = false;
    for (; j < flags.length && flags[j] !== null; j++) if (label[j]! > 0) onEvent = true;
    if (!onEvent) falseAll++;
  }
  const start = Array.prototype.findIndex.call(label, (x: number) => x > 0);
  let first = -1;
  for (let k = start; start >= 0 && k < label.length && label[k]! > 0; k++) {
    if (flags[k] === null) continue;
    first = k - start;
    break;
  }
  return { score, segments, first, falseAll };
}

function line(s: EventScore): string {
  const f = figures(s);
  return `event F1 ${f.f1.toFixed(3)} (P ${f.precision.toFixed(3)} R ${f.recall.toFixed(3)}, ${s.detected}/${s.events}) TNR ${f.tnr.toFixed(3)}`;
}

function total(scores: EventScore[]): EventScore {
  return scores.reduce((a, b) => addScores(a, b));
}

/**
 * The choice's criterion: event F1 with each false alarm segment counted once and all the
 * segments on one fault as one (the scorer's event precision counts every segment on a fault as
 * correct, so an alarm split in two scores higher than one), then TNR.
 */
function choiceF1(s: EventScore): number {
  const falseSegments = s.segments - s.segmentsOnEvents;
  const p = s.detected + falseSegments > 0 ? s.detected / (s.detected + falseSegments) : 0;
  const r = s.events ? s.detected / s.events : 0;
  return p + r > 0 ? (2 * p * r) / (p + r) : 0;
}

function better(a: EventScore, b: EventScore): boolean {
  const fa = choiceF1(a);
  const fb = choiceF1(b);
  return fa > fb + 1e-12 || (Math.abs(fa - fb) <= 1e-12 && figures(a).tnr > figures(b).tnr);
}

function main(): void {
  const dir = process.argv[2];
  const mode = process.argv[3] ?? "cv";
  if (!dir) throw new Error("usage: skab-cv DIR cv|dev|heldout|weak [-v]");
  const learn = readCsv(join(dir, "anomaly-free", "anomaly-free.csv"));
  const verbose = process.argv.includes("-v");
  if (mode === "weak") {
    const scales = process.argv.slice(4).map(Number).filter((x) => x > 0);
    for (const scale of scales.length ? scales : [1, 0.5, 0.35, 0.25]) {
      for (const [name, c] of Object.entries(CANDIDATES)) {
        const results = SKAB_DEV_RUNS.map((r) => detectSkabRun(dir, r, learn, c, scale));
        const firsts = results.map((x, k) => `${SKAB_DEV_RUNS[k]}:${x.first < 0 ? "-" : `+${x.first}`}`).join(" ");
        console.log(`scale ${scale} ${name.padEnd(20)} ${line(total(results.map((x) => x.score)))}; first alarm ${firsts}`);
        if (verbose && name === "defaults") results.forEach((x, k) => console.log(`  run ${SKAB_DEV_RUNS[k]}: ${line(x.score)}\n    ${x.segments.join("\n    ")}`));
      }
    }
    return;
  }
  if (mode !== "cv") {
    const runs = mode === "heldout" ? SKAB_HELDOUT_RUNS : SKAB_DEV_RUNS;
    const name = process.argv[4] && process.argv[4] !== "-v" ? process.argv[4] : "defaults";
    const results = runs.map((r) => detectSkabRun(dir, r, learn, CANDIDATES[name] ?? {}));
    if (verbose) results.forEach((x, k) => console.log(`run ${runs[k]}: ${line(x.score)}\n  ${x.segments.join("\n  ")}`));
    console.log(`SKAB ${mode} (${runs.length} runs): ${line(total(results.map((x) => x.score)))}; false alarm segments over all rows (warm-up included): ${results.reduce((n, x) => n + x.falseAll, 0)}`);
    return;
  }
  const names = Object.keys(CANDIDATES);
  const per = new Map<string, EventScore[]>();
  for (const name of names) {
    const scores = SKAB_DEV_RUNS.map((r) => detectSkabRun(dir, r, learn, CANDIDATES[name]!).score);
    per.set(name, scores);
    console.log(`${name.padEnd(20)} dev ${line(total(scores))}, choice F1 ${choiceF1(total(scores)).toFixed(3)}; per run: ${scores.map((s) => figures(s).f1.toFixed(2)).join(" ")}`);
  }
  // Leave one run out: choose the candidate best on the other dev runs, score it on the one left out.
  const chosen: string[] = [];
  const cv: EventScore[] = [];
  SKAB_DEV_RUNS.forEach((_, k) => {
    let best = names[0]!;
    let bestScore: EventScore | null = null;
    for (const name of names) {
      const s = total(per.get(name)!.filter((_, i) => i !== k));
      if (bestScore === null || better(s, bestScore)) {
        best = name;
        bestScore = s;
      }
    }
    chosen.push(best);
    cv.push(per.get(best)![k]!);
  });
  console.log(`leave-one-run-out on the dev runs: ${line(total(cv))}; chosen per fold: ${chosen.join(", ")}`);
}

main();
