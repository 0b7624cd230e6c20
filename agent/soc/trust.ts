import type { KeyObject } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../keys/files";
import { parseTrust } from "../keys/identity";

/**
 * Trusted device keys, one file per device under DIR/trusted/<device>.json (what
 * `gatewarden keys export-public` prints). Re-read at most every `reloadMs` when an unknown
 * device appears, so `soc trust add` takes effect without a restart.
 */
export class TrustStore {
  private keys = new Map<string, KeyObject>();
  private loadedAt = 0;

  constructor(
    readonly dir: string,
    private readonly reloadMs = 5000,
  ) {
    this.reload();
  }

  get(device: string): KeyObject | undefined {
    const k = this.keys.get(device);
    if (k || Date.now() - this.loadedAt < this.reloadMs) return k;
    this.reload();
    return this.keys.get(device);
  }

  reload(): void {
    const d = join(this.dir, "trusted");
    const next = new Map<string, KeyObject>();
    if (existsSync(d)) {
      for (const f of readdirSync(d)) {
        if (!f.endsWith(".json")) continue;
        const t = parseTrust(readFileSync(join(d, f), "utf8"), join(d, f));
        next.set(t.device, t.key);
      }
    }
    this.keys = next;
    this.loadedAt = Date.now();
  }

  static add(dir: string, text: string, origin: string): { device: string; fingerprint: string } {
    const t = parseTrust(text, origin);
    const d = join(dir, "trusted");
    mkdirSync(d, { recursive: true, mode: 0o700 });
    writeFileAtomic(join(d, `${t.device}.json`), JSON.stringify({ device: t.device, alg: t.alg, public_key: t.public_key, fingerprint: t.fingerprint }) + "\n", 0o644);
    return { device: t.device, fingerprint: t.fingerprint };
  }
}
