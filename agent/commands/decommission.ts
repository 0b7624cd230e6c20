import type { Command } from "commander";
import { createInterface } from "node:readline/promises";
import { loadConfig } from "../config/load";
import { locateConfig } from "../config/locate";
import { controlCall } from "../core/control-client";
import { MAX_DECOMMISSION_TIMEOUT_MS, type DecommissionResult } from "../decommission";
import { DaemonError } from "../core/errors";
import { osUser } from "../core/os-user";
import { report } from "./_output";
import { wholeNumber } from "./_numbers";

export function registerDecommission(program: Command): void {
  program
    .command("decommission")
    .description("Take this gateway out of service: deliver the outbox to the SOC, send a signed farewell, then wipe keys, outbox and state (the running daemon does it, then ends)")
    .option("--config <FILE>", "config file")
    .option("--yes", "do not ask for confirmation (it cannot be undone)")
    .option("--timeout-ms <MS>", "how long to wait for the SOC's acknowledgements (each of the two waits), 1 to 86400000 (24 h)", "60000")
    .option("--json", "print the result as JSON")
    .action(
      async (opts: { config?: string; yes?: boolean; timeoutMs: string; json?: boolean }) => {
        const timeout = wholeNumber(opts.timeoutMs, "--timeout-ms", "milliseconds", 1, MAX_DECOMMISSION_TIMEOUT_MS);
        const { config } = loadConfig(locateConfig(opts.config));
        if (!opts.yes) await confirm(config.device.id);
        const r = (await controlCall(config.control.socket, "decommission", { by: osUser(), timeout_ms: timeout }, 2 * timeout + 30_000)) as DecommissionResult | undefined;
        if (!r) throw new DaemonError("CONTROL_UNAVAILABLE", `the daemon on ${config.control.socket} closed the connection without an answer; check its log and \`gatewarden status\``);
        report(opts.json, r, () => `Decommissioned ${r.device}: farewell ${r.boot}:${r.farewell_seq} acknowledged, key ${r.fingerprint} retired at the SOC.\nWiped: ${r.wiped.join(", ")}\nThe daemon has stopped.`);
      },
    );
}

/** Asks on a terminal for the device id; without one, --yes is required. */
async function confirm(device: string): Promise<void> {
  if (!process.stdin.isTTY) throw new DaemonError("USAGE", "decommission wipes this gateway's keys, outbox and state and cannot be undone: give --yes (no terminal to ask on)");
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`This wipes the keys, outbox and state of ${device} for good. Type the device id to go on: `);
    if (answer.trim() !== device) throw new DaemonError("USAGE", "not confirmed; nothing was changed");
  } finally {
    rl.close();
  }
}
