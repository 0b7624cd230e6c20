/**
 * Devices that went quiet. A gateway that loses power, is unplugged or is cut off sends
 * nothing, so nothing in the stream says so; its heartbeat (every `heartbeat.interval_ms`, 60 s
 * by default) is what stops. A trusted device from which no verified event has arrived for
 * `silenceMs` (or three of the heartbeat intervals its heartbeats announce, if longer: a gateway
 * configured to beat every 10 min is not silent after 5) gets one `silent` line; its next
 * verified event, one `silence_ended` line saying
 * for how long. State is per device (the trusted ones the receiver has heard), kept with the
 * receiver's state, so a restart neither forgets a silence nor reports it twice; the time the
 * receiver itself was down does not count (the broker kept the messages of that time).
 */
import type Database from "better-sqlite3";
import { problem, type OutLine, type ProblemLine } from "./verifier";

const SCHEMA = "CREATE TABLE IF NOT EXISTS heard (device TEXT PRIMARY KEY, at INTEGER NOT NULL, boot INTEGER NOT NULL, seq INTEGER NOT NULL, silent_since INTEGER, every_ms INTEGER)";

/** A device is silent after `silenceMs`, or after this many of its own heartbeat intervals if longer. */
const HEARTBEATS = 3;

interface HeardRow { device: string; at: number; boot: number; seq: number; silent_since: number | null; every_ms: number | null }

const iso = (ms: number) => new Date(ms).toISOString();

export class SilenceWatch {
  private readonly q;
  /**
   * @param silenceMs how long a device may send nothing before it is reported `silent`
   * @param startedAt when this receiver started: silence is counted from then at the earliest
   * @param retired whether a device said farewell (decommissioned devices are not expected)
   */
  constructor(
    db: Database.Database,
    private readonly silenceMs: number,
    private readonly startedAt: number,
    private readonly retired: (device: string) => boolean,
  ) {
    db.exec(SCHEMA);
    this.q = {
      get: db.prepare("SELECT device, at, boot, seq, silent_since, every_ms FROM heard WHERE device = ?"),
      put: db.prepare("INSERT INTO heard (device, at, boot, seq, silent_since, every_ms) VALUES (?, ?, ?, ?, NULL, ?) ON CONFLICT(device) DO UPDATE SET at = excluded.at, boot = excluded.boot, seq = excluded.seq, silent_since = NULL, every_ms = COALESCE(excluded.every_ms, every_ms)"),
      quiet: db.prepare("SELECT device, at, boot, seq, silent_since, every_ms FROM heard WHERE silent_since IS NULL AND at <= ?"),
      mark: db.prepare("UPDATE heard SET silent_since = ? WHERE device = ?"),
      forget: db.prepare("DELETE FROM heard WHERE device = ?"),
    };
  }

  /** Notes the verified events among `lines`; a device that had been silent gets its `silence_ended` line. */
  heard(lines: readonly OutLine[], now: number): ProblemLine[] {
    const latest = new Map<string, { boot: number; seq: number; every: number | null }>();
    for (const l of lines) {
      if ("problem" in l || l.verified !== true) continue;
      const every = l.class === "heartbeat" ? heartbeatInterval(l.ocsf) : null;
      latest.set(l.device, { boot: l.boot, seq: l.seq, every: every ?? latest.get(l.device)?.every ?? null });
    }
    const out: ProblemLine[] = [];
    for (const [device, { boot, seq, every }] of latest) {
      const was = this.q.get.get(device) as HeardRow | undefined;
      if (was?.silent_since != null) {
        const quiet = now - was.at; // reported silent: it was, from its last event on
        out.push(problem("silence_ended", {
          device, boot, first: null, last: null, now,
          detail: `${device} is heard again after ${Math.round(quiet / 1000)} s without an event (reported silent at ${iso(was.silent_since)}; last event before: ${was.boot}:${was.seq})`,
          silent_ms: quiet, last_event: { boot, seq },
        }));
      }
      this.q.put.run(device, now, boot, seq, every);
    }
    return out;
  }

  /** Devices quiet for `silenceMs` and not reported yet: one `silent` line each. */
  sweep(now: number): ProblemLine[] {
    if (now - this.startedAt < this.silenceMs) return [];
    const out: ProblemLine[] = [];
    for (const r of this.q.quiet.all(now - this.silenceMs) as HeardRow[]) {
      if (this.retired(r.device)) {
        this.q.forget.run(r.device);
        continue;
      }
      const quiet = now - Math.max(r.at, this.startedAt);
      if (quiet < Math.max(this.silenceMs, HEARTBEATS * (r.every_ms ?? 0))) continue;
      out.push(problem("silent", {
        device: r.device, boot: r.boot, first: null, last: null, now,
        detail: `no event from ${r.device} for ${Math.round(quiet / 1000)} s (last: ${r.boot}:${r.seq}, received at ${iso(r.at)}${r.every_ms ? `; it announced a heartbeat every ${Math.round(r.every_ms / 1000)} s` : ""}); its heartbeat has stopped: the gateway, its power, its network or its broker connection is down`,
        last_event: { boot: r.boot, seq: r.seq }, last_received_at: r.at,
      }));
      this.q.mark.run(now, r.device);
    }
    return out;
  }
}

/** The interval a heartbeat announces (`unmapped.heartbeat.interval_ms`), if it is a sane one. */
function heartbeatInterval(ocsf: unknown): number | null {
  const v = (ocsf as { unmapped?: { heartbeat?: { interval_ms?: unknown } } } | undefined)?.unmapped?.heartbeat?.interval_ms;
  return typeof v === "number" && Number.isSafeInteger(v) && v > 0 && v <= 86_400_000 ? v : null;
}
