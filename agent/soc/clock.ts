/**
 * Gateways whose clocks are wrong. Every event carries the gateway's wall time, and the SOC
 * orders and correlates by it; a gateway cannot always tell that its clock is wrong (a Pi-class
 * board has no battery clock: after a power cut it runs on the time it last saved until NTP is
 * reached, and an RTC or a person can set it anywhere). What the receiver can tell for sure:
 *
 * - `clock_ahead`: an event stamped more than `skewMs` after the receiver received it (no
 *   delivery delay makes an event early). Once per device and boot.
 * - `clock_back`: an event stamped more than `skewMs` before an event that precedes it in the
 *   device's stream (boot, then seq): the recorder stamps in order, so the clock was set back
 *   in between (a boot after a power cut, NTP, a person). Once per device and boot.
 *
 * An event late to arrive (a backlog, an outage) is neither: only the stamps' order and the
 * future are judged. State is per device, kept with the receiver's state.
 */
import type Database from "better-sqlite3";
import { problem, type OutLine, type ProblemLine } from "./verifier";

const SCHEMA = "CREATE TABLE IF NOT EXISTS clock (device TEXT PRIMARY KEY, boot INTEGER NOT NULL, seq INTEGER NOT NULL, time INTEGER NOT NULL, ahead_boot INTEGER, back_boot INTEGER)";

interface ClockRow { device: string; boot: number; seq: number; time: number; ahead_boot: number | null; back_boot: number | null }

/** Default skew: beyond NTP's and a slow delivery's reach, within a battery-less boot's. */
export const DEFAULT_CLOCK_SKEW_MS = 300_000;

const iso = (ms: number) => new Date(ms).toISOString();
const minutes = (ms: number) => `${(ms / 60_000).toFixed(1)} min`;

export class ClockWatch {
  private readonly q;

  constructor(
    db: Database.Database,
    private readonly skewMs: number,
  ) {
    db.exec(SCHEMA);
    this.q = {
      get: db.prepare("SELECT device, boot, seq, time, ahead_boot, back_boot FROM clock WHERE device = ?"),
      put: db.prepare("INSERT INTO clock (device, boot, seq, time, ahead_boot, back_boot) VALUES (@device, @boot, @seq, @time, @ahead_boot, @back_boot) ON CONFLICT(device) DO UPDATE SET boot = excluded.boot, seq = excluded.seq, time = excluded.time, ahead_boot = excluded.ahead_boot, back_boot = excluded.back_boot"),
    };
  }

  /** Judges the verified events among `lines` (received at `now`). */
  heard(lines: readonly OutLine[], now: number): ProblemLine[] {
    const out: ProblemLine[] = [];
    const rows = new Map<string, ClockRow>();
    for (const l of lines) {
      if ("problem" in l || l.verified !== true || !Number.isFinite(l.time)) continue;
      const known = rows.get(l.device) ?? (this.q.get.get(l.device) as ClockRow | undefined);
      let r = known ?? { device: l.device, boot: l.boot, seq: l.seq, time: l.time, ahead_boot: null, back_boot: null };
      if (l.time > now + this.skewMs && r.ahead_boot !== l.boot) {
        out.push(problem("clock_ahead", {
          device: l.device, boot: l.boot, first: l.seq, last: l.seq, now,
          detail: `${l.device}'s event ${l.boot}:${l.seq} is stamped ${iso(l.time)}, ${minutes(l.time - now)} after it was received: the gateway's clock is ahead (or this receiver's is behind); its events' times are not to be trusted for ordering or correlation until it is set right`,
          ahead_ms: l.time - now,
        }));
        r = { ...r, ahead_boot: l.boot };
      }
      // Only an event later in the stream than the latest seen is judged against it (and becomes it).
      if (known && (l.boot > r.boot || (l.boot === r.boot && l.seq > r.seq))) {
        if (l.time < r.time - this.skewMs && r.back_boot !== l.boot) {
          out.push(problem("clock_back", {
            device: l.device, boot: l.boot, first: l.seq, last: l.seq, now,
            detail: `${l.device}'s event ${l.boot}:${l.seq} is stamped ${iso(l.time)}, ${minutes(r.time - l.time)} before its earlier event ${r.boot}:${r.seq} (${iso(r.time)}): the gateway's clock was set back in between (a start after a power cut without a battery clock, NTP, or a person); the times of its events from here on are early by up to that much until its clock is right`,
            back_ms: r.time - l.time, after: { boot: r.boot, seq: r.seq },
          }));
          r = { ...r, back_boot: l.boot };
        }
        r = { ...r, boot: l.boot, seq: l.seq, time: l.time };
      }
      rows.set(l.device, r);
    }
    for (const r of rows.values()) this.q.put.run(r);
    return out;
  }
}
