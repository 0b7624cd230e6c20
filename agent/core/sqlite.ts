/**
 * A SQLite file in WAL mode at a chosen `synchronous` level: FULL fsyncs every commit (state
 * that must not come back after a power cut), NORMAL only at checkpoints (state a restart may
 * lose the last commits of). The one place the daemon's small state files are opened.
 */
import Database from "better-sqlite3";
import { DaemonError, pathUnusable } from "./errors";

export function openWalDatabase(path: string, synchronous: "NORMAL" | "FULL"): Database.Database {
  const db = new Database(path);
  try {
    db.pragma("journal_mode = WAL");
    db.pragma(`synchronous = ${synchronous}`);
  } catch (e) {
    db.close();
    throw e;
  }
  return db;
}

/** What a SQLite failure of the file itself means, in words (by the code's family). */
const SQLITE_WHY: [RegExp, string][] = [
  [/^SQLITE_FULL/, "the disk is full"],
  [/^SQLITE_IOERR/, "the storage reports an I/O error"],
  [/^SQLITE_READONLY/, "it cannot be written (a read-only file or file system)"],
  [/^SQLITE_CANTOPEN/, "it cannot be opened (it is a directory, or its directory cannot be written)"],
  [/^SQLITE_PERM/, "permission denied"],
  [/^SQLITE_NOTADB/, "it is not a SQLite database"],
  [/^SQLITE_CORRUPT/, "the database is damaged"],
];

/**
 * PATH_UNUSABLE naming `what` and `path` for a SQLite failure of the file itself (full disk,
 * I/O error, not a database, ...), with the SQLite code; any other error is returned as it is.
 */
export function sqliteFileError(path: string, what: string, e: unknown): unknown {
  const code = String((e as { code?: unknown }).code ?? "");
  const why = SQLITE_WHY.find(([re]) => re.test(code))?.[1];
  if (why === undefined || e instanceof DaemonError) return e;
  return pathUnusable(path, what, `${why} (${code})`);
}
