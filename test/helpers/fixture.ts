import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setConfigValue } from "../../agent/config/edit";
import { loadConfig, type LoadedConfig } from "../../agent/config/load";
import { configTemplate } from "../../agent/config/template";
import { exportTrust, generateDeviceKey, generateSocKeys } from "../../agent/keys/identity";
import { TrustStore } from "../../agent/soc/trust";
import pino from "pino";

export const silent = pino({ level: "silent" });

export function tempDir(prefix = "gw-test-"): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A gateway config dir with identity, plus a SOC dir with keys that trusts it. */
export function makeSite(root: string, o: { device?: string; settings?: Record<string, string> } = {}): { cfgFile: string; socDir: string; gwDir: string; load: () => LoadedConfig } {
  const device = o.device ?? "gw-test-1";
  const gwDir = join(root, device);
  const socDir = join(root, "soc");
  mkdirSync(join(gwDir, "keys"), { recursive: true, mode: 0o700 });
  mkdirSync(socDir, { recursive: true, mode: 0o700 });
  try {
    generateSocKeys(join(socDir, "soc.key"), join(socDir, "soc.pub"));
  } catch {
    /* shared SOC dir already has keys */
  }
  const key = generateDeviceKey(join(gwDir, "keys", "device.key"), join(gwDir, "keys", "device.pub"));
  const cfgFile = join(gwDir, "gatewarden.yaml");
  writeFileSync(cfgFile, configTemplate({ deviceId: device, dataDir: "data" }), { mode: 0o640 });
  setConfigValue(cfgFile, "upstream.soc_public_key", join(socDir, "soc.pub"));
  setConfigValue(cfgFile, "log.level", "silent");
  for (const [k, v] of Object.entries(o.settings ?? {})) setConfigValue(cfgFile, k, v);
  TrustStore.add(socDir, JSON.stringify(exportTrust(device, key)), "test");
  return { cfgFile, socDir, gwDir, load: () => loadConfig(cfgFile) };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function until(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}
