import { createHash, type KeyObject } from "node:crypto";
import { closeSync, existsSync, fstatSync, fsyncSync, ftruncateSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync } from "node:fs";
import { hostname, userInfo } from "node:os";
import { join } from "node:path";
import { DaemonError, describeError, pathUnusable } from "../core/errors";
import { writeAll, writeFileAtomic } from "../core/secret-files";
import { DEVICE_ID, parseTrust } from "../keys/identity";
import { publicKeyFromRaw } from "../core/sign";
import { makeDirs } from "../core/dirs";

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
  /** A key rotated within a boot: the first seq of `from_boot` this key signs (absent: 0). */
  from_seq?: number;
  /** The last seq of `until_boot` this key signs (absent: the whole boot). */
  until_seq?: number;
  added_at: number | null;
  added_by: string | null;
}

/** A position in a device's chain. */
export interface Position {
  boot: number;
  seq: number;
}

export interface DeviceTrustFile {
  device: string;
  alg: "ed25519";
  keys: TrustedKey[];
  /** Set by `soc trust remove`: no key is valid after `until_boot` of the last one. */
  removed_at?: number;
  /** Set by the device's signed farewell (`gatewarden decommission`): anything after it is a problem. */
  retired?: Position & { at: number };
}

/** A change as the log holds it, with a key from its line's content. */
export interface LoggedChange {
  key: string;
  change: TrustChange;
}

export interface TrustChange {
  at: number;
  by: string;
  device: string;
  /** rotation and retire follow the device's own signed events (the receiver reports them as it verifies them). */
  action: "replace" | "remove" | "rotation" | "retire";
  old_fingerprint: string | null;
  new_fingerprint: string | null;
  /** First boot the new key is valid for; for a removal, the last boot the old key was. */
  boot: number | null;
}

interface Loaded {
  file: DeviceTrustFile;
  keys: { key: KeyObject; fingerprint: string; from: Position; until: Position }[];
}

/** A rotation the device announced in an event signed by its current key. */
export interface Rotation {
  /** The announcement's position; the new key signs from `from_seq` of the same boot on. */
  boot: number;
  seq: number;
  from_seq: number;
  public_key: string;
  fingerprint: string;
}

export class TrustStore {
  private devices = new Map<string, Loaded>();
  private checkedAt = 0;
  private stamp = "";
  /** Per device: its file's stamp when read or written, and a counter bumped on every change in memory. */
  private fileStamps = new Map<string, string>();
  private generations = new Map<string, number>();
  private changes = 0;
  /** Device files read again because they changed on disk (`refresh`). */
  refreshes = 0;

  /**
   * `persist: false` (`soc verify`): rotations and retirements followed from the events are
   * kept in memory only, and the files are read once.
   */
  constructor(
    readonly dir: string,
    private readonly reloadMs = 5000,
    private readonly persist = true,
  ) {
    this.reload();
  }

  /**
   * The key valid at `boot` (and `seq`, when a key was rotated within that boot) of `device`;
   * without `boot`, its current key (none once removed; a retired device's last key).
   */
  get(device: string, boot?: number, seq?: number): KeyObject | undefined {
    this.maybeReload();
    const d = this.devices.get(device);
    if (!d) return undefined;
    if (boot === undefined) return d.file.removed_at === undefined ? d.keys.at(-1)?.key : undefined;
    const at = { boot, seq: seq ?? 0 };
    // Without a seq, a boot shared by two keys (a rotation) is the older key's.
    return d.keys.find((k) => !before(at, k.from) && (seq === undefined ? boot <= k.until.boot : !before(k.until, at)))?.key;
  }

  /** Every key the device ever had, oldest first. */
  keys(device: string): KeyObject[] {
    return this.devices.get(device)?.keys.map((k) => k.key) ?? [];
  }

  /**
   * Reads the device's file again if it changed on disk since it was read or written here: the
   * receivers of a shared-subscription group share one trust dir (`--trust-dir`), and a rotation
   * one of them followed is then known to all. One stat when nothing changed. True: it changed.
   * A store that does not persist (`soc verify`) never changes under it.
   */
  refresh(device: string): boolean {
    if (!this.persist || !DEVICE_ID.test(device)) return false;
    const path = join(this.dir, "trusted", `${device}.json`);
    const st = fileStamp(path);
    if (st === "" || st === this.fileStamps.get(device)) return false;
    let file: DeviceTrustFile;
    try {
      file = readDeviceFile(path);
    } catch {
      return false; // an unreadable file keeps the history read before (the next reload reports it)
    }
    if (file.device !== device) return false;
    this.set(file, st);
    this.refreshes++;
    return true;
  }

  /** Changes whenever the device's key history in memory changes (a refresh, a reload, a rotation followed). */
  generation(device: string): number {
    return this.generations.get(device) ?? 0;
  }

  private set(file: DeviceTrustFile, stamp: string): void {
    this.devices.set(file.device, loaded(file));
    this.fileStamps.set(file.device, stamp);
    this.generations.set(file.device, ++this.changes);
  }

  /** Where a retired device said farewell (undefined: not retired). */
  retired(device: string): Position | undefined {
    this.maybeReload();
    return this.devices.get(device)?.file.retired;
  }

  /**
   * Follows a rotation announced in an event verified under the device's current key: the old
   * key ends at the announcement, the new one signs from `from_seq` on. "known": already in the
   * history; "stale": the announcing key is no longer the device's current key (not followed).
   */
  follow(device: string, r: Rotation): "followed" | "known" | "stale" {
    // Another receiver sharing the trust dir may have changed the file since it was read here.
    this.refresh(device);
    const d = this.devices.get(device);
    if (!d || d.file.removed_at !== undefined) return "stale";
    if (d.file.keys.some((k) => k.fingerprint === r.fingerprint)) return "known";
    const last = d.file.keys.at(-1)!;
    if (d.file.retired || before({ boot: r.boot, seq: r.seq }, { boot: last.from_boot ?? -Infinity, seq: last.from_seq ?? 0 }) || (last.until_boot !== null && last.until_boot < r.boot)) return "stale";
    const now = Date.now();
    const file: DeviceTrustFile = {
      ...d.file,
      keys: [
        ...d.file.keys.slice(0, -1),
        { ...last, until_boot: r.boot, until_seq: r.from_seq - 1 },
        { public_key: r.public_key, fingerprint: r.fingerprint, from_boot: r.boot, from_seq: r.from_seq, until_boot: null, until_seq: undefined, added_at: now, added_by: `rotation event ${r.boot}:${r.seq}` },
      ],
    };
    this.store(file, { at: now, by: `device ${device} (rotation event ${r.boot}:${r.seq})`, device, action: "rotation", old_fingerprint: last.fingerprint, new_fingerprint: r.fingerprint, boot: r.boot });
    return "followed";
  }

  /** Marks a device retired at its farewell event; its last key ends there. False: already retired. */
  retire(device: string, at: Position): boolean {
    this.refresh(device);
    const d = this.devices.get(device);
    if (!d || d.file.retired) return false;
    const now = Date.now();
    const last = d.file.keys.at(-1)!;
    const file: DeviceTrustFile = { ...d.file, keys: [...d.file.keys.slice(0, -1), { ...last, until_boot: at.boot, until_seq: at.seq }], retired: { ...at, at: now } };
    this.store(file, { at: now, by: `device ${device} (farewell event ${at.boot}:${at.seq})`, device, action: "retire", old_fingerprint: last.fingerprint, new_fingerprint: null, boot: at.boot });
    return true;
  }

  /** Takes a device file in memory, and (persisting) writes it and logs the change. */
  private store(file: DeviceTrustFile, change: TrustChange): void {
    if (!this.persist) return this.set(file, "");
    const path = join(this.dir, "trusted", `${file.device}.json`);
    writeLogged(this.dir, path, JSON.stringify(file) + "\n", change);
    this.set(file, fileStamp(path));
    this.stamp = dirStamp(this.dir);
  }

  /** Every trusted device file (for `soc trust list`). */
  list(): DeviceTrustFile[] {
    this.maybeReload();
    return [...this.devices.values()].map((d) => d.file).sort((a, b) => (a.device < b.device ? -1 : 1));
  }

  /** Every change in the change log, each with a key from its content (`keyChanges`). */
  loggedChanges(): LoggedChange[] {
    return keyChanges(readChangeLines(this.dir));
  }

  /** Where the change log is (for messages). */
  get changeLogPath(): string {
    return changesPath(this.dir);
  }

  /** The change log's inode, size and change time: unchanged, so is its content ("" while it does not exist). */
  changeLogStamp(): string {
    try {
      const s = statSync(changesPath(this.dir), { bigint: true });
      return `${s.ino}:${s.size}:${s.ctimeNs}:${s.mtimeNs}`;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return "";
      throw e;
    }
  }

  private maybeReload(): void {
    if (!this.persist || Date.now() - this.checkedAt < this.reloadMs) return;
    this.checkedAt = Date.now();
    if (dirStamp(this.dir) !== this.stamp) this.reload();
  }

  reload(): void {
    const d = join(this.dir, "trusted");
    const next = new Map<string, Loaded>();
    const stamps = new Map<string, string>();
    this.stamp = dirStamp(this.dir);
    if (existsSync(d)) {
      let names: string[];
      try {
        names = readdirSync(d);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        throw new DaemonError("TRUST_INVALID", `trusted key directory ${d} cannot be read: ${err.code === "ENOTDIR" ? "it is a file, not a directory" : err.message}${err.code ? ` (${err.code})` : ""}`, { cause: e });
      }
      for (const f of names) {
        if (!f.endsWith(".json")) continue;
        const st = fileStamp(join(d, f));
        const file = readDeviceFile(join(d, f));
        next.set(file.device, loaded(file));
        stamps.set(file.device, st);
      }
    }
    this.devices = next;
    this.fileStamps = stamps;
    for (const device of next.keys()) this.generations.set(device, ++this.changes);
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
    makeDirs(d, "trusted key directory");
    const path = join(d, `${t.device}.json`);
    const now = Date.now();
    const by = operator();
    const entry: TrustedKey = { public_key: t.public_key, fingerprint: t.fingerprint, from_boot: null, until_boot: null, added_at: now, added_by: by };
    const cur = existsSync(path) ? readDeviceFile(path) : undefined;
    const last = cur?.keys.at(-1);
    // A retired device is re-admitted like a removed one: from the boot after its farewell.
    if (cur?.retired) {
      last!.until_boot = cur.retired.boot;
      cur.removed_at = cur.retired.at;
      delete cur.retired;
    }
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
    writeLogged(dir, path, JSON.stringify(file) + "\n", cur && last ? { at: now, by, device: t.device, action: "replace", old_fingerprint: cur.removed_at === undefined ? last.fingerprint : null, new_fingerprint: t.fingerprint, boot: entry.from_boot } : null);
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
    writeLogged(dir, path, JSON.stringify(cur) + "\n", { at: cur.removed_at, by: operator(), device, action: "remove", old_fingerprint: last.fingerprint, new_fingerprint: null, boot: untilBoot });
    return { device, fingerprint: last.fingerprint, until_boot: untilBoot };
  }
}

function loaded(file: DeviceTrustFile): Loaded {
  return {
    file,
    keys: file.keys.map((k) => ({
      key: publicKeyFromRaw(Buffer.from(k.public_key, "base64")),
      fingerprint: k.fingerprint,
      from: { boot: k.from_boot ?? -Infinity, seq: k.from_seq ?? 0 },
      until: { boot: k.until_boot ?? Infinity, seq: k.until_seq ?? Infinity },
    })),
  };
}

/** Whether position a comes before b. */
export function before(a: Position, b: Position): boolean {
  return a.boot < b.boot || (a.boot === b.boot && a.seq < b.seq);
}

/** A device trust file: the current format, or the single-key one `trust add` wrote before. */
function readDeviceFile(path: string): DeviceTrustFile {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new DaemonError("TRUST_INVALID", `trust file ${path} cannot be read: ${err.code === "EISDIR" ? "it is a directory" : err.message}${err.code ? ` (${err.code})` : ""}`, { cause: e });
  }
  let o: Partial<DeviceTrustFile> & { public_key?: string };
  try {
    o = JSON.parse(text) as typeof o;
  } catch {
    throw new DaemonError("TRUST_INVALID", `${path} is not JSON`);
  }
  if (typeof o !== "object" || o === null || Array.isArray(o)) throw new DaemonError("TRUST_INVALID", `${path} is not a JSON object (expected a device's trust file: "device", "alg" and "keys")`);
  if (!Array.isArray(o.keys)) {
    const t = parseTrust(text, path);
    return { device: t.device, alg: "ed25519", keys: [{ public_key: t.public_key, fingerprint: t.fingerprint, from_boot: null, until_boot: null, added_at: null, added_by: null }] };
  }
  if (!o.keys.length) throw new DaemonError("TRUST_INVALID", `${path}: "keys" is empty`);
  for (const [i, k] of o.keys.entries()) {
    if (typeof k !== "object" || k === null || Array.isArray(k)) throw new DaemonError("TRUST_INVALID", `${path}: "keys"[${i}] is not an object (expected "public_key", "fingerprint", "from_boot" and "until_boot")`);
    parseTrust(JSON.stringify({ device: o.device, alg: "ed25519", public_key: k.public_key, fingerprint: k.fingerprint }), path);
    if ((k.from_boot !== null && !Number.isSafeInteger(k.from_boot)) || (k.until_boot !== null && !Number.isSafeInteger(k.until_boot))) throw new DaemonError("TRUST_INVALID", `${path}: "from_boot"/"until_boot" must be whole numbers or null`);
    if ((k.from_seq !== undefined && !Number.isSafeInteger(k.from_seq)) || (k.until_seq !== undefined && !Number.isSafeInteger(k.until_seq))) throw new DaemonError("TRUST_INVALID", `${path}: "from_seq"/"until_seq" must be whole numbers when present`);
  }
  const r = o.retired;
  if (r !== undefined && (typeof r !== "object" || r === null || !Number.isSafeInteger(r.boot) || !Number.isSafeInteger(r.seq))) throw new DaemonError("TRUST_INVALID", `${path}: "retired" must name the farewell's boot and seq`);
  return o as DeviceTrustFile;
}

function changesPath(dir: string): string {
  return join(dir, "trusted", "changes.jsonl");
}

/**
 * The change log's complete lines. A last line without its newline is one being appended, or torn
 * by a power cut or a full disk while it was: not a change (the next append replaces it).
 */
function readChangeLines(dir: string): { line: string; change: TrustChange }[] {
  const p = changesPath(dir);
  if (!existsSync(p)) return [];
  const text = readFileSync(p, "utf8");
  return text
    .slice(0, text.lastIndexOf("\n") + 1)
    .split("\n")
    .map((line, i) => ({ line, i }))
    .filter(({ line }) => line.trim())
    .map(({ line, i }) => {
      try {
        return { line, change: JSON.parse(line) as TrustChange };
      } catch {
        throw new DaemonError("TRUST_INVALID", `${p} line ${i + 1} is not JSON`);
      }
    });
}

/**
 * Each change with a key of its own, from its line's content (and, for equal lines, which of them
 * it is), so a reader can tell what it has seen by content, not by position: a log shortened or
 * rewritten by hand neither hides a later change nor repeats one.
 */
function keyChanges(lines: { line: string; change: TrustChange }[]): LoggedChange[] {
  const n = new Map<string, number>();
  return lines.map(({ line, change }) => {
    const h = createHash("sha256").update(line.trim()).digest("hex").slice(0, 32);
    const k = n.get(h) ?? 0;
    n.set(h, k + 1);
    return { key: `${h}.${k}`, change };
  });
}

/**
 * Writes a device's trust file and logs the change, both or neither: a change missing from the log
 * would never reach the SOC as a `trust_changed` line, so when the log cannot take it the file is
 * put back as it was.
 */
function writeLogged(dir: string, path: string, text: string, change: TrustChange | null): void {
  const before = existsSync(path) ? readFileSync(path) : null;
  writeFileAtomic(path, text, 0o644);
  if (!change) return;
  try {
    logChange(dir, change);
  } catch (e) {
    try {
      if (before === null) rmSync(path, { force: true });
      else writeFileAtomic(path, before, 0o644);
    } catch (u) {
      throw new DaemonError("PATH_UNUSABLE", `${describeError(e)}; ${path} could not be put back either (${describeError(u)}): the change to ${change.device} is in effect but not in the change log`, { cause: e });
    }
    throw e;
  }
}

/**
 * Appends one change, whole or not at all: a torn tail left by an earlier append is cut first, and
 * an append the disk cannot take is cut back (PATH_UNUSABLE naming the log), so a line never runs
 * into the next one and the log stays readable.
 */
function logChange(dir: string, c: TrustChange): void {
  const p = changesPath(dir);
  let fd: number;
  try {
    fd = openSync(p, "a+", 0o644);
  } catch (e) {
    throw pathUnusable(p, "trust change log", e as NodeJS.ErrnoException);
  }
  try {
    let size = fstatSync(fd).size;
    if (size > 0) {
      const last = Buffer.alloc(1);
      readSync(fd, last, 0, 1, size - 1);
      if (last[0] !== 0x0a) {
        const text = readFileSync(p);
        size = text.lastIndexOf(0x0a) + 1;
        ftruncateSync(fd, size);
      }
    }
    try {
      writeAll(fd, JSON.stringify(c) + "\n");
      fsyncSync(fd);
    } catch (e) {
      ftruncateSync(fd, size);
      throw pathUnusable(p, "trust change log", e as NodeJS.ErrnoException);
    }
  } finally {
    closeSync(fd);
  }
}

/** Who ran the command: the user (the one behind sudo, if any) and the host. */
function operator(): string {
  const u = process.env.SUDO_USER ?? userInfo().username;
  return `${u}@${hostname()}`;
}

/** Changes when the file is replaced (an atomic write renames a new inode over it). */
function fileStamp(path: string): string {
  try {
    const st = statSync(path);
    return `${st.ino}:${st.mtimeMs}:${st.size}`;
  } catch {
    return "";
  }
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
