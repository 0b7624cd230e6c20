import { accessSync, constants, mkdirSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { DaemonError, pathUnusable as unusable } from "./core/errors";

/** The nearest existing ancestor of `path` (or `path` itself), and the levels missing below it. */
function existing(path: string, what: string): { dir: string; missing: string[] } {
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
    }
  }
}

/**
 * A data file the config names (outbox, state files, control socket): its directory must exist,
 * or be one new directory inside an existing, writable one. A mistyped path is refused here
 * instead of creating directories anywhere.
 */
export function checkDataPath(file: string, what: string, maxNewDirs = 1): void {
  const { dir, missing } = existing(dirname(file), what);
  if (missing.length > maxNewDirs) throw unusable(file, what, `${missing[0]} does not exist (only the last ${maxNewDirs === 1 ? "directory" : `${maxNewDirs} directories`} of the path would be created)`);
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (e) {
    throw unusable(file, what, e as NodeJS.ErrnoException);
  }
}
