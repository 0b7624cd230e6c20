import { mkdirSync, statSync } from "node:fs";
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
    }
  }
}

