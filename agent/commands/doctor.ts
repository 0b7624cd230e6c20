import type { Command } from "commander";
import { loadConfig } from "../config/load";
import { locateConfig } from "../config/locate";
import { DaemonError, describeError } from "../core/errors";
import { checkBroker, checkCertificates, checkClock, checkConfigReadable, checkDataDir, checkDisk, checkListeners, checkSecrets, checkUpstreams, serviceUser, type Check } from "../doctor/checks";
import { checkReferences } from "../config/references";
import { secretPathOf } from "../doctor/secrets";

interface Opts {
  config?: string;
  json?: boolean;
  root: string;
  user: string;
}

/**
 * `gatewarden doctor`: checks a gateway's setup, each finding with how to fix it. Exit 0 when
 * nothing failed (warnings allowed), 1 otherwise; the output is what goes into a ticket.
 */
export function registerDoctor(program: Command): void {
  program
    .command("doctor")
    .description("Check this gateway's setup (config and what it references, key modes, clock, disk, broker, devices, listeners) and say how to fix each finding")
    .option("--config <FILE>", "config file")
    .option("--root <DIR>", "system root whose etc/passwd names the service user", "/")
    .option("--user <NAME>", "the service user", "gatewarden")
    .option("--json", "print the checks as JSON")
    .action((opts: Opts) => runDoctor(opts));
}

async function runDoctor(opts: Opts): Promise<void> {
  const file = locateConfig(opts.config);
  const checks: Check[] = [];
  let config;
  try {
    const loaded = loadConfig(file);
    config = loaded.config;
    checks.push({ id: "config", status: "ok", detail: `${file} is valid` });
    // Everything the config names, as `run` checks it: each problem under the key that names the file.
    for (const i of checkReferences(loaded)) {
      const secret = i.code === "KEY_PERMISSIONS";
      checks.push({ id: `${secret ? "secret" : "reference"}:${i.path}`, status: "fail", detail: `${i.code}: ${i.message}`, fix: secret ? `chmod 600 ${secretPathOf(config, i.path) ?? "the file"}` : "gatewarden config validate shows it with its line" });
    }
  } catch (e) {
    const code = e instanceof DaemonError ? e.code : "INTERNAL";
    checks.push({ id: "config", status: "fail", detail: `${code}: ${describeError(e).replace(/^[A-Z_]+: /, "")}`, fix: "gatewarden config validate shows every error with its line" });
  }
  if (config) {
    const user = serviceUser(opts.root, opts.user);
    checks.push(user ? { id: "service_user", status: "ok", detail: `${opts.user} is uid ${user.uid}` } : { id: "service_user", status: "warn", detail: `no user ${opts.user} with a numeric uid and gid in ${opts.root.replace(/\/$/, "")}/etc/passwd`, fix: "install.sh creates it; the unit runs the daemon as it" });
    const readable = checkConfigReadable(file, user);
    if (readable) checks.push(readable);
    checks.push(...checkSecrets(config, user, new Set(checks.map((c) => c.id))), checkDataDir(config, user), checkDisk(config), checkClock(), ...checkCertificates(config));
    const [broker, upstreams, listeners] = await Promise.all([checkBroker(config), checkUpstreams(config), checkListeners(config)]);
    checks.push(broker, ...upstreams, ...listeners);
  }
  const failed = checks.filter((c) => c.status === "fail").length;
  if (opts.json) process.stdout.write(JSON.stringify({ config: file, ok: failed === 0, failed, checks }, null, 2) + "\n");
  else {
    const w = Math.max(...checks.map((c) => c.id.length));
    const lines = checks.map((c) => `  ${c.status === "fail" ? "FAIL" : c.status === "warn" ? "warn" : "ok  "}  ${c.id.padEnd(w)}  ${c.detail}${c.fix && c.status !== "ok" ? `\n  ${" ".repeat(w + 8)}fix: ${c.fix}` : ""}`);
    process.stdout.write(`gatewarden doctor: ${file}\n${lines.join("\n")}\n${failed ? `${failed} of ${checks.length} checks failed` : `all ${checks.length} checks passed${checks.some((c) => c.status === "warn") ? " (with warnings)" : ""}`}\n`);
  }
  if (failed) process.exitCode = 1;
}
