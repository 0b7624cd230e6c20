/**
 * Maintenance windows: work on a meter or sensor (an exchange, a calibration) is not an attack.
 * Online, `gatewarden maintenance start|end` tells the running daemon (a signed audit event);
 * offline, `detect --maintenance FILE` reads the windows from a YAML list.
 */
import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { controlCall } from "../agent/control/client";
import type { ControlRegistry } from "../agent/core/control";
import { DaemonError } from "../agent/core/errors";
import type { EventSink } from "../agent/core/events";
import { OcsfClass } from "../agent/core/events";
import { osUser } from "../agent/core/os-user";
import { parseTimestamp } from "./csv";
import type { DetectionEngine, MaintenanceWindow } from "./engine";

const MAX_WINDOWS = 10_000;
const MAX_POINTS = 256;

const stamp = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const t = typeof v === "number" ? v * 1000 : parseTimestamp(v);
  if (t === null || !Number.isFinite(t)) {
    ctx.addIssue({ code: "custom", message: `not a timestamp: ${String(v)}` });
    return z.NEVER;
  }
  return t;
});

const windowSchema = z
  .strictObject({
    from: stamp,
    to: stamp,
    points: z.array(z.string().min(1)).min(1).max(MAX_POINTS),
    reason: z.string().min(1).max(500),
    by: z.string().max(200).optional(),
  })
  .refine((w) => w.from < w.to, { message: "from must be before to" });

export type OfflineWindow = z.output<typeof windowSchema>;

/** Reads a `--maintenance` file. Errors are INPUT_INVALID naming the file and the entry. */
export function readMaintenanceFile(file: string): OfflineWindow[] {
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, "utf8"));
  } catch (e) {
    throw new DaemonError("INPUT_INVALID", `${file}: cannot read or not YAML (${(e as Error).message})`, { cause: e });
  }
  const r = z.array(windowSchema).max(MAX_WINDOWS).safeParse(raw ?? []);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new DaemonError("INPUT_INVALID", `${file}: ${i ? `${i.path.join(".") || "(root)"}: ${i.message}` : "invalid"} (a list of { from, to, points, reason })`);
  }
  return r.data;
}

/** Applies offline windows to an engine as time passes: call `at(ts)` before each input row. */
export class MaintenanceSchedule {
  private readonly starts: OfflineWindow[];
  private readonly active: OfflineWindow[] = [];
  constructor(windows: readonly OfflineWindow[], private readonly engine: DetectionEngine) {
    this.starts = [...windows].sort((a, b) => b.from - a.from);
  }
  at(ts: number): void {
    for (let i = this.active.length - 1; i >= 0; i--) {
      const w = this.active[i]!;
      if (ts < w.to) continue;
      this.active.splice(i, 1);
      this.engine.endMaintenance(w.points.filter((p) => !this.active.some((o) => o.points.includes(p))));
    }
    while (this.starts.length && this.starts[this.starts.length - 1]!.from <= ts) {
      const w = this.starts.pop()!;
      if (ts >= w.to) continue;
      this.engine.startMaintenance(w.points, w.reason, w.by ?? "maintenance file", w.from);
      this.active.push(w);
    }
  }
}

/** `maintenance.start|end|list` on the daemon's control socket; each change is a signed audit event. */
export function registerMaintenanceControl(server: ControlRegistry, engine: DetectionEngine, sink: EventSink): void {
  const audit = (what: "started" | "ended", ws: MaintenanceWindow[], by: string): void => {
    if (!ws.length) return;
    const pts = ws.map((w) => w.point);
    sink.record({
      class: "audit",
      severity: 2,
      ocsf: {
        class_uid: OcsfClass.DeviceConfigStateChange, activity_id: 99,
        message: `Maintenance ${what} on ${pts.join(", ")} by ${by}${what === "started" ? `: ${ws[0]!.reason}` : ""}`,
        activity_name: what === "started" ? "Maintenance Started" : "Maintenance Ended",
        actor: { user: { name: by } },
        unmapped: { detection: { maintenance: ws } },
      },
    });
  };
  const pointsOf = (v: unknown): string[] | undefined =>
    Array.isArray(v) && v.length <= MAX_POINTS && v.every((p) => typeof p === "string" && p.length > 0) ? (v as string[]) : undefined;
  server.handle("maintenance.start", (args) => {
    const points = pointsOf(args.points);
    if (!points?.length || typeof args.reason !== "string" || !args.reason.trim()) throw new DaemonError("CONTROL_BAD_REQUEST", "maintenance.start needs points and a reason");
    const by = typeof args.by === "string" ? args.by : osUser();
    const ws = engine.startMaintenance(points, args.reason, by, Date.now());
    audit("started", ws, by);
    return ws;
  });
  server.handle("maintenance.end", (args) => {
    const points = pointsOf(args.points);
    if (!points && args.all !== true) throw new DaemonError("CONTROL_BAD_REQUEST", "maintenance.end needs points or all");
    const by = typeof args.by === "string" ? args.by : osUser();
    const ws = engine.endMaintenance(points);
    audit("ended", ws, by);
    return ws;
  });
  server.handle("maintenance.list", () => engine.maintenanceWindows());
}

const list = (v: string): string[] => v.split(",").map((s) => s.trim()).filter(Boolean);

/** `gatewarden maintenance start|end|list` against the running daemon. */
export function registerMaintenanceCommand(program: Command, deps: { resolveSocket: (opts: Record<string, unknown>) => Promise<string> }): void {
  const m = program.command("maintenance").description("Maintenance windows on points of the running daemon (suppressed and re-baselined)");
  const sock = async (cmd: Command): Promise<string> => deps.resolveSocket(cmd.optsWithGlobals());
  const print = (ws: MaintenanceWindow[], json: boolean | undefined, none: string): void => {
    if (json) process.stdout.write(JSON.stringify(ws) + "\n");
    else if (!ws.length) process.stdout.write(none + "\n");
    else for (const w of ws) process.stdout.write(`${w.point}  since ${new Date(w.since).toISOString()}  by ${w.by}: ${w.reason}\n`);
  };
  m.command("start")
    .description("Start maintenance on points: their findings are suppressed, a counter reset re-baselines")
    .requiredOption("--points <ids>", "comma-separated point ids")
    .requiredOption("--reason <text>", "why (recorded in the audit event)")
    .option("--config <FILE>", "config file (finds the daemon's control socket)")
    .option("--json", "print JSON")
    .action(async (o: { points: string; reason: string; json?: boolean }, cmd: Command) => {
      const points = list(o.points);
      if (!points.length) throw new DaemonError("USAGE", "--points needs at least one point id");
      if (!o.reason.trim()) throw new DaemonError("USAGE", "--reason must not be empty");
      print((await controlCall(await sock(cmd), "maintenance.start", { points, reason: o.reason, by: osUser() })) as MaintenanceWindow[], o.json, "");
    });
  m.command("end")
    .description("End maintenance on points (or --all): their detectors learn their baselines afresh")
    .option("--points <ids>", "comma-separated point ids")
    .option("--all", "every point in maintenance")
    .option("--config <FILE>", "config file (finds the daemon's control socket)")
    .option("--json", "print JSON")
    .action(async (o: { points?: string; all?: boolean; json?: boolean }, cmd: Command) => {
      if (!o.points && !o.all) throw new DaemonError("USAGE", "give --points or --all");
      const args = o.all ? { all: true, by: osUser() } : { points: list(o.points!), by: osUser() };
      print((await controlCall(await sock(cmd), "maintenance.end", args)) as MaintenanceWindow[], o.json, "No matching point was in maintenance.");
    });
  m.command("list")
    .description("List points in maintenance")
    .option("--config <FILE>", "config file (finds the daemon's control socket)")
    .option("--json", "print JSON")
    .action(async (o: { json?: boolean }, cmd: Command) => print((await controlCall(await sock(cmd), "maintenance.list", {})) as MaintenanceWindow[], o.json, "No point is in maintenance."));
}
