import { isDaemonError } from "../core/errors";
import { DAEMON, OutboxLock, OutboxLocked } from "./lock";
import { Outbox } from "./store";

export interface OfflineOutbox {
  outbox: Outbox;
  close(): void;
}

/**
 * Opens the outbox for a command that works on the file itself (`what`, e.g. `gatewarden outbox
 * check`): takes the outbox's lock naming the command, then opens the file, both without
 * waiting. Held by someone else, it answers OUTBOX_LOCKED at once, naming the holder and what
 * to do instead. A lock that cannot be taken for another reason (read-only storage) does not
 * stop the command: opening the file says what is wrong with it.
 */
export function openOffline(path: string, maxBytes: number, what: string): OfflineOutbox {
  let lock: OutboxLock | undefined;
  try {
    lock = new OutboxLock(path, what);
  } catch (e) {
    if (e instanceof OutboxLocked) throw e.advise(advice(e.holder?.what));
    if (isDaemonError(e, "OUTBOX_LOCKED")) throw e;
  }
  let outbox: Outbox;
  try {
    outbox = new Outbox(path, maxBytes);
  } catch (e) {
    lock?.release();
    throw e;
  }
  return {
    outbox,
    close: () => {
      outbox.close();
      lock?.release();
    },
  };
}

function advice(holder: string | undefined): string {
  if (holder === DAEMON) return "ask the running daemon instead (`gatewarden status`: outbox depth, age and storage state; `gatewarden events tail`), or stop it first (`systemctl stop gatewarden`) and run this again";
  if (holder) return "run this again once it has ended";
  return "run this again once it has ended (a Gatewarden older than this one, or a sqlite3 shell)";
}
