/**
 * The receiver's own runs. While it is down nothing is verified, acknowledged or reported, and
 * a receiver killed (the OOM killer, SIGKILL), crashed or cut off by its host's power loss
 * leaves no line saying so: the output only goes quiet. So each start writes one
 * `receiver_restarted` line about the run before it:
 *
 * - `previous_end: "stopped"`: it stopped on a signal (`previous_stop_reason`);
 * - `"crashed"`: an error nothing handled ended it, and it recorded that (`previous_stop_reason`);
 * - `"unclean"`: it ended without recording anything; `previous_last_alive` is the last time it
 *   was known to run (noted every ALIVE_EVERY_MS while it runs);
 * - `"unknown"`: the state was written by a receiver that did not record its runs.
 *
 * `down_ms` is from the previous run's end (or last sign of life) to this start. The first start
 * of a new state directory writes no line. The row is committed with the receiver's state and output.
 */
import type Database from "better-sqlite3";
import { problem, type ProblemLine } from "./verifier";

const SCHEMA = "CREATE TABLE IF NOT EXISTS receiver_run (id INTEGER PRIMARY KEY CHECK (id = 1), started INTEGER NOT NULL, alive INTEGER NOT NULL, ended INTEGER, end_reason TEXT, crashed INTEGER NOT NULL DEFAULT 0)";

/** How often a running receiver notes that it runs (one small write). */
export const ALIVE_EVERY_MS = 10_000;

interface RunRow { started: number; alive: number; ended: number | null; end_reason: string | null; crashed: number }

const iso = (ms: number) => new Date(ms).toISOString();
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

export class ReceiverRuns {
  private readonly q;
  private aliveAt = 0;

  constructor(db: Database.Database) {
    db.exec(SCHEMA);
    this.q = {
      get: db.prepare("SELECT started, alive, ended, end_reason, crashed FROM receiver_run WHERE id = 1"),
      begin: db.prepare("INSERT INTO receiver_run (id, started, alive, ended, end_reason, crashed) VALUES (1, ?, ?, NULL, NULL, 0) ON CONFLICT(id) DO UPDATE SET started = excluded.started, alive = excluded.alive, ended = NULL, end_reason = NULL, crashed = 0"),
      alive: db.prepare("UPDATE receiver_run SET alive = ? WHERE id = 1"),
      end: db.prepare("UPDATE receiver_run SET alive = ?, ended = ?, end_reason = ?, crashed = ? WHERE id = 1"),
    };
  }

  /**
   * This run begins (inside the receiver's first commit): the line about the run before it, if
   * any. `used`: the state directory has served a receiver before (one of a version that did
   * not record its runs, when there is no row: how that run ended is not known).
   */
  begin(now: number, used: boolean): ProblemLine[] {
    const was = this.q.get.get() as RunRow | undefined;
    this.q.begin.run(now, now);
    this.aliveAt = now;
    if (!was) {
      if (!used) return [];
      return [problem("receiver_restarted", {
        device: null, now, previous_end: "unknown",
        detail: "this state directory served a receiver that did not record its runs (an older version): how and when its last run ended is not known",
      })];
    }
    const since = was.ended ?? was.alive;
    const down = Math.max(0, now - since);
    const common = { device: null, now, previous_started: iso(was.started), down_ms: down };
    if (was.ended === null) {
      return [problem("receiver_restarted", {
        ...common, previous_end: "unclean", previous_last_alive: iso(was.alive),
        detail: `the receiver's previous run (started ${iso(was.started)}) ended without stopping: it was killed (SIGKILL, the OOM killer), crashed before it could record it, could not note its stop (a full or failing disk), or its host lost power. It was last known to run at ${iso(was.alive)}, ${seconds(down)} before this start; nothing was verified or acknowledged in between (the broker keeps what was sent meanwhile, within its queue limits: gaps name what it dropped)`,
      })];
    }
    const crashed = was.crashed === 1;
    return [problem("receiver_restarted", {
      ...common, previous_end: crashed ? "crashed" : "stopped", previous_stop_reason: was.end_reason, previous_ended: iso(was.ended),
      detail: crashed
        ? `the receiver's previous run (started ${iso(was.started)}) crashed at ${iso(was.ended)} (${was.end_reason}), ${seconds(down)} before this start`
        : `the receiver was stopped at ${iso(was.ended)} (${was.end_reason}) and started again ${seconds(down)} later`,
    })];
  }

  /** Notes that the receiver runs, at most every ALIVE_EVERY_MS (inside a commit). */
  alive(now: number): void {
    if (now - this.aliveAt < ALIVE_EVERY_MS) return;
    this.aliveAt = now;
    this.q.alive.run(now);
  }

  /** This run ends: stopped (a signal, a caller) or crashed (an error nothing handled). */
  end(now: number, reason: string, crashed: boolean): void {
    this.q.end.run(now, now, reason.slice(0, 500), crashed ? 1 : 0);
  }
}
