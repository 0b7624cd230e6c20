import type { Command } from "commander";
import { createPublicKey } from "node:crypto";
import { statSync } from "node:fs";
import { loadConfig } from "../config/load";
import { locateConfig } from "../config/locate";
import { controlCall } from "../core/control-client";
import { DaemonError, isDaemonError } from "../core/errors";
import { exportTrust } from "../keys/identity";
import { fingerprint, loadDeviceKey } from "../core/keys";
import type { RotationResult } from "../keys/rotation";
import { osUser } from "../core/os-user";
import { report } from "./_output";
import { writeFileAtomic } from "../core/secret-files";

export function registerKeys(program: Command): void {
  const keys = program.command("keys").description("This gateway's identity key");
  keys
    .command("show")
    .description("Print the device id, key file, its mode and the public key fingerprint")
    .option("--config <FILE>", "config file")
    .option("--json", "print as JSON")
    .action(
      (opts: { config?: string; json?: boolean }) => {
        const { config } = loadConfig(locateConfig(opts.config));
        const key = loadDeviceKey(config.device.key);
        const mode = (statSync(config.device.key).mode & 0o777).toString(8).padStart(4, "0");
        const fp = fingerprint(createPublicKey(key));
        report(opts.json, { device: config.device.id, key_file: config.device.key, mode, alg: "ed25519", fingerprint: fp }, () => `device ${config.device.id}\nkey    ${config.device.key} (mode ${mode}, ed25519)\nfingerprint ${fp}`);
      },
    );
  keys
    .command("export-public")
    .description("Print (or write) the public key as a trust file for `gatewarden soc trust add`")
    .option("--config <FILE>", "config file")
    .option("--out <FILE>", "write to FILE instead of stdout")
    .action(
      (opts: { config?: string; out?: string }) => {
        const { config } = loadConfig(locateConfig(opts.config));
        const text = JSON.stringify(exportTrust(config.device.id, loadDeviceKey(config.device.key)), null, 2) + "\n";
        if (opts.out) writeFileAtomic(opts.out, text, 0o644);
        else process.stdout.write(text);
      },
    );
  keys
    .command("rotate")
    .description("Make a new device key; the running daemon announces it in an event signed by the old key and signs everything after with the new one (the SOC follows without a trust add)")
    .option("--config <FILE>", "config file")
    .option("--json", "print as JSON")
    .action(
      async (opts: { config?: string; json?: boolean }) => {
        const { config } = loadConfig(locateConfig(opts.config));
        let r: RotationResult;
        try {
          r = (await controlCall(config.control.socket, "keys.rotate", { by: osUser() }, 30_000)) as RotationResult;
        } catch (e) {
          // Rotating offline would break the chain the SOC follows: the running daemon does it.
          if (isDaemonError(e, "CONTROL_UNAVAILABLE")) throw new DaemonError("CONTROL_UNAVAILABLE", `${e.message}. The rotation is announced in the event chain by the running daemon: start it (\`gatewarden run\`) and run keys rotate again; nothing was changed`);
          throw e;
        }
        report(opts.json, r, () => `Rotated the key of ${r.device}: ${r.old_fingerprint} -> ${r.new_fingerprint}.\nAnnounced at ${r.boot}:${r.seq} (signed by the old key); the new key signs from seq ${r.from_seq}. The SOC follows it without a trust add.`);
      },
    );
}
