/**
 * A SQLite file in WAL mode at a chosen `synchronous` level: FULL fsyncs every commit (state
 * that must not come back after a power cut), NORMAL only at checkpoints (state a restart may
 * lose the last commits of). The one place the daemon's small state files are opened.
 */
import Database from "better-sqlite3";

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
