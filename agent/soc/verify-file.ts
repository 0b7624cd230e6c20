import Database from "better-sqlite3";
import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import { DaemonError } from "../core/errors";
import { isEnvelopeShape, type Envelope } from "../core/envelope";
import type { TrustLookup } from "./verifier";
import { RECEIVER_LIMITS, splitBatch } from "./bounds";
import { AwaitingKey, StreamVerifier, problem, type ProblemLine } from "./verifier";
import { ClockWatch, DEFAULT_CLOCK_SKEW_MS } from "./clock";

export interface VerifyReport {
  file: string;
  lines: number;
  events: number;
  verified: number;
  devices: string[];
  problems: Record<string, number>;
  problem_lines: ProblemLine[];
  /** Key rotations and farewells followed from the devices' own signed events (not problems). */
  key_changes: ProblemLine[];
}

/**
 * Re-verifies a receiver's output (or several receivers' outputs concatenated) offline: every
 * event line's hash and signature against the trust store, then chain, duplicates, gaps and
 * loss records per device, from the event lines alone (each device's events in the order they
 * were received). A stream that does not start at seq 0 is a gap. Problem lines in the input
 * are not trusted: they are derived again. Key rotations and farewells in the events are
 * followed as the receiver follows them (give a TrustStore that does not persist). The clock
 * checks (`clock_ahead`, `clock_back`) judge each event at its line's `received_at`, as the
 * receiver did (`clockSkewMs`, default 300,000; 0: off). What only a running receiver can see
 * (`silent`, its own restarts) is not derived.
 */
export async function verifyFile(file: string, trust: TrustLookup, clockSkewMs = DEFAULT_CLOCK_SKEW_MS): Promise<VerifyReport> {
  const events: { e: Envelope; at: number }[] = [];
  const out: ProblemLine[] = [];
  let lines = 0;
  const rl = createInterface({ input: createReadStream(file, "utf8"), crlfDelay: Infinity });
  try {
    for await (const line of rl) {
      lines++;
      if (!line.trim()) continue;
      let o: Record<string, unknown>;
      // The same bounds as the receiver's: a hostile file cannot nest deeper than they allow.
      const one = splitBatch(Buffer.from(`[${line}]`), { ...RECEIVER_LIMITS, eventsPerBatch: 1, eventBytes: 2 * RECEIVER_LIMITS.eventBytes });
      try {
        if (!one.ok || one.count !== 1) throw new Error(one.ok ? "not one value" : one.reason);
        o = JSON.parse(one.element(0)) as Record<string, unknown>;
        if (typeof o !== "object" || o === null) throw new Error("not an object");
      } catch (e) {
        out.push(problem("malformed", { detail: `line ${lines} is not a JSON object within the receiver's bounds (${(e as Error).message})`, now: 0, line: lines }));
        continue;
      }
      if ("problem" in o) continue;
      const { verified: _v, late: _l, loss_record: _r, received_at: at, ...rest } = o;
      const e = { v: 1, ...rest };
      if (!isEnvelopeShape(e)) {
        // Not an event the receiver wrote (no device, boot and seq of the right types): said so
        // by its line, not taken for an event of a device "?".
        out.push(problem("malformed", { detail: `line ${lines} is neither an event line nor a problem line: it lacks an event's fields (device, boot, seq, time, ...) or has them of the wrong type`, now: 0, line: lines }));
        continue;
      }
      events.push({ e, at: typeof at === "number" ? at : 0 });
    }
  } catch (e) {
    throw new DaemonError("INPUT_INVALID", `cannot read ${file}: ${(e as Error).message}`);
  }
  // Per device in arrival order (received_at; one message's events share it), so that two
  // streams interleaving under one identity show as they did online: a `clone`.
  events.sort((x, y) => {
    const a = x.e;
    const b = y.e;
    return a.device < b.device ? -1 : a.device > b.device ? 1 : x.at - y.at || a.boot - b.boot || a.seq - b.seq;
  });
  const db = new Database(":memory:");
  const v = new StreamVerifier(db, trust, { gapTimeoutMs: 0, dedupeWindow: Number.MAX_SAFE_INTEGER });
  const clock = clockSkewMs > 0 ? new ClockWatch(db, clockSkewMs) : undefined;
  const devices = new Set<string>();
  const keyChanges: ProblemLine[] = [];
  let verified = 0;
  // An event signed by a key not known yet waits for its device's next rotation, as at a
  // share-group member: receivers' outputs merged by arrival time may put a new key's first
  // events before the rotation another receiver wrote. What still waits at the end is judged.
  const waiting = new Map<string, { e: Envelope; at: number }[]>();
  const one = (device: string, x: { e: Envelope; at: number }, mayWait: boolean) => {
    let lines;
    try {
      lines = v.ingest(device, [x.e], 0, {}, { mayWait });
    } catch (err) {
      if (!(err instanceof AwaitingKey)) throw err;
      waiting.set(device, [...(waiting.get(device) ?? []), x]);
      return;
    }
    if (clock) lines = [...lines, ...clock.heard(lines, x.at)];
    let rotated = false;
    for (const l of lines) {
      if ("problem" in l) (l.problem === "trust_changed" ? keyChanges : out).push(l);
      else verified++;
      rotated ||= "problem" in l && l.problem === "trust_changed" && l.action === "rotation";
    }
    const w = rotated ? waiting.get(device) : undefined;
    if (w) {
      waiting.delete(device);
      for (const y of w) one(device, y, true);
    }
  };
  for (const x of events) {
    const device = x.e.device;
    devices.add(device);
    one(device, x, true);
  }
  for (const [device, w] of waiting) for (const x of w) one(device, x, false);
  for (const l of v.finish(0)) if ("problem" in l) out.push(l);
  db.close();
  const problems: Record<string, number> = {};
  for (const p of out) problems[p.problem] = (problems[p.problem] ?? 0) + 1;
  return { file, lines, events: events.length, verified, devices: [...devices].sort(), problems, problem_lines: out, key_changes: keyChanges };
}
