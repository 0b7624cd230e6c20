import { accessSync, constants, statSync } from "node:fs";
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

/** The longest path a Unix socket can be bound at on Linux (sun_path's 108 bytes, less the NUL). */
export const MAX_SOCKET_PATH_BYTES = 107;

/**
 * A socket path the daemon will listen on (`control.socket`): short enough to bind (a longer one
 * would be cut short, the socket made at another path), and nothing but a socket already there. A
 * socket left by a killed daemon is removed at start; a directory or file is not, so it is named.
 */
export function checkSocketPath(path: string, what: string): void {
  const bytes = Buffer.byteLength(path);
  if (bytes > MAX_SOCKET_PATH_BYTES) throw unusable(path, what, `it is ${bytes} bytes long, and a Unix socket's path can be at most ${MAX_SOCKET_PATH_BYTES}`);
  let st: ReturnType<typeof statSync> | undefined;
  try {
    st = statSync(path);
  } catch {
    return; // nothing there (yet): checkDataPath says whether it can be made
  }
  if (!st.isSocket()) throw unusable(path, what, `${st.isDirectory() ? "a directory" : "a file that is not a socket"} is there (it is not removed: move it, or choose another path)`);
}
