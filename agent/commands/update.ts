/** `gatewarden update`: update-engine hooks and engine-less updates (firmware-hooks/). */
import type { Command } from "commander";
import { report } from "./_output";
import { loadConfig } from "../config/load";
import { locateConfig } from "../config/locate";
import { hookSite } from "../audit";
import { runHook } from "../../firmware-hooks/hook";
import { applyUpdate, rollBack, standaloneStatus, verifyBundle } from "../../firmware-hooks/standalone";
import type { Opts } from "./release";

export function registerUpdateCommands(program: Command): Command {
  const update = program.command("update").description("Install only what the fleet signed: update-engine hooks and engine-less updates");
  update
    .command("hook <ENGINE> <STAGE>")
    .description("One step of an update engine's install (rauc, swupdate, mender): check the release, record the step, judge health after reboot")
    .option("--config <FILE>", "config file")
    .option("--bundle <DIR>", "the release's directory (default: from the engine's environment)")
    .option("--json", "print the result as JSON")
    .action(
      async (engine: string, stage: string, opts: Opts & { bundle?: string }) => {
        const loaded = loadConfig(locateConfig(opts.config));
        const r = await runHook(hookSite(loaded), engine, stage, { bundle: opts.bundle });
        if (opts.json) report(true, r, () => "");
        // Engines show the hook's stderr (RAUC's install-check takes its message from there).
        process.stderr.write(r.message + "\n");
        process.exitCode = r.exitCode;
      },
    );
  update
    .command("verify <BUNDLE>")
    .description("Check a release folder: signature by a fleet key, device class, files, anti-rollback counter")
    .option("--config <FILE>", "config file")
    .option("--json", "print as JSON")
    .action(
      (bundle: string, opts: Opts) => {
        const r = verifyBundle(loadConfig(locateConfig(opts.config)), bundle);
        report(opts.json, { ok: true, version: r.manifest.version, counter: r.manifest.counter, device_class: r.manifest.device_class, key: r.key, files: Object.keys(r.manifest.files).length }, () => `OK ${r.manifest.version} (counter ${r.manifest.counter}, ${Object.keys(r.manifest.files).length} files) signed by ${r.key}`);
      },
    );
  update
    .command("apply <BUNDLE>")
    .description("Without an update engine: install a release folder beside the current one, switch `current` atomically, restart, health check; commit or roll back")
    .option("--config <FILE>", "config file")
    .option("--json", "print as JSON")
    .action(
      async (bundle: string, opts: Opts) => {
        const at = process.env.GATEWARDEN_FAULT_KILL_AT; // fault injection for the kill -9 test
        const r = await applyUpdate(hookSite(loadConfig(locateConfig(opts.config))), bundle, {
          onStep: (s) => {
            if (at === s) process.kill(process.pid, "SIGKILL");
          },
        });
        report(opts.json, r, () => r.message);
        if (!r.ok) process.exitCode = 1;
      },
    );
  update
    .command("rollback")
    .description("Undo an uncommitted `update apply`: `current` back to the previous release (a committed release is never rolled back)")
    .option("--config <FILE>", "config file")
    .option("--json", "print as JSON")
    .action(
      async (opts: Opts) => {
        const message = await rollBack(hookSite(loadConfig(locateConfig(opts.config))));
        report(opts.json, { ok: true, message }, () => message);
      },
    );
  update
    .command("status")
    .description("The current release, the committed anti-rollback counter, a pending update and the installed release folders")
    .option("--config <FILE>", "config file")
    .option("--json", "print as JSON")
    .action(
      (opts: Opts) => {
        const s = standaloneStatus(loadConfig(locateConfig(opts.config))) as { current: string | null; committed: { version: string | null; counter: number }; pending: { version: string; counter: number; engine: string } | null; releases: { version: string; counter: number | null }[] };
        report(opts.json, s, () =>
          [
            `current    ${s.current ?? "-"}`,
            `committed  ${s.committed.version ?? "-"} (counter ${s.committed.counter})`,
            `pending    ${s.pending ? `${s.pending.version} (counter ${s.pending.counter}, ${s.pending.engine})` : "-"}`,
            `releases   ${s.releases.map((r) => r.version).join(", ") || "-"}`,
          ].join("\n"),
        );
      },
    );
  return update;
}
