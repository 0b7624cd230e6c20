import type { Command } from "commander";
import { existsSync, rmSync } from "node:fs";
import { makeDirs } from "../core/dirs";
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import { configTemplate } from "../config/template";
import { DaemonError } from "../core/errors";
import { DEVICE_ID, exportTrust, generateDeviceKey } from "../keys/identity";
import { fingerprint } from "../core/keys";
import { writeNewFile } from "../core/secret-files";
import { report } from "./_output";
import { writeSchemaFile } from "./config";
import { configJsonSchema, SCHEMA_FILE } from "../config/json-schema";
import { VERSION } from "../version";
import { createPublicKey } from "node:crypto";

export function registerInit(program: Command): void {
  program
    .command("init")
    .description("Create a commented config file and this gateway's Ed25519 identity in DIR")
    .requiredOption("--dir <DIR>", "configuration directory (e.g. /etc/gatewarden)")
    .option("--device-id <ID>", "device id (default: the host name)")
    .option("--data-dir <DIR>", "where the outbox and control socket live (default: DIR/data)")
    .option("--json", "print the result as JSON")
    .action(
      (opts: { dir: string; deviceId?: string; dataDir?: string; json?: boolean }) => {
        const dir = resolve(opts.dir);
        const deviceId = opts.deviceId ?? hostname().replace(/[^A-Za-z0-9._-]/g, "-").slice(0, 64);
        if (!DEVICE_ID.test(deviceId)) throw new DaemonError("USAGE", `--device-id ${deviceId}: use letters, digits, '.', '_' or '-' (at most 64)`);
        const file = join(dir, "gatewarden.yaml");
        const priv = join(dir, "keys", "device.key");
        const pub = join(dir, "keys", "device.pub");
        for (const f of [file, priv]) if (existsSync(f)) throw new DaemonError("KEY_EXISTS", `${f} exists; refusing to overwrite it (remove it first if you mean to re-create the identity)`);
        makeDirs(join(dir, "keys"), "--dir");
        const dataDir = opts.dataDir ? resolve(opts.dataDir) : "data";
        const key = generateDeviceKey(priv, pub);
        try {
          writeNewFile(file, configTemplate({ deviceId, dataDir }), 0o640);
          writeSchemaFile(join(dir, SCHEMA_FILE), JSON.stringify(configJsonSchema(VERSION), null, 2) + "\n");
        } catch (e) {
          // All or nothing (a full card): a half-made gateway would make the next `init` refuse (KEY_EXISTS).
          for (const f of [priv, pub, file]) if (existsSync(f)) rmSync(f, { force: true });
          throw e;
        }
        const trust = exportTrust(deviceId, key);
        report(opts.json, { config: file, schema: join(dir, SCHEMA_FILE), device: deviceId, private_key: priv, public_key: pub, fingerprint: trust.fingerprint }, () =>
          [
            `Created ${file}`,
            `Device ${deviceId}, key ${priv} (0600), fingerprint ${fingerprint(createPublicKey(key))}`,
            "Next:",
            `  gatewarden config set upstream.url mqtts://SOC-BROKER:8883 --config ${file}`,
            `  gatewarden keys export-public --config ${file} > ${deviceId}.trust.json   # give this to the SOC`,
            `  gatewarden run --config ${file}`,
          ].join("\n"),
        );
      },
    );
}
