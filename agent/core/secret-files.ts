import { createPrivateKey, type KeyObject } from "node:crypto";
import { closeSync, fchmodSync, fchownSync, fstatSync, fsyncSync, lstatSync, openSync, readFileSync, realpathSync, renameSync, rmSync, statSync, writeSync, existsSync } from "node:fs";
import { dirname } from "node:path";
import { dirOwner } from "./dirs";
import { DaemonError, pathUnusable } from "./errors";

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
  if (!st.isFile()) throw new DaemonError("KEY_INVALID", `${what} ${path} is ${st.isDirectory() ? "a directory" : "not a regular file"}; name the key file`);
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


/**
 * Writes all of `data` at `position` (or the file's offset). A write(2) on a full filesystem may
 * write part and return its length, not fail; the next one fails with ENOSPC. A single
 * `writeSync` would leave the rest unwritten without a word.
 */
export function writeAll(fd: number, data: string | Buffer, position?: number): void {
  const buf = typeof data === "string" ? Buffer.from(data) : data;
  for (let off = 0; off < buf.length; ) {
    const n = writeSync(fd, buf, off, buf.length - off, position === undefined ? null : position + off);
    if (n <= 0) throw Object.assign(new Error("write made no progress"), { code: "EIO" });
    off += n;
  }
}

/** Opens `file` to write `path` (itself or its temp file); PATH_UNUSABLE naming `path` when it cannot. */
function openFor(path: string, file: string, flags: string, mode: number): number {
  try {
    return openSync(file, flags, mode);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw pathUnusable(path, "file", `${existsSync(dirname(file)) ? "this file system does not allow creating it" : "its directory does not exist"} (ENOENT)`);
    throw pathUnusable(path, "file", e as NodeJS.ErrnoException);
  }
}

/**
 * Writes and fsyncs the whole file at `fd`, then closes it; on failure, removes `written` and
 * throws PATH_UNUSABLE naming `path` (a full or failing card is not an internal error).
 */
function writeWhole(fd: number, written: string, path: string, data: string | Buffer): void {
  try {
    writeAll(fd, data);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(written, { force: true });
    throw pathUnusable(path, "file", e as NodeJS.ErrnoException);
  }
  closeSync(fd);
}

/** Creates a new file (never overwrites) with the given mode, fsynced; nothing is left if that fails. */
export function writeNewFile(path: string, data: string | Buffer, mode: number): void {
  if (existsSync(path)) throw new DaemonError("KEY_EXISTS", `${path} exists; refusing to overwrite it`);
  const fd = openFor(path, path, "wx", mode);
  const owner = dirOwner(dirname(path));
  if (owner) keepOwnerAndMode(fd, path, path, { ...owner, mode });
  writeWhole(fd, path, path, data);
}

/** Creates new files (a key pair) all or none: when one cannot be written, those written before it are removed. */
export function writeNewFiles(files: readonly { path: string; data: string | Buffer; mode: number }[]): void {
  const done: string[] = [];
  try {
    for (const f of files) {
      writeNewFile(f.path, f.data, f.mode);
      done.push(f.path);
    }
  } catch (e) {
    for (const p of done) rmSync(p, { force: true });
    throw e;
  }
}

/**
 * Replaces a file atomically (temp file, fsync, rename): the old or the whole new content, never
 * a torn one; a failed write leaves the old file and no temp file. A new file gets `mode`; an
 * existing one keeps its own mode, owner and group (`sudo gatewarden config set` on a config
 * that is root:gatewarden 0640 must leave the daemon able to read it). When its owner or group
 * cannot be kept (not root, and not ours), nothing is written: PATH_UNUSABLE naming the file.
 */
export function writeFileAtomic(path: string, data: string | Buffer, mode: number): void {
  const file = replaceable(path);
  if (file === undefined) {
    // A character device (`--out /dev/null`): written to, never renamed over.
    const fd = openFor(path, path, "w", mode);
    try {
      writeAll(fd, data);
    } catch (e) {
      throw pathUnusable(path, "file", e as NodeJS.ErrnoException);
    } finally {
      closeSync(fd);
    }
    return;
  }
  const tmp = `${file}.tmp-${process.pid}`;
  const owner = dirOwner(dirname(file));
  const was = existing(file) ?? (owner ? { ...owner, mode } : undefined);
  const fd = openFor(path, tmp, "w", was ? 0o600 : mode);
  if (was) keepOwnerAndMode(fd, tmp, path, was);
  writeWhole(fd, tmp, path, data);
  try {
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw pathUnusable(path, "file", e as NodeJS.ErrnoException);
  }
}

/** The existing regular file's mode and ownership (undefined: a new file). */
function existing(file: string): { mode: number; uid: number; gid: number } | undefined {
  try {
    const st = statSync(file);
    return { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
  } catch {
    return undefined;
  }
}

/**
 * Gives the temp file the replaced file's owner, group and mode (exactly: no umask), before any
 * content is in it; on failure removes it and throws PATH_UNUSABLE naming `path`.
 */
function keepOwnerAndMode(fd: number, tmp: string, path: string, was: { mode: number; uid: number; gid: number }): void {
  try {
    const st = fstatSync(fd);
    if (st.uid !== was.uid || st.gid !== was.gid) fchownSync(fd, was.uid, was.gid);
    fchmodSync(fd, was.mode);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    const code = (e as NodeJS.ErrnoException).code ?? "error";
    throw pathUnusable(path, "file", `it belongs to uid ${was.uid} gid ${was.gid}, and a replacement written by uid ${process.getuid?.() ?? "?"} could not keep that (${code}); nothing was changed: run this as the file's owner or as root`);
  }
}

/**
 * The file a rename may replace for `path`: itself, or through its symbolic links what they
 * point to (a linked config stays linked); undefined for a character device, which is written
 * in place. A directory, FIFO, socket or block device is PATH_UNUSABLE: renaming over it would
 * remove it (as root, `--out /dev/full` replaced the device with a file).
 */
function replaceable(path: string): string | undefined {
  let file = path;
  try {
    file = realpathSync(path);
  } catch {
    return path; // a new file (or a dangling link, replaced as a file)
  }
  const st = lstatSync(file);
  if (st.isFile()) return file;
  if (st.isCharacterDevice()) return undefined;
  throw pathUnusable(path, "file", st.isDirectory() ? "it is a directory (EISDIR)" : "it is not a regular file (a FIFO, socket or block device)");
}
