import type { Command } from "commander";
import { createPublicKey } from "node:crypto";
import { statSync, writeFileSync } from "node:fs";
import { loadConfig } from "../config/load";
import { locateConfig } from "../config/locate";
import { exportTrust, fingerprint, loadDeviceKey } from "../keys/identity";
import { report } from "./_output";

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
        if (opts.out) writeFileSync(opts.out, text, { mode: 0o644 });
        else process.stdout.write(text);
      },
    );
}
