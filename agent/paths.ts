import { accessSync, constants } from "node:fs";
import { dirname } from "node:path";
import { existing } from "./core/dirs";
import { pathUnusable as unusable } from "./core/errors";

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
