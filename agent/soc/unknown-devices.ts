import type Database from "better-sqlite3";
import { RECEIVER_LIMITS } from "./bounds";
import { problem, type ProblemLine } from "./verifier";

/** Distinct unknown devices counted one by one per window; further ones share one count. */
const MAX_TRACKED = 256;
const OTHERS = "*";

/**
 * Batches from devices without a trusted key, as a rate summary: the first batch of a device
 * in a window gets its own `unknown_device` line at once; the rest are counted (in the
 * receiver's database, in the same transaction as the message's acknowledgement) and written as
 * one line per device when the window closes. A flood of them costs a counter update each, not
 * a line each, and is never opened.
 */
export class UnknownDevices {
  private readonly q;

  constructor(
    db: Database.Database,
    private readonly windowMs = 60_000,
  ) {
    db.exec("CREATE TABLE IF NOT EXISTS unknown_devices (device TEXT PRIMARY KEY, batches INTEGER NOT NULL, events INTEGER NOT NULL, bytes INTEGER NOT NULL, since INTEGER NOT NULL)");
    this.q = {
      get: db.prepare("SELECT batches FROM unknown_devices WHERE device = ?"),
      tracked: db.prepare("SELECT COUNT(*) AS n FROM unknown_devices"),
      insert: db.prepare("INSERT INTO unknown_devices (device, batches, events, bytes, since) VALUES (?, ?, ?, ?, ?)"),
      add: db.prepare("UPDATE unknown_devices SET batches = batches + 1, events = events + ?, bytes = bytes + ? WHERE device = ?"),
      due: db.prepare("SELECT device, batches, events, bytes, since FROM unknown_devices WHERE since <= ?"),
      drop: db.prepare("DELETE FROM unknown_devices WHERE since <= ?"),
    };
  }

  /** One batch from `device` (no trusted key): a line for the first of its window, else none. */
  note(device: string, claimedEvents: number, bytes: number, now: number): ProblemLine[] {
    // The header's count is the sender's claim: no more than a batch may hold.
    const events = Math.min(Math.max(0, claimedEvents), RECEIVER_LIMITS.eventsPerBatch);
    if (this.q.get.get(device)) {
      this.q.add.run(events, bytes, device);
      return [];
    }
    if ((this.q.tracked.get() as { n: number }).n >= MAX_TRACKED) {
      if (!this.q.get.get(OTHERS)) this.q.insert.run(OTHERS, 0, 0, 0, now);
      this.q.add.run(events, bytes, OTHERS);
      return [];
    }
    this.q.insert.run(device, 0, 0, 0, now);
    return [problem("unknown_device", { device, count: events, detail: `no trusted key for device ${device}; add it with \`gatewarden soc trust add\` (further batches from it are counted and summarised every ${this.windowMs / 1000} s)`, now, batches: 1 })];
  }

  /** Summary lines for windows that have closed. */
  summary(now: number): ProblemLine[] {
    const cut = now - this.windowMs;
    const out: ProblemLine[] = [];
    for (const r of this.q.due.all(cut) as { device: string; batches: number; events: number; bytes: number; since: number }[]) {
      if (r.batches === 0) continue;
      const who = r.device === OTHERS ? `further unknown devices (more than ${MAX_TRACKED} in the window)` : `unknown device ${r.device}`;
      out.push(problem("unknown_device", { device: r.device === OTHERS ? null : r.device, count: r.events, detail: `${r.batches} more batches (${r.events} events by their headers, ${r.bytes} bytes) from ${who} since ${new Date(r.since).toISOString()}, not opened`, now, batches: r.batches, since: r.since }));
    }
    this.q.drop.run(cut);
    return out;
  }
}
