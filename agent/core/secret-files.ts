import { createPrivateKey, type KeyObject } from "node:crypto";
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, statSync, writeSync, existsSync } from "node:fs";
import { DaemonError } from "./errors";

/**
 * Private key files must be owner-only. A key readable or writable by group or others is
 * refused: the daemon will not start with it.
 */
export function readSecretFile(path: string, what: string): Buffer {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new DaemonError("KEY_INVALID", `${what} ${path} cannot be read (${(e as NodeJS.ErrnoException).code ?? "error"})`);
  }
  if ((st.mode & 0o077) !== 0) {
    throw new DaemonError(
      "KEY_PERMISSIONS",
      `${what} ${path} has mode ${(st.mode & 0o777).toString(8).padStart(4, "0")}; it must be readable by its owner only (chmod 600 ${path})`,
    );
  }
  return readFileSync(path);
}

/** A TLS private key: owner-only (KEY_PERMISSIONS) and a key (KEY_INVALID), never a sealing key. */
export function readTlsKey(path: string, what: string): { bytes: Buffer; key: KeyObject } {
  const bytes = readSecretFile(path, what);
  try {
    return { bytes, key: createPrivateKey(bytes) };
  } catch {
    const hint = /"secret_key"/.test(bytes.toString("utf8")) ? "; it is a SOC sealing key (soc keys init), not a TLS key" : "";
    throw new DaemonError("KEY_INVALID", `${what} ${path} is not a PEM or DER private key${hint}`);
  }
}


/** Creates a new file (never overwrites) with the given mode, fsynced. */
export function writeNewFile(path: string, data: string | Buffer, mode: number): void {
  if (existsSync(path)) throw new DaemonError("KEY_EXISTS", `${path} exists; refusing to overwrite it`);
  const fd = openSync(path, "wx", mode);
  try {
    writeSync(fd, typeof data === "string" ? Buffer.from(data) : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Replaces a file atomically (temp file, fsync, rename), keeping the given mode. */
export function writeFileAtomic(path: string, data: string | Buffer, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, "w", mode);
  try {
    writeSync(fd, typeof data === "string" ? Buffer.from(data) : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}
