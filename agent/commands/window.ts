/** `gatewarden window open|list|close`: write windows on the running daemon (control socket). */
import type { Command } from "commander";
import { controlCall } from "../core/control-client";
import { DaemonError } from "../core/errors";
import { osUser } from "../core/os-user";
import { intArg } from "../../protocols/modbus/requests";
import type { WriteWindow } from "../../protocols/modbus/policy/window-store";
import { group, type CliDeps } from "./_deps";

export function registerWindow(program: Command, deps: CliDeps): void {
  const out = deps.stdout ?? ((s: string) => void process.stdout.write(s));
  const window = group(program, "window", "Time-boxed write windows on the running daemon");
  const sock = async (cmd: Command) => deps.resolveSocket(cmd.optsWithGlobals());
  const printWindows = (ws: WriteWindow[], json?: boolean) => {
    if (json) return out(JSON.stringify(ws) + "\n");
    if (!ws.length) return out("No write window is open.\n");
    for (const w of ws) out(`${w.id}  role ${w.role}  until ${new Date(w.expires_at).toISOString()}  by ${w.opened_by}: ${w.reason}\n`);
  };
  window
    .command("open")
    .description("Open a write window for a role; it closes by itself after --minutes")
    .requiredOption("--role <role>", "policy role whose writes the window allows")
    .requiredOption("--minutes <n>", "how long, in minutes", (v) => intArg("--minutes", 24 * 60)(v))
    .requiredOption("--reason <text>", "why (recorded in the audit event)")
    .option("--config <FILE>", "config file (finds the daemon's control socket)")
    .option("--json", "print JSON")
    .action(async (o: { role: string; minutes: number; reason: string; json?: boolean }, cmd: Command) => {
      const by = osUser();
      const w = (await controlCall(await sock(cmd), "window.open", { role: o.role, minutes: o.minutes, reason: o.reason, by })) as WriteWindow;
      if (o.json) out(JSON.stringify(w) + "\n");
      else out(`Opened write window ${w.id} for role ${w.role} until ${new Date(w.expires_at).toISOString()}.\n`);
    });
  window
    .command("list")
    .description("List open write windows")
    .option("--config <FILE>", "config file (finds the daemon's control socket)")
    .option("--json", "print JSON")
    .action(async (o: { json?: boolean }, cmd: Command) => printWindows((await controlCall(await sock(cmd), "window.list", {})) as WriteWindow[], o.json));
  window
    .command("close")
    .description("Close write windows now: one by --id, all of a --role, or --all")
    .option("--id <id>", "window id")
    .option("--role <role>", "every window of this role")
    .option("--all", "every open window")
    .option("--config <FILE>", "config file (finds the daemon's control socket)")
    .option("--json", "print JSON")
    .action(async (o: { id?: string; role?: string; all?: boolean; json?: boolean }, cmd: Command) => {
      if (!o.id && !o.role && !o.all) throw new DaemonError("USAGE", "give --id, --role or --all");
      const by = osUser();
      const closed = (await controlCall(await sock(cmd), "window.close", { ...(o.id ? { id: o.id } : {}), ...(o.role ? { role: o.role } : {}), ...(o.all ? { all: true } : {}), by })) as WriteWindow[];
      if (o.json) out(JSON.stringify(closed) + "\n");
      else out(closed.length ? `Closed ${closed.length} write window(s).\n` : "No matching write window was open.\n");
    });
}
