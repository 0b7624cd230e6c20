/**
 * Prints the feeder figures: `dev`, `heldout` or `both` seeds, `--no-site` to run without the site
 * file, `--variant NAME` for the feeder as another feeder or gateway records it
 * (test/sim/feeder-variants.ts), `-v` for each attack and false alarm, `--write DIR` to also write each run's CSVs (live
 * part and learning history) for `gatewarden detect`. Bundle and run with esbuild, e.g.
 * `npx esbuild test/sim/report.ts --bundle --platform=node --format=esm --outfile=test/sim/.report.mjs`
 * (with a `createRequire` banner) and `node test/sim/.report.mjs heldout`.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DEV_SEEDS, feederCsv, HELDOUT_SEEDS, simulateFeeder } from "./feeder";
import { FEEDER_VARIANTS, simulateVariant, type FeederVariant } from "./feeder-variants";
import { detectFeeder, FEEDER_SITE } from "./run-feeder";
import { addScores, figures, type EventScore } from "./score";

const which = process.argv[2] ?? "dev";
const seeds = which === "heldout" ? HELDOUT_SEEDS : which === "both" ? [...DEV_SEEDS, ...HELDOUT_SEEDS] : DEV_SEEDS;
const noSite = process.argv.includes("--no-site");
const verbose = process.argv.includes("-v");
const w = process.argv.indexOf("--write");
const outDir = w > 0 ? process.argv[w + 1] : undefined;
const vi = process.argv.indexOf("--variant");
const variant = vi > 0 ? (process.argv[vi + 1] as FeederVariant) : undefined;
if (variant !== undefined && !FEEDER_VARIANTS.includes(variant)) throw new Error(`--variant: one of ${FEEDER_VARIANTS.join(", ")}`);
let total: EventScore | null = null;
for (const seed of seeds) {
  const sim = variant ? simulateVariant(seed, variant) : { run: simulateFeeder(seed), site: FEEDER_SITE };
  const run = sim.run;
  if (outDir) {
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, `feeder-${seed}-learn.csv`), feederCsv(run, 0, run.split));
    writeFileSync(join(outDir, `feeder-${seed}.csv`), feederCsv(run, run.split, run.ts.length));
  }
  const r = detectFeeder(run, { site: noSite ? undefined : sim.site });
  total = total ? addScores(total, r.score) : r.score;
  const f = figures(r.score);
  console.log(`seed ${seed}: F1 ${f.f1.toFixed(3)} P ${f.precision.toFixed(3)} R ${f.recall.toFixed(3)} TNR ${f.tnr.toFixed(4)} (${r.score.detected}/${r.score.events} events, ${r.score.segments} segments)`);
  if (verbose) {
    for (const a of run.attacks) {
      const rows = r.flags.slice(a.from - run.split, a.to - run.split + 1);
      const first = rows.findIndex((x) => x !== null);
      console.log(`  attack ${a.kind} ${a.what} rows ${a.from - run.split}-${a.to - run.split}: ${first < 0 ? "MISSED" : `found after ${first} readings by ${rows[first]}`}`);
    }
    const fp = new Map<string, number>();
    let seg = 0;
    r.flags.forEach((x, i) => {
      if (x === null || run.label[i + run.split]) return;
      fp.set(x, (fp.get(x) ?? 0) + 1);
      if (i === 0 || r.flags[i - 1] === null) {
        seg++;
        const near = run.attacks.find((a) => i + run.split > a.to && i + run.split - a.to < 720);
        if (seg <= 40) console.log(`  FP at row ${i}${near ? ` (${i + run.split - near.to} after ${near.kind})` : ""}: ${x}: ${r.lines.find((l) => l.ts === new Date(run.ts[i + run.split]!).toISOString().slice(0, 19).replace("T", " "))?.reason ?? ""}`);
      }
    });
    console.log("  false-alarm rows by signal:detector", JSON.stringify([...fp].sort((a, b) => b[1] - a[1]).slice(0, 12)));
    console.log("  events: " + run.events.join("; "));
  }
}
const f = figures(total!);
console.log(`${which}${variant ? ` ${variant}` : ""}${noSite ? " without site" : ""}: event F1 ${f.f1.toFixed(3)} (P ${f.precision.toFixed(3)} R ${f.recall.toFixed(3)}) TNR ${f.tnr.toFixed(4)} ${total!.detected}/${total!.events} events`);
