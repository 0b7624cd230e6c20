/** `gatewarden maintenance start|end|list`: maintenance windows on points of the running daemon. */
import type { Command } from "commander";
import { controlCall } from "../core/control-client";
import { DaemonError } from "../core/errors";
import { osUser } from "../core/os-user";
import type { MaintenanceWindow } from "../../detectors/engine";
import type { CliDeps } from "./_deps";

const list = (v: string): string[] => v.split(",").map((s) => s.trim()).filter(Boolean);

/** `gatewarden maintenance start|end|list` against the running daemon. */
export function registerMaintenance(program: Command, deps: Pick<CliDeps, "resolveSocket">): void {
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
