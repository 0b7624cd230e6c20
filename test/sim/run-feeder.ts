/** Runs `detect` (as the CLI does) on a simulated feeder and scores it. */
import { fileURLToPath } from "node:url";
import { runDetectTables } from "../../detectors/run";
import type { CsvTable } from "../../detectors/csv";
import type { EngineOptionsInput } from "../../detectors/engine-options";
import type { FeederRun } from "./feeder";
import { eventScore, type EventScore } from "./score";

/** The site file an engineer would write for the simulated feeder. */
export const FEEDER_SITE = fileURLToPath(new URL("./feeder-site.yaml", import.meta.url));

function table(run: FeederRun, from: number, to: number, file: string): CsvTable {
  const ts = run.ts.slice(from, to);
  return {
    file, columns: [...run.columns], ts,
    tsText: ts.map((t) => new Date(t).toISOString().slice(0, 19).replace("T", " ")),
    values: run.columns.map((c) => run.values[c].slice(from, to)),
  };
}

export interface FeederResult {
  score: EventScore;
  /** Per input row (live part): the first open incident's signal and detector, or null. */
  flags: (string | null)[];
  lines: { ts: string; signal: string; detector: string; reason: string }[];
}

export function detectFeeder(run: FeederRun, o: { site?: string | undefined; maintenance?: string | undefined; engine?: EngineOptionsInput } = {}): FeederResult {
  const input = table(run, run.split, run.ts.length, `feeder-${run.seed}.csv`);
  const learn = table(run, 0, run.split, `feeder-${run.seed}-learn.csv`);
  const index = new Map(input.tsText.map((t, i) => [t, i]));
  const flags: (string | null)[] = new Array<string | null>(input.ts.length).fill(null);
  const lines: FeederResult["lines"] = [];
  runDetectTables({ input, learn, site: o.site, maintenance: o.maintenance, engine: o.engine }, (l) => {
    const j = JSON.parse(l) as { ts: string; signal: string; detector: string; reason: string };
    const i = index.get(j.ts);
    if (i !== undefined) flags[i] = `${j.signal}:${j.detector}`;
    lines.push(j);
  });
  return { score: eventScore(run.label.subarray(run.split), flags.map((f) => f !== null)), flags, lines };
}
