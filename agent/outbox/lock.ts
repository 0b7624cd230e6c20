import Database from "better-sqlite3";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { dirname } from "node:path";
import { DaemonError } from "../core/errors";
import { giveToDirOwner, makeDirs } from "../core/dirs";

/** OUTBOX_LOCKED from the lock, with the holder it names (undefined: it names none). */
export class OutboxLocked extends DaemonError {
  constructor(
    readonly outboxPath: string,
    readonly holder: OutboxHolder | undefined,
    cause: unknown,
  ) {
    super("OUTBOX_LOCKED", `the outbox ${outboxPath} is held by ${describeHolder(holder)}${holder ? "" : `, which does not name itself in ${lockPath(outboxPath)}`}`, { cause });
  }

  /** The same refusal, followed by what to do about it. */
  advise(advice: string): DaemonError {
    return new DaemonError("OUTBOX_LOCKED", `${this.message}; ${advice}`, { cause: this });
  }
}

/** Who holds an outbox: the daemon, or a command that opens it offline (`what`). */
export interface OutboxHolder {
  what: string;
  pid: number;
  host: string;
  since: number;
}

/** The daemon's name in the lock's `owner` row; a command names itself (`gatewarden outbox check`). */
export const DAEMON = "daemon";

/**
 * One owner per outbox: whoever opens the outbox file (the daemon for as long as it runs, a
 * command that opens it offline for as long as it needs it) first holds an exclusive lock on
 * `<outbox>.lock`, and writes itself into its `owner` row. The lock is SQLite's own (POSIX
 * advisory locks, also between connections of one process), taken by a write in EXCLUSIVE
 * locking mode and never released until `release()` or the process ends, so a crashed holder
 * leaves no stale lock behind. A second opener is refused with OUTBOX_LOCKED naming the holder
 * (`holder` reads the row while the lock is held), instead of forking the device's chain.
 */
export class OutboxLock {
  private readonly db: Database.Database;

  /** `waitMs`: how long to wait for a holder to let go (0: answer at once). */
  constructor(
    readonly outboxPath: string,
    what: string = DAEMON,
    waitMs = 0,
  ) {
    const path = lockPath(outboxPath);
    makeDirs(dirname(outboxPath), "outbox directory");
    let db: Database.Database | undefined;
    try {
      db = new Database(path, { timeout: waitMs });
      giveToDirOwner(path);
      db.pragma("locking_mode = EXCLUSIVE");
      // Rebuilt on every take (the row is one page): an older lock file has no `what` column.
      db.exec("BEGIN IMMEDIATE; DROP TABLE IF EXISTS owner; CREATE TABLE owner (id INTEGER PRIMARY KEY CHECK (id = 1), what TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL, since INTEGER NOT NULL)");
      db.prepare("INSERT INTO owner (id, what, pid, host, since) VALUES (1, ?, ?, ?, ?)").run(what, process.pid, hostname(), Date.now());
      db.exec("COMMIT");
    } catch (e) {
      db?.close();
      if (isBusy(e)) throw new OutboxLocked(outboxPath, OutboxLock.holder(outboxPath), e);
      throw new DaemonError("OUTBOX_OPEN", `cannot lock the outbox ${outboxPath} (${path}): ${(e as Error).message}`, { cause: e });
    }
    this.db = db;
  }

  /**
   * Who holds the outbox's lock now, from its `owner` row; undefined when nobody does (a row
   * left by an ended holder is not read) or the row cannot be read. The holder keeps the file
   * locked against SQLite readers, so the row is read from a copy of the file's bytes (the
   * holder wrote it once, when it took the lock).
   */
  static holder(outboxPath: string): OutboxHolder | undefined {
    const path = lockPath(outboxPath);
    try {
      const probe = new Database(path, { timeout: 0, readonly: true, fileMustExist: true });
      try {
        probe.prepare("SELECT 1 FROM sqlite_master LIMIT 1").get();
        return undefined; // readable: nobody holds it
      } catch (e) {
        if (!isBusy(e)) return undefined;
      } finally {
        probe.close();
      }
      const copy = new Database(readFileSync(path));
      try {
        // A lock taken by an older version has no `what`: only the daemon took it then.
        const row = copy.prepare("SELECT * FROM owner WHERE id = 1").get() as (Omit<OutboxHolder, "what"> & { what?: string }) | undefined;
        return row && typeof row.pid === "number" ? { what: row.what ?? DAEMON, pid: row.pid, host: String(row.host), since: Number(row.since) } : undefined;
      } finally {
        copy.close();
      }
    } catch {
      return undefined; // no lock file, an older one without `what`, a torn copy: holder unknown
    }
  }

  release(): void {
    if (this.db.open) this.db.close();
  }
}

export const lockPath = (outboxPath: string): string => `${outboxPath}.lock`;

/** "the Gatewarden daemon (pid 812 on gw-7, since …)", or how the holder is unknown. */
export function describeHolder(h: OutboxHolder | undefined): string {
  if (!h) return "another process";
  const who = h.what === DAEMON ? "the Gatewarden daemon" : `\`${h.what}\``;
  return `${who} (pid ${h.pid} on ${h.host}, since ${new Date(h.since).toISOString()})`;
}

/** SQLite's answer when another connection holds the file. */
export function isBusy(e: unknown): boolean {
  return /^SQLITE_(BUSY|LOCKED)/.test(String((e as { code?: unknown }).code));
}
