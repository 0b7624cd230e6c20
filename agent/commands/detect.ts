/** `gatewarden detect`: recorded readings (CSV) through the detectors, one JSON line per flagged row. */
import type { Command } from "commander";
import type { EngineOptionsInput } from "../../detectors/engine-options";
import { proposeSite, runDetect } from "../../detectors/run";
import { DaemonError } from "../core/errors";
import { decimal, wholeNumber } from "./_numbers";

export function registerDetect(program: Command): void {
  program
    .command("detect")
    .description("replay recorded readings (CSV) through the detectors; one JSON line per flagged row")
    .requiredOption("--input <file>", "CSV: header row, timestamp column, then one numeric column per signal")
    .option("--learn <file>", "CSV of normal history in the same layout, to fit baselines first (never reported)")
    .option("--site <file>", "site file (signals, tanks, pumps, meters, power); without it, what can be inferred is used")
    .option("--propose-site", "print the site file inferred from the CSV (for the engineer to correct) and exit")
    .option("--maintenance <file>", "maintenance windows (YAML list of { from, to, points, reason }): suppressed and re-baselined")
    .option("--close-after <n>", "quiet rows before an incident closes", (v) => wholeNumber(v, "--close-after", "quiet rows", 1, 10_000))
    .option("--budget-per-day <n>", "statistical incidents per signal per day before thresholds rise", (v) => decimal(v, "--budget-per-day", "incidents per signal per day", 0.01, 10_000))
    .option("--events", "also print incident open/update/close events")
    .action((opts: { input: string; learn?: string; site?: string; proposeSite?: boolean; maintenance?: string; closeAfter?: number; budgetPerDay?: number; events?: boolean }) => {
      if (opts.proposeSite) {
        const ignored = (["site", "maintenance", "closeAfter", "budgetPerDay", "events"] as const).filter((k) => opts[k] !== undefined);
        if (ignored.length) throw new DaemonError("USAGE", `--propose-site prints the site file inferred from --input (and --learn) and exits: it takes no ${ignored.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(", ")}`);
        process.stdout.write(proposeSite(opts));
        return;
      }
      const engine: EngineOptionsInput = {};
      if (opts.budgetPerDay !== undefined) engine.budget_per_day = opts.budgetPerDay;
      if (opts.closeAfter !== undefined) engine.close_after = opts.closeAfter;
      const lines: string[] = [];
      const flush = (): void => {
        if (lines.length) process.stdout.write(lines.join("\n") + "\n");
        lines.length = 0;
      };
      const s = runDetect({ input: opts.input, learn: opts.learn, site: opts.site, maintenance: opts.maintenance, engine, events: opts.events ?? false }, (l) => {
        lines.push(l);
        if (lines.length >= 512) flush();
      });
      flush();
      for (const w of s.warnings) process.stderr.write(`warning: ${w}\n`);
      const odd = [s.skipped_rows ? `${s.skipped_rows} unreadable rows skipped` : "", s.backwards_rows ? `time went backwards at ${s.backwards_rows} rows` : ""].filter(Boolean);
      process.stderr.write(`detect: ${s.rows} rows, ${s.flagged_rows} flagged, ${s.incidents} incidents (site: ${s.site})${odd.length ? `; ${odd.join(", ")}` : ""}\n`);
    });
}
