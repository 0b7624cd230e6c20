import { accessSync, constants, statSync } from "node:fs";
import { dirname } from "node:path";
import { dirOwner, existing } from "./core/dirs";
import { DaemonError, pathUnusable as unusable } from "./core/errors";

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

/**
 * The daemon as root over the service user's state directory (`sudo gatewarden run` on an
 * installed gateway): what it made there (detector state, write windows, the control socket)
 * would be root's, and the service, run as its own user, could not use it afterwards. Refused
 * before anything is opened; the service user's daemon is started by systemd.
 */
export function refuseRootOverServiceState(outboxPath: string): void {
  const dir = dirname(outboxPath);
  const owner = dirOwner(dir);
  if (!owner) return;
  throw new DaemonError(
    "WRONG_USER",
    `the daemon would run as root, but its state directory ${dir} (buffer.path) belongs to uid ${owner.uid}: files made now would be root's, and the service could not use them afterwards. ` +
      `Start the service (systemctl start gatewarden; journalctl -fu gatewarden shows its log), or run it as that user (sudo -u '#${owner.uid}' gatewarden run ...)`,
  );
}
