/**
 * Time-boxed write windows per role. A window opens from the CLI through the daemon's control
 * socket and closes by itself at its expiry (or earlier, by hand); both are audit events.
 */
import { randomUUID } from "node:crypto";
import { DaemonError } from "../../agent/errors";
import type { WindowOracle } from "./policy-engine";

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

export class WindowStore implements WindowOracle {
  private readonly open = new Map<string, WriteWindow>();
  private readonly timers = new Map<string, NodeJS.Timeout>();

  constructor(
    private readonly opts: {
      /** Roles that exist; opening a window for anything else fails. */
      roles: () => readonly string[];
      maxMinutes?: number;
      now?: () => number;
      events?: WindowEvents;
    },
  ) {}

  private now(): number {
    return this.opts.now ? this.opts.now() : Date.now();
  }

  openWindow(args: { role: string; minutes: number; reason: string; by?: string }): WriteWindow {
    const max = this.opts.maxMinutes ?? 240;
    if (!this.opts.roles().includes(args.role)) throw new DaemonError("USAGE", `no role ${args.role} in the Modbus policy`);
    if (!Number.isFinite(args.minutes) || args.minutes <= 0 || args.minutes > max) throw new DaemonError("USAGE", `--minutes must be in 1..${max}`);
    if (!args.reason || !args.reason.trim()) throw new DaemonError("USAGE", "a window needs a --reason");
    const now = this.now();
    const w: WriteWindow = {
      id: randomUUID(),
      role: args.role,
      reason: args.reason.slice(0, 500),
      opened_by: args.by ?? "cli",
      opened_at: now,
      expires_at: now + Math.round(args.minutes * 60_000),
    };
    this.open.set(w.id, w);
    const t = setTimeout(() => this.sweep(), w.expires_at - now + 5);
    t.unref();
    this.timers.set(w.id, t);
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
    return out;
  }

  list(): WriteWindow[] {
    this.sweep();
    return [...this.open.values()];
  }

  isOpen(role: string, now: number): boolean {
    for (const w of this.open.values()) if (w.role === role && now < w.expires_at && now >= w.opened_at) return true;
    return false;
  }

  /** Close expired windows (called by timers; tests call it with a fake clock). */
  sweep(): void {
    const now = this.now();
    for (const w of [...this.open.values()]) {
      if (now >= w.expires_at) {
        this.drop(w);
        this.opts.events?.closed(w, "expired", "timer");
      }
    }
  }

  private drop(w: WriteWindow): void {
    this.open.delete(w.id);
    const t = this.timers.get(w.id);
    if (t) clearTimeout(t);
    this.timers.delete(w.id);
  }

  /** Stop timers (daemon shutdown). Windows are not persisted: a restart closes them. */
  dispose(): void {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }
}
