import { afterAll, describe, expect, it } from "vitest";
import { generateKeyPairSync } from "node:crypto";
import { join } from "node:path";
import pino from "pino";
import { Recorder } from "../../../agent/events/recorder";
import type { EventClass, EventDraft } from "../../../agent/core/events";
import { Outbox } from "../../../agent/outbox/store";
import Database from "better-sqlite3";
import { tempDir, until } from "../../helpers/fixture";

// A full outbox is named by one loss record per class per interval, warned about once per
// episode; loss records are evicted last; a crash between an eviction and its loss record
// forgets nothing.

const { privateKey } = generateKeyPairSync("ed25519");
const MAX = 1024 ** 2;

type Ranges = [number, number, number][];
type Loss = { reason: string; class: string; count: number; ranges: Ranges; counts?: Record<string, number>; sent_unacknowledged?: { count: number; ranges: Ranges } };
type Body = { boot: number; seq: number; class: string; ocsf: { unmapped?: { loss?: Loss } } };

function draft(cls: EventClass, n: number): EventDraft {
  return { class: cls, severity: 1, ocsf: { class_uid: 2004, activity_id: 1, message: `${cls} ${n}`, unmapped: { pad: "x".repeat(200) } } };
}

function open(path: string, lossIntervalMs: number, forwarder: { inFlight?: () => ReadonlySet<number>; sentThrough?: () => number } = {}) {
  const lines: { level: number; msg: string }[] = [];
  const log = pino({ level: "info" }, { write: (s: string) => void lines.push(JSON.parse(s) as { level: number; msg: string }) });
  const outbox = new Outbox(path, MAX);
  const recorder = new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 5, maxPending: 500, log, lossIntervalMs, ...forwarder });
  return { outbox, recorder, lines, warns: () => lines.filter((l) => l.level === 40) };
}

const bodies = (o: Outbox) => o.readAfter(0, 1_000_000).map((r) => JSON.parse(r.body) as Body);
const losses = (all: Body[]) => all.filter((b) => b.ocsf.unmapped?.loss);

/** Every position up to the last is present or named by exactly one loss record. */
function expectAccounted(all: Body[]): void {
  const present = new Set(all.map((b) => `${b.boot}:${b.seq}`));
  const lost = new Set<string>();
  for (const b of losses(all))
    for (const [boot, a, z] of b.ocsf.unmapped!.loss!.ranges)
      for (let s = a; s <= z; s++) {
        const k = `${boot}:${s}`;
        expect(lost.has(k), `${k} named twice`).toBe(false);
        expect(present.has(k), `${k} named lost but present`).toBe(false);
        lost.add(k);
      }
  for (const boot of new Set(all.map((b) => b.boot))) {
    const last = Math.max(...all.filter((b) => b.boot === boot).map((b) => b.seq));
    for (let s = 0; s <= last; s++) expect(present.has(`${boot}:${s}`) || lost.has(`${boot}:${s}`), `${boot}:${s} unaccounted`).toBe(true);
  }
}

function fill(recorder: Recorder, rounds: number, cls: EventClass[] = ["telemetry", "heartbeat"]): void {
  let n = 0;
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < 60; i++) recorder.record(draft(cls[i % 10 === 9 ? 1 % cls.length : 0]!, n++));
    recorder.flush();
  }
}

describe("loss records while the outbox is full", () => {
  const t = tempDir();
  afterAll(t.cleanup);

  it("one loss record per class per interval names every range; one warning per episode", () => {
    const { outbox, recorder, warns } = open(join(t.dir, "coalesce.db"), 3_600_000);
    recorder.start();
    fill(recorder, 60); // about 60 commits that each evict
    expect(recorder.counters.evicted).toBeGreaterThan(1000);
    expect(losses(bodies(outbox))).toEqual([]); // the interval has not passed: none yet
    expect(warns().length).toBe(1);
    expect(warns()[0]!.msg).toContain("Outbox full");
    recorder.close("test");
    const all = bodies(outbox);
    const recs = losses(all).map((b) => b.ocsf.unmapped!.loss!);
    const classes = recs.map((l) => l.class);
    expect(new Set(classes).size).toBe(classes.length); // one per class
    expect(classes).toContain("telemetry");
    expect(recs.reduce((n, l) => n + l.count, 0)).toBe(recorder.counters.evicted);
    expect(recs.every((l) => l.reason === "buffer_full")).toBe(true);
    expectAccounted(all);
    outbox.close();
  });

  it("commits them every interval while it lasts, and says once when the episode ends", async () => {
    const { outbox, recorder, lines, warns } = open(join(t.dir, "ticks.db"), 50);
    recorder.start();
    fill(recorder, 40);
    await until(() => losses(bodies(outbox)).length > 0, 10_000, "the first loss records");
    fill(recorder, 20);
    await until(() => lines.some((l) => l.msg.startsWith("Outbox no longer full")), 10_000, "the end of the episode");
    expect(warns().length).toBe(1);
    const all = bodies(outbox);
    const recs = losses(all).map((b) => b.ocsf.unmapped!.loss!);
    expect(recs.reduce((n, l) => n + l.count, 0)).toBe(recorder.counters.evicted);
    expectAccounted(all);
    // A new episode warns again.
    fill(recorder, 40);
    expect(warns().length).toBe(2);
    recorder.close("test");
    outbox.close();
  });

  it("a loss record is evicted only when nothing else is left", async () => {
    const { outbox, recorder } = open(join(t.dir, "last.db"), 20);
    recorder.start();
    let seen = 0;
    // Only system events: every eviction takes system rows, and loss records sit among them.
    for (let r = 0; r < 40; r++) {
      const before = recorder.counters.evicted;
      fill(recorder, 1, ["system"]);
      if (recorder.counters.evicted > before) {
        await until(() => losses(bodies(outbox)).length > seen, 10_000, "a loss record for this round");
        seen = losses(bodies(outbox)).length;
      }
    }
    expect(recorder.counters.evicted).toBeGreaterThan(500);
    recorder.close("test");
    const all = bodies(outbox);
    // Every loss record ever committed is still there: other system rows went first.
    expect(losses(all).length).toBe(seen);
    expectAccounted(all);
    outbox.close();
  });

  it("after a crash between an eviction and its loss record, the next boot names it", () => {
    const path = join(t.dir, "crash.db");
    let { outbox, recorder } = open(path, 3_600_000);
    const boot1 = recorder.start().boot;
    fill(recorder, 40);
    const evicted = recorder.counters.evicted;
    expect(evicted).toBeGreaterThan(0);
    expect(losses(bodies(outbox))).toEqual([]);
    outbox.db.close(); // the process dies: no shutdown, no loss record
    ({ outbox, recorder } = open(path, 3_600_000));
    recorder.start();
    const all = bodies(outbox);
    const recs = losses(all);
    expect(recs.length).toBeGreaterThan(0);
    expect(recs.every((b) => b.boot > boot1 && b.ocsf.unmapped!.loss!.ranges.every((r) => r[0] === boot1))).toBe(true);
    expect(recs.reduce((n, b) => n + b.ocsf.unmapped!.loss!.count, 0)).toBe(evicted);
    expectAccounted(all);
    recorder.close("test");
    outbox.close();
  });

  // The forwarder published rows up to `sentThrough` (not acknowledged: still in the outbox);
  // some of them are in flight. Evictions take the oldest telemetry first.
  function sentScenario(path: string, lossIntervalMs: number) {
    let sentThrough = 0;
    let inFlight = new Set<number>();
    const o = open(path, lossIntervalMs, { inFlight: () => inFlight, sentThrough: () => sentThrough });
    o.recorder.start();
    for (let i = 0; i < 300; i++) o.recorder.record(draft("telemetry", i));
    o.recorder.flush();
    const rows = o.outbox.readAfter(0, 1_000_000).filter((r) => r.rank === 0);
    sentThrough = rows[199]!.id;
    inFlight = new Set(rows.slice(150, 160).map((r) => r.id));
    // Named as sent: the published rows not in flight, never the rows after them.
    const sent = rows.slice(0, 200).filter((r) => !inFlight.has(r.id)).map((r) => `${r.boot}:${r.seq}`);
    return { ...o, sent, inFlightKeys: rows.slice(150, 160).map((r) => `${r.boot}:${r.seq}`) };
  }
  const positions = (ranges: Ranges) => ranges.flatMap(([b, f, l]) => Array.from({ length: l - f + 1 }, (_, i) => `${b}:${f + i}`));

  it("names the evicted rows that had been sent (and were not acknowledged) under sent_unacknowledged; count is still every evicted row", () => {
    const { outbox, recorder, sent, inFlightKeys } = sentScenario(join(t.dir, "sent.db"), 3_600_000);
    fill(recorder, 40, ["telemetry"]);
    expect(recorder.counters.evicted).toBeGreaterThan(sent.length + 200); // sent rows and others
    recorder.close("test");
    const all = bodies(outbox);
    const recs = losses(all).map((b) => b.ocsf.unmapped!.loss!);
    expect(recs.reduce((n, l) => n + l.count, 0)).toBe(recorder.counters.evicted);
    const named = recs.flatMap((l) => positions(l.sent_unacknowledged?.ranges ?? []));
    expect(named.sort()).toEqual([...sent].sort());
    expect(recs.reduce((n, l) => n + (l.sent_unacknowledged?.count ?? 0), 0)).toBe(sent.length);
    expect(recorder.counters.evicted_sent).toBe(sent.length);
    // Within the record's own ranges, and said in its message.
    for (const l of recs) {
      const own = new Set(positions(l.ranges));
      expect(positions(l.sent_unacknowledged?.ranges ?? []).every((k) => own.has(k))).toBe(true);
    }
    const tele = losses(all).find((b) => b.ocsf.unmapped!.loss!.sent_unacknowledged)!;
    expect((tele.ocsf as { message: string }).message).toMatch(/^\d+ telemetry event\(s\) evicted from the outbox \(buffer_full\); \d+ of them had been sent \(the SOC may hold them\)$/);
    // Rows in flight were not evicted.
    const present = new Set(all.map((b) => `${b.boot}:${b.seq}`));
    expect(inFlightKeys.every((k) => present.has(k))).toBe(true);
    expectAccounted(all);
    outbox.close();
  });

  it("says how many evicted rows had been sent when the episode ends (log)", async () => {
    const { outbox, recorder, lines, sent } = sentScenario(join(t.dir, "sent-log.db"), 50);
    fill(recorder, 40, ["telemetry"]);
    await until(() => lines.some((l) => l.msg.startsWith("Outbox no longer full")), 10_000, "the end of the episode");
    const end = lines.find((l) => l.msg.startsWith("Outbox no longer full"))!;
    expect(end.msg).toBe(`Outbox no longer full: ${recorder.counters.evicted} evicted (${sent.length} of them had been sent; the SOC may hold them); the loss records name every one.`);
    recorder.close("test");
    outbox.close();
  });

  it("after a crash between an eviction and its loss record, the next boot still names what had been sent", () => {
    const path = join(t.dir, "sent-crash.db");
    const first = sentScenario(path, 3_600_000);
    fill(first.recorder, 40, ["telemetry"]);
    expect(losses(bodies(first.outbox))).toEqual([]);
    first.outbox.db.close(); // the process dies: no loss record
    const { outbox, recorder } = open(path, 3_600_000);
    recorder.start();
    const recs = losses(bodies(outbox)).map((b) => b.ocsf.unmapped!.loss!);
    expect(recs.flatMap((l) => positions(l.sent_unacknowledged?.ranges ?? [])).sort()).toEqual([...first.sent].sort());
    recorder.close("test");
    outbox.close();
  });

  it("an outbox whose loss list has no sent column gets it, keeping what it lists", () => {
    const path = join(t.dir, "old.db");
    const db = new Database(path);
    db.exec("CREATE TABLE loss_pending (class TEXT PRIMARY KEY, ranges TEXT NOT NULL, counts TEXT)");
    db.prepare("INSERT INTO loss_pending (class, ranges, counts) VALUES ('telemetry', '[[7,1,3]]', NULL)").run();
    db.close();
    const outbox = new Outbox(path, MAX);
    expect(outbox.pendingLoss()).toEqual([{ class: "telemetry", count: 3, ranges: [[7, 1, 3]] }]);
    outbox.commit([], { boot: 7, seq: 3, hash: "0".repeat(64) }, [], [{ class: "telemetry", count: 3, ranges: [[7, 1, 3]], sent: [[7, 2, 3]] }]);
    expect(outbox.pendingLoss()).toEqual([{ class: "telemetry", count: 3, ranges: [[7, 1, 3]], sent: [[7, 2, 3]] }]);
    outbox.close();
  });
});
