import type { Command } from "commander";
import { report } from "./_output";
import { loadConfig } from "../config/load";
import { locateConfig } from "../config/locate";
import { controlCall } from "../core/control-client";

export function registerPostureCommand(program: Command): void {
  program
    .command("posture")
    .description("The running daemon's posture: load, memory, disk, outbox, temperature, clock, listeners, kernel and OS, secure boot, update slot and version, integrity")
    .option("--config <FILE>", "config file")
    .option("--json", "print as JSON")
    .action(
      async (opts: { config?: string; json?: boolean }) => {
        const loaded = loadConfig(locateConfig(opts.config));
        const p = (await controlCall(loaded.config.control.socket, "posture", {}, 30_000)) as Record<string, unknown> & { listeners: { address: string; port: number; declared: boolean }[] };
        report(opts.json, p, () =>
          Object.entries(p)
            .map(([k, v]) => `${k.padEnd(21)} ${k === "listeners" ? p.listeners.map((l) => `${l.address}:${l.port}${l.declared ? "" : " (undeclared)"}`).join(", ") || "-" : typeof v === "object" && v !== null ? JSON.stringify(v) : String(v ?? "-")}`)
            .join("\n"),
        );
      },
    );
}
