import { afterAll, describe, expect, it } from "vitest";
import { generateKeyPairSync } from "node:crypto";
import { join } from "node:path";
import pino from "pino";
import { Recorder } from "../../../agent/events/recorder";
import type { EventClass, EventDraft } from "../../../agent/core/events";
import { Outbox } from "../../../agent/outbox/store";
import { tempDir, until } from "../../helpers/fixture";

// A full outbox is named by one loss record per class per interval, warned about once per
// episode; loss records are evicted last; a crash between an eviction and its loss record
// forgets nothing.

const { privateKey } = generateKeyPairSync("ed25519");
const MAX = 1024 ** 2;

type Loss = { reason: string; class: string; count: number; ranges: [number, number, number][]; counts?: Record<string, number> };
type Body = { boot: number; seq: number; class: string; ocsf: { unmapped?: { loss?: Loss } } };

function draft(cls: EventClass, n: number): EventDraft {
  return { class: cls, severity: 1, ocsf: { class_uid: 2004, activity_id: 1, message: `${cls} ${n}`, unmapped: { pad: "x".repeat(200) } } };
}

function open(path: string, lossIntervalMs: number) {
  const lines: { level: number; msg: string }[] = [];
  const log = pino({ level: "info" }, { write: (s: string) => void lines.push(JSON.parse(s) as { level: number; msg: string }) });
  const outbox = new Outbox(path, MAX);
  const recorder = new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 5, maxPending: 500, log, lossIntervalMs });
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
});
