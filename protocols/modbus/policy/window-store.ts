/**
 * Time-boxed write windows per role. A window opens from the CLI through the daemon's control
 * socket and closes by itself at its expiry (or earlier, by hand); both are audit events.
 *
 * With a `WindowFile` (the daemon's `modbus.windows.state_path`) open windows survive a
 * restart with their original expiry: a window is written (synchronous=FULL) before its
 * opening is reported, and deleted when it closes. `restore` at start reopens what is still
 * current and closes, with its audit event, what expired while the daemon was down or names a
 * role the policy no longer has. The number of open windows is bounded (`maxOpen`).
 */
import type Database from "better-sqlite3";
import { randomUUID } from "node:crypto";
import { dirname } from "node:path";
import { DaemonError } from "../../../agent/core/errors";
import { openWalDatabase } from "../../../agent/core/sqlite";
import type { EventDraft } from "../../../agent/core/events";
import type { WindowOracle } from "./engine";
import { makeDirs } from "../../../agent/core/dirs";

export interface WriteWindow {
  id: string;
  role: string;
  reason: string;
  opened_by: string;
  opened_at: number;
  expires_at: number;
}

export interface WindowEvents {
  opened(w: WriteWindow): void;
  closed(w: WriteWindow, how: "expired" | "closed", by: string): void;
}

/** A window's opening, an audit event (Device Config State Change). */
export function windowOpenedDraft(w: WriteWindow, time: number): EventDraft {
  return {
    class: "audit",
    severity: 2,
    time,
    ocsf: { class_uid: 5019, activity_id: 99, message: `Write window opened for role ${w.role} until ${new Date(w.expires_at).toISOString()}: ${w.reason}`, activity_name: "Write Window Opened", actor: { user: { name: w.opened_by } }, unmapped: { modbus: { window: w } } },
  };
}

/** A window's closing (by hand or at its expiry), an audit event. */
export function windowClosedDraft(w: WriteWindow, how: "expired" | "closed", by: string, time: number): EventDraft {
  return {
    class: "audit",
    severity: 2,
    time,
    ocsf: { class_uid: 5019, activity_id: 99, message: `Write window for role ${w.role} ${how === "expired" ? "expired" : `closed by ${by}`}`, activity_name: "Write Window Closed", actor: { user: { name: by } }, unmapped: { modbus: { window: w, how } } },
  };
}

/** Where open windows are kept across restarts. */
export interface WindowPersistence {
  load(): WriteWindow[];
  save(w: WriteWindow): void;
  remove(id: string): void;
  close(): void;
}

/** Open windows in SQLite (WAL; each change is fsynced before it is acted on). */
export class WindowFile implements WindowPersistence {
  private readonly db: Database.Database;
  private readonly stmts: { all: Database.Statement; put: Database.Statement; del: Database.Statement };

  constructor(path: string) {
    try {
      makeDirs(dirname(path), "modbus.windows.state_path directory");
      // A closed window must not come back after a power cut: fsync every change.
      this.db = openWalDatabase(path, "FULL");
      this.db.exec(`CREATE TABLE IF NOT EXISTS write_windows (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        reason TEXT NOT NULL,
        opened_by TEXT NOT NULL,
        opened_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
      ) STRICT`);
    } catch (e) {
      throw new DaemonError("WINDOW_STATE", `cannot open the write-window state ${path}: ${(e as Error).message}`, { cause: e });
    }
    this.stmts = {
      all: this.db.prepare("SELECT id, role, reason, opened_by, opened_at, expires_at FROM write_windows ORDER BY opened_at, id"),
      put: this.db.prepare("INSERT INTO write_windows (id, role, reason, opened_by, opened_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)"),
      del: this.db.prepare("DELETE FROM write_windows WHERE id = ?"),
    };
  }

  load(): WriteWindow[] {
    return this.stmts.all.all() as WriteWindow[];
  }

  save(w: WriteWindow): void {
    this.stmts.put.run(w.id, w.role, w.reason, w.opened_by, w.opened_at, w.expires_at);
  }

  remove(id: string): void {
    this.stmts.del.run(id);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

/** Longest single timer: wall-clock jumps (an RTC-less gateway setting its clock) are noticed within it. */
const MAX_TIMER_MS = 60_000;

export class WindowStore implements WindowOracle {
  private readonly open = new Map<string, WriteWindow>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly opts: {
      /** Roles that exist; opening a window for anything else fails. */
      roles: () => readonly string[];
      /** Whether a role may write at all; a window for one that cannot (read-only) is refused. */
      writes?: (role: string) => boolean;
      /** Where the roles are defined, for messages (default: the Modbus policy). */
      rolesIn?: string;
      maxMinutes?: number;
      /** Most windows open at once (default 16); opening one more fails. */
      maxOpen?: number;
      now?: () => number;
      events?: WindowEvents;
      /** Keeps open windows across restarts; call `restore` once the roles are known. */
      persist?: WindowPersistence;
      /** Told when the state file cannot be updated on a close (the window is closed anyway). */
      onPersistError?: (e: unknown, w: WriteWindow) => void;
    },
  ) {}

  private now(): number {
    return this.opts.now ? this.opts.now() : Date.now();
  }

  get maxOpen(): number {
    return this.opts.maxOpen ?? 16;
  }

  /**
   * Reopen the windows kept in the state file. Those expired meanwhile close now (audit event,
   * how "expired"); those whose role the policy no longer has, or past `maxOpen` (the most
   * recently opened first), close as "closed" by "policy" or "max_open". Returns what stays open.
   */
  restore(): WriteWindow[] {
    const p = this.opts.persist;
    if (!p) return [];
    const now = this.now();
    const roles = this.opts.roles();
    const keep: WriteWindow[] = [];
    for (const w of p.load()) {
      if (this.open.has(w.id)) continue;
      if (now >= w.expires_at) this.closeLoaded(w, "expired", "timer");
      else if (!roles.includes(w.role)) this.closeLoaded(w, "closed", "policy");
      else if (keep.length >= this.maxOpen) this.closeLoaded(w, "closed", "max_open");
      else keep.push(w);
    }
    for (const w of keep) this.open.set(w.id, w);
    this.arm();
    return keep;
  }

  private closeLoaded(w: WriteWindow, how: "expired" | "closed", by: string): void {
    this.forget(w);
    this.opts.events?.closed(w, how, by);
  }

  openWindow(args: { role: string; minutes: number; reason: string; by?: string }): WriteWindow {
    const max = this.opts.maxMinutes ?? 240;
    const where = this.opts.rolesIn ?? "the Modbus policy";
    if (!this.opts.roles().includes(args.role)) throw new DaemonError("USAGE", `no role ${args.role} in ${where}`);
    if (this.opts.writes && !this.opts.writes(args.role)) throw new DaemonError("USAGE", `role ${args.role} may write nothing in ${where}: a write window would allow nothing`);
    if (!Number.isFinite(args.minutes) || args.minutes <= 0 || args.minutes > max) throw new DaemonError("USAGE", `--minutes must be in 1..${max}`);
    if (!args.reason || !args.reason.trim()) throw new DaemonError("USAGE", "a window needs a --reason");
    this.sweep();
    if (this.open.size >= this.maxOpen) throw new DaemonError("USAGE", `${this.open.size} write windows are open, the most allowed (modbus.windows.max_open); close one first`);
    const now = this.now();
    const w: WriteWindow = {
      id: randomUUID(),
      role: args.role,
      reason: args.reason.slice(0, 500),
      opened_by: (args.by ?? "cli").slice(0, 128),
      opened_at: now,
      expires_at: now + Math.round(args.minutes * 60_000),
    };
    // Kept before it takes effect: a window that could not be written is not opened.
    if (this.opts.persist) {
      try {
        this.opts.persist.save(w);
      } catch (e) {
        throw new DaemonError("WINDOW_STATE", `the write window could not be saved, so it is not opened: ${(e as Error).message}`, { cause: e });
      }
    }
    this.open.set(w.id, w);
    this.arm();
    this.opts.events?.opened(w);
    return w;
  }

  /** Close one window by id, or every window of a role. Returns those closed. */
  closeWindow(sel: { id?: string; role?: string }, by = "cli"): WriteWindow[] {
    this.sweep();
    const out: WriteWindow[] = [];
    for (const w of [...this.open.values()]) {
      if ((sel.id && w.id === sel.id) || (!sel.id && sel.role && w.role === sel.role) || (!sel.id && !sel.role)) {
        this.drop(w);
        this.opts.events?.closed(w, "closed", by);
        out.push(w);
      }
    }
    this.arm();
    return out;
  }

  list(): WriteWindow[] {
    this.sweep();
    return [...this.open.values()];
  }

  /** The windows held now, without closing expired ones first (safe inside an event callback). */
  snapshot(): WriteWindow[] {
    return [...this.open.values()];
  }

  isOpen(role: string, now: number): boolean {
    for (const w of this.open.values()) if (w.role === role && now < w.expires_at && now >= w.opened_at) return true;
    return false;
  }

  /** Close expired windows (called by the timer; tests call it with a fake clock). */
  sweep(): void {
    const now = this.now();
    for (const w of [...this.open.values()]) {
      if (now >= w.expires_at) {
        this.drop(w);
        this.opts.events?.closed(w, "expired", "timer");
      }
    }
  }

  /** One timer for the earliest expiry, at most MAX_TIMER_MS away. */
  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.open.size) return;
    let next = Infinity;
    for (const w of this.open.values()) next = Math.min(next, w.expires_at);
    const t = setTimeout(
      () => {
        this.timer = undefined;
        this.sweep();
        this.arm();
      },
      Math.max(1, Math.min(MAX_TIMER_MS, next - this.now() + 5)),
    );
    t.unref();
    this.timer = t;
  }

  private drop(w: WriteWindow): void {
    this.open.delete(w.id);
    this.forget(w);
  }

  /** Delete a closed window from the state file; a failure is reported, the window stays closed. */
  private forget(w: WriteWindow): void {
    try {
      this.opts.persist?.remove(w.id);
    } catch (e) {
      this.opts.onPersistError?.(e, w);
    }
  }

  /** Stop the timer and close the state file (daemon shutdown). Open windows stay in the file. */
  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.opts.persist?.close();
  }
}
