import Database from "better-sqlite3";
import { mkdirSync } from "node:fs";
import { hostname } from "node:os";
import { dirname } from "node:path";
import { DaemonError } from "../core/errors";

/**
 * One owner per outbox: the daemon holds an exclusive lock on `<outbox>.lock` for as long as
 * it runs. The lock is SQLite's own (POSIX advisory locks, also between connections of one
 * process), taken by a write in EXCLUSIVE locking mode and never released until `release()`
 * or the process ends, so a crashed daemon leaves no stale lock behind. A second daemon on
 * the same files refuses to start with OUTBOX_LOCKED instead of forking the device's chain.
 */
export class OutboxLock {
  private readonly db: Database.Database;

  constructor(readonly outboxPath: string) {
    const path = `${outboxPath}.lock`;
    mkdirSync(dirname(outboxPath), { recursive: true, mode: 0o700 });
    let db: Database.Database | undefined;
    try {
      db = new Database(path, { timeout: 0 });
      db.pragma("locking_mode = EXCLUSIVE");
      db.exec("CREATE TABLE IF NOT EXISTS owner (id INTEGER PRIMARY KEY CHECK (id = 1), pid INTEGER NOT NULL, host TEXT NOT NULL, since INTEGER NOT NULL)");
      db.prepare("INSERT OR REPLACE INTO owner (id, pid, host, since) VALUES (1, ?, ?, ?)").run(process.pid, hostname(), Date.now());
    } catch (e) {
      db?.close();
      if ((e as { code?: string }).code?.startsWith("SQLITE_BUSY") || (e as { code?: string }).code?.startsWith("SQLITE_LOCKED")) {
        throw new DaemonError("OUTBOX_LOCKED", `the outbox ${outboxPath} is in use by another Gatewarden daemon (it holds ${path}); stop it first, or give this one its own buffer.path and keys`);
      }
      throw new DaemonError("OUTBOX_OPEN", `cannot lock the outbox ${outboxPath} (${path}): ${(e as Error).message}`, { cause: e });
    }
    this.db = db;
  }

  release(): void {
    if (this.db.open) this.db.close();
  }
}
