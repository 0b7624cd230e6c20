/**
 * SKAB figures with the project's split, and the cross-validation that chooses between candidate
 * options of the group check using the dev runs only. `DIR` is the SKAB folder (`valve1/`,
 * `anomaly-free/`). Bundle as test/sim/report.ts says, then:
 *   node .skab-cv.mjs DIR cv        every candidate on the dev runs, and leave-one-run-out within them
 *   node .skab-cv.mjs DIR dev [CANDIDATE] [-v]   the defaults (or a candidate) on the dev runs, -v: each alarm segment
 *   node .skab-cv.mjs DIR heldout   the defaults on the held-out runs (reported, never chosen on)
 * Scoring is the team scorer's: the first 400 rows of each run are not scored (warm-up), event
 * F1 and TNR micro-averaged over runs.
 */
import { join } from "node:path";
import { readCsv, type CsvTable } from "../../detectors/csv";
import type { GroupShiftOptions } from "../../detectors/group-shift";
import { runDetectTables } from "../../detectors/run";
import { addScores, eventScore, figures, type EventScore } from "./score";

/** The split: constants may be chosen on the dev runs; the held-out runs are only reported. */
export const SKAB_DEV_RUNS = ["0", "1", "10", "11", "12", "13", "14", "15"];
export const SKAB_HELDOUT_RUNS = ["2", "3", "4", "5", "6", "7", "8", "9"];
const WARMUP = 400;
const LABELS = ["anomaly", "changepoint"];

/** Candidate options of the group check compared by the cross-validation (the first: the defaults). */
export const CANDIDATES: Record<string, GroupShiftOptions> = {
  defaults: {},
  "floor 9": { long_min_threshold: 9 },
  "floor 8": { long_min_threshold: 8 },
  "floor 7": { long_min_threshold: 7 },
  "floor 6": { long_min_threshold: 6 },
  "floor 5": { long_min_threshold: 5 },
};

function withoutLabels(t: CsvTable): { table: CsvTable; label: Float64Array } {
  const li = t.columns.indexOf("anomaly");
  const keep = t.columns.map((c, i) => [c, i] as const).filter(([c]) => !LABELS.includes(c));
  return {
    table: { ...t, columns: keep.map(([c]) => c), values: keep.map(([, i]) => t.values[i]!) },
    label: li >= 0 ? t.values[li]! : new Float64Array(t.ts.length),
  };
}

interface RunResult { score: EventScore; segments: string[] }

export function detectSkabRun(dir: string, run: string, learn: CsvTable, group: GroupShiftOptions): RunResult {
  const { table, label } = withoutLabels(readCsv(join(dir, "valve1", `${run}.csv`)));
  const index = new Map(table.tsText.map((t, i) => [t, i]));
  const flags: (string | null)[] = new Array<string | null>(table.ts.length).fill(null);
  runDetectTables({ input: table, learn, group }, (l) => {
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
  return { score, segments };
}

function line(s: EventScore): string {
  const f = figures(s);
  return `event F1 ${f.f1.toFixed(3)} (P ${f.precision.toFixed(3)} R ${f.recall.toFixed(3)}, ${s.detected}/${s.events}) TNR ${f.tnr.toFixed(3)}`;
}

function total(scores: EventScore[]): EventScore {
  return scores.reduce((a, b) => addScores(a, b));
}

/** Better by event F1, then by TNR. */
function better(a: EventScore, b: EventScore): boolean {
  const fa = figures(a);
  const fb = figures(b);
  return fa.f1 > fb.f1 + 1e-12 || (Math.abs(fa.f1 - fb.f1) <= 1e-12 && fa.tnr > fb.tnr);
}

function main(): void {
  const dir = process.argv[2];
  const mode = process.argv[3] ?? "cv";
  if (!dir) throw new Error("usage: skab-cv DIR cv|dev|heldout [-v]");
  const learn = readCsv(join(dir, "anomaly-free", "anomaly-free.csv"));
  if (mode !== "cv") {
    const runs = mode === "heldout" ? SKAB_HELDOUT_RUNS : SKAB_DEV_RUNS;
    const name = process.argv[4] && process.argv[4] !== "-v" ? process.argv[4] : "defaults";
    const results = runs.map((r) => detectSkabRun(dir, r, learn, CANDIDATES[name] ?? {}));
    if (process.argv.includes("-v")) results.forEach((x, k) => console.log(`run ${runs[k]}: ${line(x.score)}\n  ${x.segments.join("\n  ")}`));
    console.log(`SKAB ${mode} (${runs.length} runs): ${line(total(results.map((x) => x.score)))}`);
    return;
  }
  const names = Object.keys(CANDIDATES);
  const per = new Map<string, EventScore[]>();
  for (const name of names) {
    const scores = SKAB_DEV_RUNS.map((r) => detectSkabRun(dir, r, learn, CANDIDATES[name]!).score);
    per.set(name, scores);
    console.log(`${name.padEnd(24)} dev ${line(total(scores))}  per run F1: ${scores.map((s) => figures(s).f1.toFixed(2)).join(" ")}`);
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
