import { describe, expect, it } from "vitest";
import { createPublicKey, generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Envelope } from "../../../agent/core/envelope";
import Database from "better-sqlite3";
import { ClockWatch } from "../../../agent/soc/clock";
import { StreamVerifier } from "../../../agent/soc/verifier";
import { verifyFile } from "../../../agent/soc/verify-file";
import { DeviceStream } from "../../helpers/device-stream";

const dev = generateKeyPairSync("ed25519");
const trust = { get: (d: string) => (d === "gw-1" ? createPublicKey(dev.privateKey) : undefined) };

/** Writes event lines as the receiver does, each with the time it was received. */
function outputFile(lines: { e: Envelope; at: number }[]): { file: string; done: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "gw-verify-"));
  const file = join(dir, "events.jsonl");
  writeFileSync(file, lines.map(({ e, at }) => JSON.stringify({ ...e, v: undefined, verified: true, received_at: at })).join("\n") + "\n");
  return { file, done: () => rmSync(dir, { recursive: true, force: true }) };
}

describe("soc verify", () => {
  it("a file whose stream starts at seq 2 reports the gap 0..1 at once", async () => {
    const d = new DeviceStream("gw-1", dev.privateKey);
    const e = Array.from({ length: 8 }, () => d.next());
    const f = outputFile(e.slice(2).map((x, i) => ({ e: x, at: i })));
    try {
      const r = await verifyFile(f.file, trust);
      expect(r.verified).toBe(6);
      expect(r.problem_lines.map((p) => [p.problem, p.boot, p.first, p.last])).toEqual([["gap", 1000, 0, 1]]);
    } finally {
      f.done();
    }
  });

  it("a loss record naming events received before it: the same `received` and `count` as online", async () => {
    const d = new DeviceStream("gw-1", dev.privateKey);
    const e = Array.from({ length: 5 }, () => d.next());
    const loss = d.next("system", { loss: { reason: "buffer_full", class: "telemetry", count: 3, ranges: [[1000, 1, 3]] } });
    // seq 3 arrives after the record that named it lost: no problem of its own.
    const f = outputFile([...e.slice(0, 3).map((x) => ({ e: x, at: 1 })), { e: e[4]!, at: 2 }, { e: loss, at: 2 }, { e: e[3]!, at: 3 }]);
    try {
      const r = await verifyFile(f.file, trust);
      expect(r.verified).toBe(6);
      expect(r.problem_lines).toMatchObject([{ problem: "loss_record", first: 1, last: 3, count: 1, received: { count: 2, ranges: [[1000, 1, 2]] } }]);
    } finally {
      f.done();
    }
  });

  it("the receiver's own late-event fields (late, loss_record) are not part of the signed event; sent_unacknowledged as online", async () => {
    const d = new DeviceStream("gw-1", dev.privateKey);
    const e = Array.from({ length: 3 }, () => d.next());
    const loss = d.next("system", { loss: { reason: "buffer_full", class: "telemetry", count: 1, ranges: [[1000, 1, 1]], sent_unacknowledged: { count: 1, ranges: [[1000, 1, 1]] } } });
    const dir = mkdtempSync(join(tmpdir(), "gw-verify-"));
    const file = join(dir, "events.jsonl");
    const line = (x: Envelope, at: number, extra: object = {}) => JSON.stringify({ ...x, v: undefined, verified: true, ...extra, received_at: at });
    writeFileSync(file, [line(e[0]!, 1), line(e[2]!, 1), line(loss, 1), line(e[1]!, 2, { late: true, loss_record: { boot: loss.boot, seq: loss.seq } })].join("\n") + "\n");
    try {
      const r = await verifyFile(file, trust);
      expect(r.verified).toBe(4);
      // As online: seq 1 had been sent, was not held when the record came (it came late).
      expect(r.problem_lines).toMatchObject([{ problem: "loss_record", count: 1, received: { count: 0 }, sent_unacknowledged: { count: 1, ranges: [[1000, 1, 1]], received: 0 } }]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("an old boot going on after its successor's boot event is a clone, as online", async () => {
    const a = new DeviceStream("gw-1", dev.privateKey);
    const s = [a.firstBoot(1000), a.next(), a.next()];
    const copy = new DeviceStream("gw-1", dev.privateKey);
    Object.assign(copy, { boot: a.boot, seq: a.seq, prev: a.prev });
    const b = [a.reboot(), a.next()];
    const late = [copy.next(), copy.next()];
    // Arrival order: the old boot's seq 3 and 4 after boot 1001 began.
    const f = outputFile([...s.map((e) => ({ e, at: 1 })), ...b.map((e) => ({ e, at: 2 })), ...late.map((e) => ({ e, at: 3 }))]);
    try {
      const r = await verifyFile(f.file, trust);
      expect(r.problem_lines.map((p) => [p.problem, p.boots])).toEqual([["clone", [1000, 1001]]]);
    } finally {
      f.done();
    }
  });

  it("derives clock_ahead and clock_back from each line's received_at, the same lines as the receiver wrote online", async () => {
    const MIN = 60_000;
    const T = Date.UTC(2026, 11, 7, 10);
    const d = new DeviceStream("gw-1", dev.privateKey);
    d.time = T + 20 * MIN; // 20 minutes ahead of the receiver's clock
    const lines = [{ e: d.firstBoot(1000), at: T }, { e: d.next(), at: T + MIN }];
    d.time = T + 2 * MIN; // the next boot runs on an older saved time: set back 18 minutes
    lines.push({ e: d.reboot(), at: T + 3 * MIN }, { e: d.next(), at: T + 4 * MIN });
    // Online: the receiver's verifier and clock watch, each event received at its time.
    const db = new Database(":memory:");
    const v = new StreamVerifier(db, trust, { gapTimeoutMs: 60_000, dedupeWindow: 1000 });
    const c = new ClockWatch(db, 5 * MIN);
    const online = lines.flatMap(({ e, at }) => c.heard(v.ingest("gw-1", [e], at), at));
    expect(online.map((p) => [p.problem, p.boot, p.first])).toEqual([["clock_ahead", 1000, 0], ["clock_back", 1001, 0]]);
    const f = outputFile(lines);
    try {
      const r = await verifyFile(f.file, trust);
      expect(r.problem_lines).toEqual(online);
      expect(r.problems).toEqual({ clock_ahead: 1, clock_back: 1 });
      // Off (0), as at the receiver.
      expect((await verifyFile(f.file, trust, 0)).problem_lines).toEqual([]);
    } finally {
      f.done();
    }
  });

  it("a line that is neither an event nor a problem line is malformed by its line number, not an event of a device \"?\"", async () => {
    const d = new DeviceStream("gw-1", dev.privateKey);
    const e = d.next();
    const dir = mkdtempSync(join(tmpdir(), "gw-verify-"));
    const file = join(dir, "events.jsonl");
    writeFileSync(file, [JSON.stringify({ ...e, v: undefined, verified: true, received_at: 1 }), '{"a":1}', JSON.stringify({ device: "gw-1", boot: "1000", seq: 1 })].join("\n") + "\n");
    try {
      const r = await verifyFile(file, trust);
      expect({ events: r.events, verified: r.verified, devices: r.devices }).toEqual({ events: 1, verified: 1, devices: ["gw-1"] });
      expect(r.problem_lines.map((p) => [p.problem, p.line])).toEqual([["malformed", 2], ["malformed", 3]]);
      expect(r.problem_lines[0]!.detail).toBe("line 2 is neither an event line nor a problem line: it lacks an event's fields (device, boot, seq, time, ...) or has them of the wrong type");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
