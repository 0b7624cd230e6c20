/**
 * Detector state in SQLite, by detector instance id (Telegraf StatefulPlugin: state saved as
 * JSON by instance id), so a restart does not re-learn. One row per instance; a save replaces
 * every row of the snapshot in one transaction.
 */
import type Database from "better-sqlite3";
import { openWalDatabase } from "../core/sqlite";
import { DaemonError } from "../core/errors";
import type { EngineSnapshot } from "../../detectors/engine";

export class DetectorStateStore {
  private readonly db: Database.Database;
  private readonly upsert: Database.Statement;
  private readonly all: Database.Statement;
  private readonly clearStmt: Database.Statement;

  /** Opens (or creates) the database. Pass an open database to share a file with other tables. */
  constructor(file: string | Database.Database) {
    try {
      this.db = typeof file === "string" ? openWalDatabase(file, "NORMAL") : file;
      this.db.exec(`CREATE TABLE IF NOT EXISTS detector_state (
        id TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        state TEXT NOT NULL,
        saved_ms INTEGER NOT NULL
      ) STRICT`);
    } catch (e) {
      throw new DaemonError("DETECTOR_STATE", `cannot open the detector state store: ${(e as Error).message}`, { cause: e });
    }
    this.upsert = this.db.prepare(
      "INSERT INTO detector_state (id, version, state, saved_ms) VALUES (?, ?, ?, ?) " +
        "ON CONFLICT(id) DO UPDATE SET version = excluded.version, state = excluded.state, saved_ms = excluded.saved_ms",
    );
    this.all = this.db.prepare("SELECT id, version, state FROM detector_state");
    this.clearStmt = this.db.prepare("DELETE FROM detector_state");
  }

  /** Saves a snapshot atomically. `savedMs` is the time of the last reading it reflects. */
  save(snap: EngineSnapshot, savedMs: number): void {
    const tx = this.db.transaction((entries: [string, { version: number; state: unknown }][]) => {
      for (const [id, e] of entries) this.upsert.run(id, e.version, JSON.stringify(e.state), Math.trunc(savedMs));
    });
    tx(Object.entries(snap));
  }

  /** Everything saved, as a snapshot for `DetectionEngine.restore`. Throws DETECTOR_STATE on unreadable rows. */
  load(): EngineSnapshot {
    const out: EngineSnapshot = {};
    for (const row of this.all.all() as { id: string; version: number; state: string }[]) {
      try {
        out[row.id] = { version: row.version, state: JSON.parse(row.state) as unknown };
      } catch (e) {
        throw new DaemonError("DETECTOR_STATE", `saved state of ${row.id} is not valid JSON`, { cause: e });
      }
    }
    return out;
  }

  clear(): void {
    this.clearStmt.run();
  }

  close(): void {
    this.db.close();
  }
}
