import type { Command } from "commander";
import { userInfo } from "node:os";
import { report } from "./_output";
import { loadConfig } from "../config/load";
import { locateConfig } from "../config/locate";
import { controlCall } from "../core/control-client";
import { recordAudit } from "../audit";
import { acceptDraft, acceptIntegrity, checkIntegrity, type Drift } from "../../firmware-hooks/integrity";

const lines = (d: Drift) => [...d.changed.map((f) => `changed  ${f}`), ...d.added.map((f) => `added    ${f}`), ...d.missing.map((f) => `missing  ${f}`)];

export function registerIntegrityCommands(program: Command): void {
  const integrity = program.command("integrity").description("Self-integrity: the measured manifest of the agent's files, config, policies and hooks");
  integrity
    .command("check")
    .description("Measure now and compare with the accepted manifest (exit status 1 on drift or without a manifest)")
    .option("--config <FILE>", "config file")
    .option("--json", "print as JSON")
    .action(
      (opts: { config?: string; json?: boolean }) => {
        const r = checkIntegrity(loadConfig(locateConfig(opts.config)));
        report(opts.json, r, () => [`integrity ${r.state} (${r.files} files; manifest ${r.manifest}, accepted ${r.accepted_at ?? "never"})`, ...lines(r.drift)].join("\n"));
        if (r.state !== "ok") process.exitCode = 1;
      },
    );
  integrity
    .command("accept")
    .description("After an intended change: measure now and make it the manifest (recorded as a signed audit event)")
    .option("--config <FILE>", "config file")
    .option("--json", "print as JSON")
    .action(
      async (opts: { config?: string; json?: boolean }) => {
        const loaded = loadConfig(locateConfig(opts.config));
        // Recorded before it is in force: an audit that fails leaves the old manifest.
        const r = await acceptIntegrity(loaded, (a) => recordAudit(loaded, acceptDraft(a, `${userInfo().username} (gatewarden integrity accept)`)));
        const ev = r.event;
        // A running daemon re-measures at once against the new manifest.
        await controlCall(loaded.config.control.socket, "integrity.check").catch(() => undefined);
        report(opts.json, r, () => [`accepted ${r.files} files into ${r.manifest} (event ${ev.boot}:${ev.seq} via ${ev.via})`, ...(r.drift ? lines(r.drift) : [])].join("\n"));
      },
    );
}
