/**
 * Offline replay (`gatewarden detect --input FILE.csv [--learn NORMAL.csv] [--site SITE.yaml]`)
 * of recorded readings through the detection engine. `runDetect` gives one JSON object per flagged input
 * row: ts (as given), signal, detector, score, reason, and every open incident's signal.
 */
import { readFileSync } from "node:fs";
import { DaemonError } from "../agent/core/errors";
import { formatIssues } from "../agent/core/issues";
import type { EventDraft } from "../agent/core/events";
import { csvWarnings, readCsv, type CsvTable } from "./csv";
import { fmt } from "./detector";
import { DetectionEngine, energyPhysicsPoints } from "./engine";
import type { GroupShiftOptions } from "./group-shift";
import type { EngineOptionsInput } from "./engine-options";
import { inferSite, proposeSiteYaml } from "./infer";
import { MaintenanceSchedule, readMaintenanceFile } from "./maintenance";
import type { SignalSpec } from "./signal-detectors";
import { parseSite, unknownSiteNames, type SiteConfig } from "./site";

export interface DetectRunOptions {
  input: string;
  learn?: string | undefined;
  site?: string | undefined;
  /** File of maintenance windows (YAML list of `{ from, to, points, reason }`). */
  maintenance?: string | undefined;
  /** Extra engine options (hysteresis, budget). */
  engine?: EngineOptionsInput;
  /** Also print incident open/update/close events as `{"event": ...}` lines. */
  events?: boolean;
  /** Options of the multivariate group check (evaluation scripts; the CLI uses the defaults). */
  group?: GroupShiftOptions;
}

export interface DetectRunSummary {
  rows: number;
  /** Input rows left out as unreadable, and rows whose time went backwards (kept). */
  skipped_rows: number;
  backwards_rows: number;
  /** One line per skipped or backwards row (the first few of each file), for stderr. */
  warnings: string[];
  flagged_rows: number;
  incidents: number;
  site: string;
}

function feed(engine: DetectionEngine, t: CsvTable, row: number, learn: boolean): void {
  const ts = t.ts[row]!;
  for (let c = 0; c < t.columns.length; c++) {
    const v = t.values[c]![row]!;
    const r = { point: t.columns[c]!, value: v, ts, source: `csv:${t.file}`, quality: Number.isNaN(v) ? ("bad" as const) : ("good" as const) };
    if (learn) engine.learn(r);
    else engine.reading(r);
  }
  engine.flush();
}

/** Runs the offline detection; `out` receives each output line (without newline). */
export function runDetect(o: DetectRunOptions, out: (line: string) => void): DetectRunSummary {
  return runDetectTables({ ...o, input: readCsv(o.input), learn: o.learn ? readCsv(o.learn) : undefined }, out);
}

/** `runDetect` on tables already read (the feeder simulator's runs, for instance). */
export function runDetectTables(
  o: Omit<DetectRunOptions, "input" | "learn"> & { input: CsvTable; learn?: CsvTable | undefined },
  out: (line: string) => void,
): DetectRunSummary {
  const { input, learn } = o;
  if (learn) {
    const missing = input.columns.filter((c) => !learn.columns.includes(c));
    if (missing.length) throw new DaemonError("INPUT_INVALID", `${learn.file}: missing columns ${missing.join(", ")} of ${input.file}`);
  }
  let site: SiteConfig | undefined;
  let siteSource = "none";
  const inferred = inferSite(input, learn);
  if (o.site) {
    site = readSite(o.site, input);
    siteSource = o.site;
  } else if (inferred.relations.length + inferred.meters.length + inferred.power.length > 0) {
    site = inferred;
    siteSource = `inferred: ${inferred.relations.length} state/flow pairs, ${inferred.meters.length} meter trees, ${inferred.power.length} power relations (see --propose-site)`;
  }
  const events: EventDraft[] = [];
  const points = inferSignalsOf(inferred);
  // Without physics from a site file, the file's measured signals form one multivariate group,
  // but for those an inferred meter tree or power relation judges (as a site file's would).
  const physics = energyPhysicsPoints(site);
  const measured = Object.entries(points).filter(([id, p]) => p.kind !== "state" && p.kind !== "energy_counter" && !physics.has(id)).map(([id]) => id);
  const groups = o.site ? undefined : { [input.file.replace(/^.*[\\/]/, "")]: measured };
  const engine = new DetectionEngine({
    points, site, groups, groupOptions: o.group, options: o.engine ?? {},
    sink: { record: (d) => events.push(d) },
  });
  const schedule = o.maintenance ? new MaintenanceSchedule(readMaintenanceFile(o.maintenance), engine) : null;
  if (learn) for (let i = 0; i < learn.ts.length; i++) feed(engine, learn, i, true);
  events.length = 0;
  let flagged = 0;
  for (let i = 0; i < input.ts.length; i++) {
    schedule?.at(input.ts[i]!);
    feed(engine, input, i, false);
    if (o.events) for (const e of events) out(JSON.stringify({ event: e }));
    events.length = 0;
    const open = engine.openIncidents();
    const top = open[0];
    if (!top) continue;
    flagged++;
    out(JSON.stringify({
      ts: input.tsText[i], signal: top.point, detector: top.top.detector, score: Number(fmt(top.top.score)),
      severity: top.severity, reason: top.top.reason, incident: top.uid,
      signals: open.map((x) => `${x.point}:${x.top.detector}`),
    }));
  }
  return {
    rows: input.ts.length,
    skipped_rows: input.skipped?.count ?? 0,
    backwards_rows: input.backwards?.count ?? 0,
    warnings: [...(learn ? csvWarnings(learn) : []), ...csvWarnings(input)],
    flagged_rows: flagged,
    incidents: engine.stats().incidents,
    site: siteSource,
  };
}

/** The site file, every point it names a column of the input (a misspelt name would disable its check). */
function readSite(file: string, input: CsvTable): SiteConfig {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new DaemonError("INPUT_INVALID", `${file}: cannot read`, { cause: e });
  }
  const site = parseSite(text, file);
  const issues = unknownSiteNames(site, text, file, new Set(input.columns), `among the columns of ${input.file}`);
  if (issues.length) throw Object.assign(new DaemonError("SITE_INVALID", formatIssues(file, issues)), { issues });
  return site;
}

function inferSignalsOf(site: SiteConfig): Record<string, SignalSpec> {
  const out: Record<string, SignalSpec> = {};
  for (const [id, s] of Object.entries(site.signals)) out[id] = { kind: s.kind, range: s.range, resolution: s.resolution, intermittent: s.intermittent };
  return out;
}

/** `gatewarden detect --propose-site`: the inferred site file, for the engineer to correct. */
export function proposeSite(o: { input: string; learn?: string | undefined }): string {
  const input = readCsv(o.input);
  const learn = o.learn ? readCsv(o.learn) : undefined;
  return proposeSiteYaml(inferSite(input, learn), learn ? `${o.input} and ${o.learn}` : o.input);
}
