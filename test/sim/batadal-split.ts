/**
 * The project's BATADAL split: `dataset04_labelled.csv` cut at data row 2088 (2016-09-29 00:00),
 * attacks 1-2 in the dev half, 3-7 in the held-out half. Writes each half in the team scorer's
 * data layout, beside the normal year as its learning history:
 *   node .batadal-split.mjs DATASETS OUT    (DATASETS holds `batadal/`; bundle as test/sim/report.ts says)
 *   tsad-score.py cmd --dataset batadal-dev --data OUT/dev -- node dist/gatewarden.cjs detect \
 *     --input {input} --learn {learn} --site detectors/sites/ctown.yaml
 * and the same with `--data OUT/heldout` (reported, never chosen on); without `--site` for the
 * rows without a site file.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const BATADAL_SPLIT_ROW = 2088;
const BATADAL_SPLIT_TS = "2016-09-29 00:00:00";

function main(): void {
  const [src, out] = process.argv.slice(2);
  if (!src || !out) throw new Error("usage: batadal-split DATASETS OUT");
  const lines = readFileSync(join(src, "batadal", "dataset04_labelled.csv"), "utf8").split("\n").filter((l) => l.trim() !== "");
  const [header, ...rows] = lines;
  if (header === undefined || !rows[BATADAL_SPLIT_ROW]?.startsWith(BATADAL_SPLIT_TS)) {
    throw new Error(`dataset04_labelled.csv: data row ${BATADAL_SPLIT_ROW} is not ${BATADAL_SPLIT_TS}`);
  }
  const halves: [string, string[]][] = [["dev", rows.slice(0, BATADAL_SPLIT_ROW)], ["heldout", rows.slice(BATADAL_SPLIT_ROW)]];
  for (const [name, part] of halves) {
    const dir = join(out, name, "batadal");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "dataset04_labelled.csv"), [header, ...part, ""].join("\n"));
    copyFileSync(join(src, "batadal", "dataset03_normal.csv"), join(dir, "dataset03_normal.csv"));
    console.log(`${name}: ${part.length} rows, ${part[0]!.slice(0, 19)} to ${part.at(-1)!.slice(0, 19)}`);
  }
}

main();
