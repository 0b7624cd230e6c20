import type { KeyObject } from "node:crypto";
import { appendFileSync, existsSync, fsyncSync, mkdirSync, openSync, closeSync, readdirSync, readFileSync, statSync } from "node:fs";
import { hostname, userInfo } from "node:os";
import { join } from "node:path";
import { DaemonError } from "../core/errors";
import { writeFileAtomic } from "../core/secret-files";
import { parseTrust } from "../keys/identity";
import { publicKeyFromRaw } from "../events/sign";

/**
 * Trusted device keys with their history, one file per device under DIR/trusted/<device>.json.
 * Each key is valid for a range of boots (`from_boot`..`until_boot`, open-ended when null): a
 * replaced key keeps verifying the boots it was trusted for, so the running receiver and
 * `soc verify` over old output agree. Every replacement and removal is appended to
 * DIR/trusted/changes.jsonl (who, when, old and new fingerprints); the receiver writes each as
 * a `trust_changed` line. Files are re-read when the directory changes (checked at most every
 * `reloadMs`), so trust changes take effect without a restart.
 */
export interface TrustedKey {
  public_key: string;
  fingerprint: string;
  from_boot: number | null;
  until_boot: number | null;
  added_at: number | null;
  added_by: string | null;
}

export interface DeviceTrustFile {
  device: string;
  alg: "ed25519";
  keys: TrustedKey[];
  /** Set by `soc trust remove`: no key is valid after `until_boot` of the last one. */
  removed_at?: number;
}

export interface TrustChange {
  at: number;
  by: string;
  device: string;
  action: "replace" | "remove";
  old_fingerprint: string | null;
  new_fingerprint: string | null;
  /** First boot the new key is valid for; for a removal, the last boot the old key was. */
  boot: number | null;
}

interface Loaded {
  file: DeviceTrustFile;
  keys: { key: KeyObject; from: number; until: number }[];
}

export class TrustStore {
  private devices = new Map<string, Loaded>();
  private checkedAt = 0;
  private stamp = "";

  constructor(
    readonly dir: string,
    private readonly reloadMs = 5000,
  ) {
    this.reload();
  }

  /** The key valid for `boot` of `device` (without `boot`: its current key). */
  get(device: string, boot?: number): KeyObject | undefined {
    this.maybeReload();
    const d = this.devices.get(device);
    if (!d) return undefined;
    if (boot === undefined) return d.file.removed_at === undefined ? d.keys.at(-1)?.key : undefined;
    return d.keys.find((k) => k.from <= boot && boot <= k.until)?.key;
  }

  /** Every trusted device file (for `soc trust list`). */
  list(): DeviceTrustFile[] {
    this.maybeReload();
    return [...this.devices.values()].map((d) => d.file).sort((a, b) => (a.device < b.device ? -1 : 1));
  }

  /** Changes after the first `from` lines of the change log. */
  changesSince(from: number): TrustChange[] {
    return readChanges(this.dir).slice(from);
  }

  private maybeReload(): void {
    if (Date.now() - this.checkedAt < this.reloadMs) return;
    this.checkedAt = Date.now();
    if (dirStamp(this.dir) !== this.stamp) this.reload();
  }

  reload(): void {
    const d = join(this.dir, "trusted");
    const next = new Map<string, Loaded>();
    this.stamp = dirStamp(this.dir);
    if (existsSync(d)) {
      for (const f of readdirSync(d)) {
        if (!f.endsWith(".json")) continue;
        const file = readDeviceFile(join(d, f));
        next.set(file.device, {
          file,
          keys: file.keys.map((k) => ({ key: publicKeyFromRaw(Buffer.from(k.public_key, "base64")), from: k.from_boot ?? -Infinity, until: k.until_boot ?? Infinity })),
        });
      }
    }
    this.devices = next;
    this.checkedAt = Date.now();
  }

  /**
   * Trusts a device's key (`soc trust add`). A different key for a device already trusted is
   * refused with TRUST_CONFLICT unless `replace` names the boot from which the new key is valid;
   * the old key stays valid for the boots before it, and the change is logged.
   */
  static add(dir: string, text: string, origin: string, replace?: { fromBoot: number }): { device: string; fingerprint: string; replaced: string | null; from_boot: number | null } {
    const t = parseTrust(text, origin);
    const d = join(dir, "trusted");
    mkdirSync(d, { recursive: true, mode: 0o700 });
    const path = join(d, `${t.device}.json`);
    const now = Date.now();
    const by = operator();
    const entry: TrustedKey = { public_key: t.public_key, fingerprint: t.fingerprint, from_boot: null, until_boot: null, added_at: now, added_by: by };
    const cur = existsSync(path) ? readDeviceFile(path) : undefined;
    const last = cur?.keys.at(-1);
    if (cur && last && last.fingerprint === t.fingerprint && cur.removed_at === undefined) return { device: t.device, fingerprint: t.fingerprint, replaced: null, from_boot: last.from_boot };
    if (cur && cur.removed_at === undefined && last) {
      if (!replace) throw new DaemonError("TRUST_CONFLICT", `device ${t.device} is already trusted with key ${last.fingerprint}; ${origin} has ${t.fingerprint}. To replace it, run again with --replace (the old key stays valid for the boots before the new one)`);
      if (last.from_boot !== null && replace.fromBoot <= last.from_boot) throw new DaemonError("USAGE", `--from-boot ${replace.fromBoot} must be after boot ${last.from_boot}, where the current key of ${t.device} begins`);
      last.until_boot = replace.fromBoot - 1;
      entry.from_boot = replace.fromBoot;
    } else if (cur?.removed_at !== undefined && last) {
      entry.from_boot = (last.until_boot ?? 0) + 1;
    }
    const file: DeviceTrustFile = { device: t.device, alg: "ed25519", keys: [...(cur?.keys ?? []), entry] };
    writeFileAtomic(path, JSON.stringify(file) + "\n", 0o644);
    if (cur && last) logChange(dir, { at: now, by, device: t.device, action: "replace", old_fingerprint: cur.removed_at === undefined ? last.fingerprint : null, new_fingerprint: t.fingerprint, boot: entry.from_boot });
    return { device: t.device, fingerprint: t.fingerprint, replaced: cur && cur.removed_at === undefined ? last!.fingerprint : null, from_boot: entry.from_boot };
  }

  /** Stops trusting a device after `untilBoot` (`soc trust remove`); the change is logged. */
  static remove(dir: string, device: string, untilBoot: number): { device: string; fingerprint: string; until_boot: number } {
    const path = join(dir, "trusted", `${device}.json`);
    if (!existsSync(path)) throw new DaemonError("TRUST_INVALID", `device ${device} is not trusted in ${join(dir, "trusted")}`);
    const cur = readDeviceFile(path);
    const last = cur.keys.at(-1)!;
    if (cur.removed_at !== undefined) throw new DaemonError("TRUST_INVALID", `device ${device} was already removed`);
    last.until_boot = untilBoot;
    cur.removed_at = Date.now();
    writeFileAtomic(path, JSON.stringify(cur) + "\n", 0o644);
    logChange(dir, { at: cur.removed_at, by: operator(), device, action: "remove", old_fingerprint: last.fingerprint, new_fingerprint: null, boot: untilBoot });
    return { device, fingerprint: last.fingerprint, until_boot: untilBoot };
  }
}

/** A device trust file: the current format, or the single-key one `trust add` wrote before. */
function readDeviceFile(path: string): DeviceTrustFile {
  const text = readFileSync(path, "utf8");
  let o: Partial<DeviceTrustFile> & { public_key?: string };
  try {
    o = JSON.parse(text) as typeof o;
  } catch {
    throw new DaemonError("TRUST_INVALID", `${path} is not JSON`);
  }
  if (!Array.isArray(o.keys)) {
    const t = parseTrust(text, path);
    return { device: t.device, alg: "ed25519", keys: [{ public_key: t.public_key, fingerprint: t.fingerprint, from_boot: null, until_boot: null, added_at: null, added_by: null }] };
  }
  if (!o.keys.length) throw new DaemonError("TRUST_INVALID", `${path}: "keys" is empty`);
  for (const k of o.keys) {
    parseTrust(JSON.stringify({ device: o.device, alg: "ed25519", public_key: k.public_key, fingerprint: k.fingerprint }), path);
    if ((k.from_boot !== null && !Number.isSafeInteger(k.from_boot)) || (k.until_boot !== null && !Number.isSafeInteger(k.until_boot))) throw new DaemonError("TRUST_INVALID", `${path}: "from_boot"/"until_boot" must be whole numbers or null`);
  }
  return o as DeviceTrustFile;
}

function changesPath(dir: string): string {
  return join(dir, "trusted", "changes.jsonl");
}

function readChanges(dir: string): TrustChange[] {
  const p = changesPath(dir);
  if (!existsSync(p)) return [];
  return readFileSync(p, "utf8")
    .split("\n")
    .filter((l) => l.trim())
    .map((l, i) => {
      try {
        return JSON.parse(l) as TrustChange;
      } catch {
        throw new DaemonError("TRUST_INVALID", `${p} line ${i + 1} is not JSON`);
      }
    });
}

function logChange(dir: string, c: TrustChange): void {
  const p = changesPath(dir);
  appendFileSync(p, JSON.stringify(c) + "\n", { mode: 0o644 });
  const fd = openSync(p, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Who ran the command: the user (the one behind sudo, if any) and the host. */
function operator(): string {
  const u = process.env.SUDO_USER ?? userInfo().username;
  return `${u}@${hostname()}`;
}

/** Changes when a device file is added, replaced (rename) or removed. */
function dirStamp(dir: string): string {
  try {
    const st = statSync(join(dir, "trusted"));
    return `${st.mtimeMs}:${st.ino}`;
  } catch {
    return "";
  }
}
