import { afterAll, describe, expect, it } from "vitest";
import { generateKeyPairSync } from "node:crypto";
import { join } from "node:path";
import { Recorder } from "../../../agent/events/recorder";
import type { EventClass, EventDraft } from "../../../agent/core/events";
import { Outbox } from "../../../agent/outbox/store";
import { silent, tempDir } from "../../helpers/fixture";

const { privateKey } = generateKeyPairSync("ed25519");

function draft(cls: EventClass, n: number, pad = 200): EventDraft {
  return { class: cls, severity: cls === "finding" ? 4 : 1, ocsf: { class_uid: 2004, activity_id: 1, message: `${cls} ${n}`, unmapped: { pad: "x".repeat(pad) } } };
}

function open(dir: string, maxBytes: number) {
  const outbox = new Outbox(join(dir, "outbox.db"), maxBytes);
  const recorder = new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 5, maxPending: 500, log: silent });
  return { outbox, recorder };
}

type Body = { seq: number; boot: number; class: string; ocsf: { unmapped?: { loss?: { class: string; count: number; ranges: [number, number, number][] }; boot?: { previous_boot: number | null; previous_last_seq: number | null } } } };
const bodies = (o: Outbox) => o.readAfter(0, 1_000_000).map((r) => JSON.parse(r.body) as Body);

describe("outbox and recorder", () => {
  const t = tempDir();
  afterAll(t.cleanup);

  it("chains boots: the boot event names the previous boot and its last committed seq", () => {
    const dir = join(t.dir, "boots");
    let { outbox, recorder } = open(dir, 64 * 1024 ** 2);
    const b1 = recorder.start().env!;
    for (let i = 0; i < 10; i++) recorder.record(draft("audit", i));
    recorder.flush();
    const head1 = outbox.head()!;
    outbox.close();
    ({ outbox, recorder } = open(dir, 64 * 1024 ** 2));
    const b2 = recorder.start().env!;
    expect(b2.boot).toBeGreaterThan(b1.boot);
    expect(b2.seq).toBe(0);
    expect(b2.prev).toBe(head1.hash);
    expect(b2.ocsf.unmapped).toMatchObject({ boot: { previous_boot: b1.boot, previous_last_seq: 10 } });
    const all = bodies(outbox);
    expect(all.map((b) => `${b.boot === b1.boot ? "A" : "B"}${b.seq}`)).toEqual([...Array.from({ length: 11 }, (_, i) => `A${i}`), "B0"]);
    outbox.close();
  });

  it("the boot event says how the previous run ended: stopped, crashed, without stopping, or not known (an older outbox)", () => {
    const dir = join(t.dir, "ends");
    const end = (env: { ocsf: Record<string, unknown> }) => {
      const b = (env.ocsf.unmapped as { boot: Record<string, unknown> }).boot;
      return { end: b.previous_end, reason: b.previous_stop_reason, message: String(env.ocsf.message).replace(/\d{6,}/g, "B") };
    };
    let { outbox, recorder } = open(dir, 64 * 1024 ** 2);
    expect(end(recorder.start().env!)).toEqual({ end: null, reason: undefined, message: "Gatewarden started for the first time (boot B)" });
    recorder.close("SIGTERM");
    outbox.close();
    ({ outbox, recorder } = open(dir, 64 * 1024 ** 2));
    const started = recorder.start();
    expect(started.previousEnd).toEqual({ how: "stopped", reason: "SIGTERM" });
    expect(end(started.env!)).toEqual({ end: "stopped", reason: "SIGTERM", message: "Gatewarden started (boot B; previous boot B ended at seq 1, stopped: SIGTERM)" });
    // Ends with events after its last stop's mark: killed (the process just ends, its file is kept).
    recorder.record(draft("audit", 1));
    recorder.flush();
    outbox.close();
    ({ outbox, recorder } = open(dir, 64 * 1024 ** 2));
    expect(end(recorder.start().env!)).toEqual({ end: "unclean", reason: undefined, message: "Gatewarden started (boot B; previous boot B ended at seq 1, without stopping: killed, hung past its watchdog, crashed, or the power was cut)" });
    recorder.close("uncaught error: TypeError: x is undefined", true);
    const crash = bodies(outbox).at(-1)!;
    expect(crash).toMatchObject({ class: "system", ocsf: { activity_id: 4, message: "Gatewarden crashed (uncaught error: TypeError: x is undefined)", unmapped: { stop: { crashed: true } } } });
    outbox.close();
    ({ outbox, recorder } = open(dir, 64 * 1024 ** 2));
    expect(end(recorder.start().env!)).toMatchObject({ end: "crashed", reason: "uncaught error: TypeError: x is undefined" });
    recorder.close("SIGTERM");
    // An outbox an older version wrote has no record of stops: not known, rather than unclean.
    outbox.db.exec("DROP TABLE stopped");
    outbox.close();
    ({ outbox, recorder } = open(dir, 64 * 1024 ** 2));
    expect(end(recorder.start().env!)).toMatchObject({ end: "unknown", message: expect.stringMatching(/, how it ended is not known\)$/) });
    recorder.close("SIGTERM");
    outbox.close();
    // From then on it knows.
    ({ outbox, recorder } = open(dir, 64 * 1024 ** 2));
    expect(end(recorder.start().env!)).toMatchObject({ end: "stopped", reason: "SIGTERM" });
    outbox.close();
  });

  it("rows committed with synchronous=NORMAL are made durable (WAL fsync) before they are sent; FULL ones need nothing", () => {
    const { outbox, recorder } = open(join(t.dir, "durable"), 64 * 1024 ** 2);
    recorder.start(); // system: FULL
    const last = () => outbox.readAfter(0, 1000).at(-1)!.id;
    expect(outbox.syncForSend(last())).toBe(false);
    recorder.record(draft("telemetry", 1));
    recorder.flush(); // NORMAL
    expect(outbox.syncForSend(last())).toBe(true);
    expect(outbox.syncForSend(last())).toBe(false);
    recorder.record(draft("telemetry", 2));
    recorder.record(draft("finding", 3));
    recorder.flush(); // one batch with a finding: FULL
    expect(outbox.syncForSend(last())).toBe(false);
    outbox.close();
  });

  it("acks delete rows; reads skip parked rows; ids are never reused after a drain", () => {
    const { outbox, recorder } = open(join(t.dir, "ack"), 64 * 1024 ** 2);
    recorder.start();
    recorder.flush();
    const first = outbox.readAfter(0, 10);
    outbox.ack(first.map((r) => r.id));
    expect(outbox.stats().depth).toBe(0);
    recorder.record(draft("audit", 1));
    recorder.record(draft("audit", 2));
    recorder.flush();
    const rows = outbox.readAfter(first.at(-1)!.id, 10);
    expect(rows.length).toBe(2);
    outbox.park([rows[0]!.id], "test", Date.now());
    expect(outbox.readAfter(0, 10).map((r) => r.id)).toEqual([rows[1]!.id]);
    expect(outbox.unparkAll()).toBe(1);
    outbox.close();
  });

  it("an ack with the senders' byte count deletes exactly the acked rows, in a run or not", () => {
    const { outbox, recorder } = open(join(t.dir, "ack-runs"), 64 * 1024 ** 2);
    recorder.start();
    for (let i = 0; i < 9; i++) recorder.record(draft("telemetry", i));
    recorder.flush();
    const rows = outbox.readRawAfter(0, 100);
    const ids = rows.map((r) => r.id);
    const size = (sel: readonly { bytes: number }[]) => sel.reduce((n, r) => n + r.bytes, 0);
    // A run of consecutive ids (one range delete) leaves the rows on both sides.
    outbox.ack(ids.slice(2, 5), size(rows.slice(2, 5)));
    expect(outbox.readRawAfter(0, 100).map((r) => r.id)).toEqual([...ids.slice(0, 2), ...ids.slice(5)]);
    // Ids with gaps between them (row by row) leave the rows in the gaps.
    const picked = [ids[0]!, ids[6]!, ids[8]!];
    outbox.ack(picked, size(rows.filter((r) => picked.includes(r.id))));
    expect(outbox.readRawAfter(0, 100).map((r) => r.id)).toEqual([ids[1], ids[5], ids[7], ids[9]]);
    expect(outbox.stats().bytes).toBe(size(rows.filter((r) => [ids[1], ids[5], ids[7], ids[9]].includes(r.id))));
    outbox.close();
  });

  it("when full, evicts telemetry before heartbeats before findings, and records exact loss ranges", () => {
    const max = 1024 ** 2;
    const { outbox, recorder } = open(join(t.dir, "full"), max);
    recorder.start();
    let n = 0;
    // Findings interleaved with much telemetry, far beyond the budget.
    for (let round = 0; round < 40; round++) {
      for (let i = 0; i < 60; i++) recorder.record(draft("telemetry", n++));
      for (let i = 0; i < 5; i++) recorder.record(draft("heartbeat", n++));
      recorder.record(draft("finding", n++));
      recorder.flush();
      expect(outbox.fileBytes()).toBeLessThanOrEqual(max);
    }
    recorder.close("test"); // commits the loss records still pending
    const all = bodies(outbox);
    const findings = all.filter((b) => b.class === "finding");
    expect(findings.length).toBe(40); // no finding lost while lower classes remained
    const losses = all.filter((b) => b.ocsf.unmapped?.loss).map((b) => b.ocsf.unmapped!.loss!);
    expect(losses.length).toBeGreaterThan(0);
    // Every missing seq is named by exactly one loss record, and nothing present is.
    const present = new Set(all.map((b) => b.seq));
    const lost = new Set<number>();
    for (const l of losses) for (const [, a, z] of l.ranges) for (let s = a; s <= z; s++) {
      expect(lost.has(s)).toBe(false);
      lost.add(s);
    }
    const last = Math.max(...present);
    for (let s = 0; s <= last; s++) expect(present.has(s) !== lost.has(s)).toBe(true);
    // Heartbeats go only once no telemetry is left before them.
    const lostClasses = losses.map((l) => l.class);
    if (lostClasses.includes("heartbeat")) expect(all.some((b) => b.class === "telemetry" && b.seq < Math.min(...losses.filter((l) => l.class === "heartbeat").flatMap((l) => l.ranges.map((r) => r[1]))))).toBe(false);
    expect(outbox.integrityCheck()).toBe("ok");
    outbox.close();
  });

  it("quarantines a corrupt row and records a loss record naming its position", () => {
    const { outbox, recorder } = open(join(t.dir, "q"), 64 * 1024 ** 2);
    recorder.start();
    recorder.record(draft("finding", 1));
    recorder.flush();
    const row = outbox.readAfter(0, 10)[1]!;
    outbox.quarantine(row, "test", Date.now());
    recorder.reportQuarantined(row, "hash mismatch");
    recorder.flush();
    expect(outbox.stats().quarantined).toBe(1);
    const loss = bodies(outbox).find((b) => b.ocsf.unmapped?.loss)!.ocsf.unmapped!.loss!;
    expect(loss).toMatchObject({ class: "finding", count: 1, ranges: [[row.boot, row.seq, row.seq]] });
    outbox.close();
  });

  it("turns a malformed draft into an EVENT_INVALID system event instead of dropping it", () => {
    const { outbox, recorder } = open(join(t.dir, "bad"), 64 * 1024 ** 2);
    recorder.start();
    recorder.record({ class: "bogus", severity: 9, ocsf: {} } as unknown as EventDraft);
    recorder.flush();
    const last = bodies(outbox).at(-1)!;
    expect(last.class).toBe("system");
    expect(JSON.stringify(last.ocsf)).toContain("EVENT_INVALID");
    expect(recorder.counters.invalid).toBe(1);
    outbox.close();
  });
});

describe("a body JSON cannot carry", () => {
  const t = tempDir();
  afterAll(t.cleanup);
  it("is recorded as EVENT_INVALID and does not poison the rest of its batch", () => {
    const { outbox, recorder } = open(join(t.dir, "nan"), 64 * 1024 ** 2);
    recorder.start();
    recorder.record(draft("audit", 1));
    recorder.record({ class: "finding", severity: 4, ocsf: { class_uid: 2004, activity_id: 1, message: "bad", unmapped: { v: Number.NaN } } });
    recorder.record(draft("audit", 2));
    recorder.flush();
    const all = bodies(outbox);
    expect(all.map((b) => b.class)).toEqual(["system", "audit", "system", "audit"]);
    expect(JSON.stringify(all[2]!.ocsf)).toContain("EVENT_INVALID");
    outbox.close();
  });
});
