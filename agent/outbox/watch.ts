import { existsSync, renameSync, rmSync, statSync } from "node:fs";
import type { Logger } from "pino";
import { describeError } from "../core/errors";
import { OcsfClass } from "../core/events";
import type { EventDraft } from "../core/events";
import { writeNewFile } from "../core/secret-files";
import type { Outbox } from "./store";

type Stamp = { db: number | undefined; wal: number | undefined };

/** A failed save is tried again at most this often: each try copies the whole open database. */
const RETRY_MS = 10_000;

function inode(file: string): number | undefined {
  try {
    return statSync(file).ino;
  } catch {
    return undefined;
  }
}

/**
 * Notices the outbox's files changing under the running daemon (compares inodes): a deleted
 * or replaced WAL, a deleted or replaced database file. SQLite keeps writing to the files it
 * has open, so what it committed is still reachable through the connection and is saved:
 * a lost WAL is checkpointed into the database and a new one started; a lost database file is
 * written back from the open connection. A replacing file is moved aside (kept), never used.
 * Each finding is reported as a signed event. A save that fails (a full card) leaves no partial
 * file, is tried again every 10 s and reported once; its success later is reported too.
 */
export class OutboxWatch {
  private stamp: Stamp;
  /** The last save failed: what changed, for the report when a later try succeeds. */
  private failing: string | undefined;
  /** No new try before this time after a failed one (a write-back copies the whole database). */
  private retryAt = 0;

  constructor(
    private readonly outbox: Outbox,
    private readonly log: Logger,
    private readonly report: (d: EventDraft) => void,
  ) {
    this.stamp = this.read();
  }

  private read(): Stamp {
    return { db: inode(this.outbox.path), wal: inode(`${this.outbox.path}-wal`) };
  }

  /** Checks the files once; saves and reports what changed. Never throws. */
  check(now = Date.now()): void {
    if (this.outbox.path === ":memory:" || !this.outbox.db.open) return;
    const cur = this.read();
    const was = this.stamp;
    const dbChanged = cur.db !== was.db;
    // A WAL first created after the start is not a change.
    const walChanged = was.wal !== undefined && cur.wal !== was.wal;
    if (!dbChanged && !walChanged) {
      this.stamp = cur;
      return;
    }
    if (this.failing !== undefined && now < this.retryAt) return;
    const what = dbChanged ? (cur.db === undefined ? "database file was deleted" : "database file was replaced by another file") : cur.wal === undefined ? "WAL was deleted" : "WAL was replaced by another file";
    const stamp = new Date(now).toISOString().replace(/[:.]/g, "-");
    let outcome: string;
    let ok = true;
    try {
      outcome = dbChanged ? this.restoreDatabase(cur.db !== undefined, stamp) : this.restartWal(cur.wal !== undefined, stamp);
    } catch (e) {
      ok = false;
      outcome = `saving it failed (${describeError(e)}): events committed since the last checkpoint may be lost when the daemon stops`;
    }
    if (!ok) {
      // Tried again at the next check (the files are still not as the daemon left them).
      this.retryAt = now + RETRY_MS;
      if (this.failing !== undefined) return;
      this.failing = what;
      this.tell(what, outcome, false);
      return;
    }
    this.stamp = this.read();
    const earlier = this.failing;
    this.failing = undefined;
    this.tell(earlier ?? what, earlier === undefined ? outcome : `after an earlier failure, ${outcome}`, true);
  }

  private tell(what: string, outcome: string, saved: boolean): void {
    this.log.error({ what, outcome }, "The outbox's files changed under the running daemon.");
    this.report({
      class: "system",
      severity: 5,
      ocsf: {
        class_uid: OcsfClass.ApplicationLifecycle,
        activity_id: 99,
        message: `The outbox's ${what} while the daemon was running: ${outcome}`,
        unmapped: { error_type: "outbox_files_changed", stage: "recording", outbox: { what, saved, path: this.outbox.path } },
      },
    });
  }

  /** The WAL is gone or replaced: its content (still open) goes into the database, then a new WAL. */
  private restartWal(replaced: boolean, stamp: string): string {
    const wal = `${this.outbox.path}-wal`;
    const keptAt = `${wal}.foreign-${stamp}`;
    if (replaced) renameSync(wal, keptAt);
    const db = this.outbox.db;
    db.pragma("wal_checkpoint(TRUNCATE)");
    db.pragma("journal_mode = DELETE");
    db.pragma("journal_mode = WAL");
    this.outbox.forgetWal();
    return `its committed events were checkpointed into the database and a new WAL started; nothing was lost${replaced ? ` (the replacing file is kept at ${keptAt})` : ""}`;
  }

  /** The database file is gone or replaced: write the open database back to its path and reopen. */
  private restoreDatabase(replaced: boolean, stamp: string): string {
    const path = this.outbox.path;
    const image = this.outbox.db.serialize();
    const keptAt = `${path}.foreign-${stamp}`;
    if (replaced) for (const s of ["", "-wal", "-shm"]) if (existsSync(path + s)) renameSync(path + s, keptAt + s);
    const tmp = `${path}.restore`;
    rmSync(tmp, { force: true });
    // Whole or nothing: on a full card the partial copy is removed (PATH_UNUSABLE) and the
    // connection stays open, to be written back at the next check.
    writeNewFile(tmp, image, 0o600);
    this.outbox.db.close();
    renameSync(tmp, path);
    this.outbox.reopen();
    return `the open database (${image.length} bytes) was written back and reopened; nothing was lost${replaced ? ` (the replacing file is kept at ${keptAt})` : ""}`;
  }
}
