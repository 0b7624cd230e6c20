import { chownSync, mkdirSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { DaemonError, pathUnusable as unusable } from "./errors";

/** The nearest existing ancestor of `path` (or `path` itself), and the levels missing below it. */
export function existing(path: string, what: string): { dir: string; missing: string[] } {
  const missing: string[] = [];
  let p = resolve(path);
  for (;;) {
    try {
      const st = statSync(p);
      if (!st.isDirectory()) throw unusable(path, what, `${p} is a file, not a directory`);
      return { dir: p, missing };
    } catch (e) {
      if (e instanceof DaemonError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "ENOENT") throw unusable(path, what, e as NodeJS.ErrnoException);
      missing.unshift(p);
      const up = dirname(p);
      if (up === p) throw unusable(path, what, e as NodeJS.ErrnoException);
      p = up;
    }
  }
}

/**
 * Creates a directory and its missing parents one level at a time (Node's recursive mkdir loops
 * for ever under /proc), each failure a PATH_UNUSABLE naming the path and why.
 */
export function makeDirs(path: string, what: string, mode = 0o700): void {
  for (const p of existing(path, what).missing) {
    try {
      mkdirSync(p, { mode });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw unusable(path, what, e as NodeJS.ErrnoException);
      continue;
    }
    giveToDirOwner(p); // made by root in the service user's directory: the service user's
  }
}

/**
 * Who a file root creates in `dir` belongs to: the directory's owner and group when that is
 * another user (the service user's state directory, where `sudo gatewarden integrity accept`
 * wrote a manifest the daemon could not read), else undefined (the creator, as usual). Only as
 * root: another user cannot give a file away.
 */
export function dirOwner(dir: string): { uid: number; gid: number } | undefined {
  if (process.geteuid?.() !== 0) return undefined;
  try {
    const st = statSync(dir);
    return st.uid !== 0 ? { uid: st.uid, gid: st.gid } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Gives files and directories root created (or left) in another user's directory to that user
 * (see dirOwner): the outbox, its lock and head copy when a command wrote them before the daemon
 * ever ran, and directories made for state.
 * Best effort: a file that cannot be given away stays as it is, and the daemon names it.
 */
export function giveToDirOwner(path: string): void {
  const owner = dirOwner(dirname(path));
  if (!owner) return;
  try {
    const st = statSync(path);
    if (st.uid === 0 && (st.isFile() || st.isDirectory())) chownSync(path, owner.uid, owner.gid);
  } catch {
    /* gone, or not ours to change */
  }
}

/** A file's owner, group and permission bits in words (`uid 0 gid 998 mode 0640`); undefined when it cannot be looked at. */
export function ownershipOf(path: string): string | undefined {
  try {
    const st = statSync(path);
    return `uid ${st.uid} gid ${st.gid} mode 0${(st.mode & 0o777).toString(8)}`;
  } catch {
    return undefined;
  }
}
