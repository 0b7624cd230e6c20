import { afterEach, describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import mqtt from "mqtt";
import { join } from "node:path";
import { readHeader } from "../../agent/events/seal";
import { simulatedDraft } from "../../agent/simulate";
import { account, unexpectedProblems } from "../helpers/daemon";
import { sleep, until } from "../helpers/fixture";
import { Harness } from "./_harness";

/** Tampering with what the outbox stores, and with what crosses the broker. */
describe("fault: stored and transmitted events tampered with", () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  const outboxPath = (h: Harness) => join(h.site.gwDir, "data", "outbox.db");

  /** Records `n` events with the broker down, so they all stay in the outbox. */
  async function fill(h: Harness, n: number) {
    await h.broker.pause();
    const rt = await h.runtime();
    for (let i = 0; i < n; i++) rt.recorder.record(simulatedDraft(i));
    rt.recorder.flush();
    return rt;
  }

  it("a byte flipped in a stored event (daemon stopped) is quarantined and reported as a loss record for exactly that position", async () => {
    h = await Harness.create({ settings: { "heartbeat.interval_ms": "600000" } });
    const rt1 = await fill(h, 200);
    const boot1 = rt1.recorder.bootEpoch;
    await h.stopRuntime(rt1, 0);
    const last1 = rt1.recorder.counters.committed - 1;
    // Flip one bit of one byte inside a stored telemetry event's body.
    const db = new Database(outboxPath(h));
    const row = db.prepare("SELECT id, boot, seq, body FROM events WHERE rank = 0 ORDER BY id LIMIT 1 OFFSET 60").get() as { id: number; boot: number; seq: number; body: string };
    const at = row.body.indexOf("Simulated reading") + 10;
    const flipped = row.body.slice(0, at) + String.fromCharCode(row.body.charCodeAt(at) ^ 0x01) + row.body.slice(at + 1);
    expect(flipped).not.toBe(row.body);
    db.prepare("UPDATE events SET body = ? WHERE id = ?").run(flipped, row.id);
    db.close();
    await h.broker.resume();
    const rt2 = await h.runtime();
    await until(() => rt2.upstreamState() === "up" && rt2.outbox.stats().depth === 0, 15_000, "the restarted agent to drain its outbox");
    await h.stopRuntime(rt2, 10_000);
    const last2 = rt2.recorder.counters.committed - 1;
    await until(() => h!.lines.some((l) => !("problem" in l) && l.boot === rt2.recorder.bootEpoch && l.seq === last2), 15_000, "the shutdown event to reach the SOC");
    await sleep(200);
    const a = account(h.lines, last2);
    expect(a.boots).toEqual([
      { boot: boot1, last: last1 },
      { boot: rt2.recorder.bootEpoch, last: last2 },
    ]);
    // The agent quarantined the row (kept for forensics) and recorded a signed loss record.
    const chk = new Database(outboxPath(h), { readonly: true });
    const q = chk.prepare("SELECT boot, seq, reason FROM quarantine").all();
    chk.close();
    expect(q).toEqual([{ boot: row.boot, seq: row.seq, reason: expect.any(String) }]);
    const losses = a.problems.filter((p) => p.problem === "loss_record");
    expect(losses.map((p) => ({ reason: p.reason, ranges: p.ranges }))).toEqual([{ reason: "corrupt_row", ranges: [[row.boot, row.seq, row.seq]] }]);
    // The receiver settles the previous boot as soon as the next boot event arrives, and the
    // loss record (recorded when the forwarder meets the row, after that boot event) comes
    // later: so the same position may also be reported as a `gap`. Never any other position.
    const gaps = a.problems.filter((p) => p.problem === "gap").map((g) => [g.boot, g.first, g.last]);
    expect(gaps.every(([b, f, l]) => b === row.boot && f === row.seq && l === row.seq)).toBe(true);
    expect(unexpectedProblems(a, ["loss_record", "gap", "duplicate"])).toEqual([]);
    expect([...a.lost]).toEqual([`${row.boot}:${row.seq}`]);
    expect(a.missing).toEqual([]);
    expect(a.lostAndReceived).toEqual([]);
    expect(a.doubled).toEqual([]);
  });

  it("a byte flipped in a stored event while the daemon runs gives only a loss record for exactly that position", async () => {
    h = await Harness.create({ settings: { "heartbeat.interval_ms": "600000" }, gapTimeoutMs: 60_000 });
    const rt = await fill(h, 200);
    // Through the daemon's own connection: it holds the file exclusively while it runs.
    const db = rt.outbox.db;
    const row = db.prepare("SELECT id, boot, seq, body FROM events WHERE rank = 0 ORDER BY id LIMIT 1 OFFSET 30").get() as { id: number; boot: number; seq: number; body: string };
    const at = row.body.indexOf('"prev":"') + 20;
    db.prepare("UPDATE events SET body = ? WHERE id = ?").run(row.body.slice(0, at) + String.fromCharCode(row.body.charCodeAt(at) ^ 0x04) + row.body.slice(at + 1), row.id);
    await h.broker.resume();
    await until(() => rt.upstreamState() === "up" && rt.outbox.stats().depth === 0, 15_000, "the agent to drain its outbox");
    expect(rt.outbox.stats().quarantined).toBe(1);
    await h.stopRuntime(rt, 10_000);
    const last = rt.recorder.counters.committed - 1;
    await until(() => h!.lines.some((l) => !("problem" in l) && l.seq === last), 15_000, "the shutdown event to reach the SOC");
    await sleep(200);
    const a = account(h.lines, last);
    const losses = a.problems.filter((p) => p.problem === "loss_record");
    expect(losses.map((p) => ({ reason: p.reason, ranges: p.ranges }))).toEqual([{ reason: "corrupt_row", ranges: [[row.boot, row.seq, row.seq]] }]);
    expect(unexpectedProblems(a, ["loss_record", "duplicate"])).toEqual([]);
    expect(a.missing).toEqual([]);
    expect(a.lostAndReceived).toEqual([]);
    expect(a.doubled).toEqual([]);
  });

  it("a row deleted from the outbox gives a `gap` naming exactly that seq", async () => {
    h = await Harness.create({ settings: { "heartbeat.interval_ms": "600000" }, gapTimeoutMs: 500 });
    const rt = await fill(h, 200);
    const boot = rt.recorder.bootEpoch;
    // One row is deleted behind the recorder's back while the daemon runs (the broker is down),
    // through the daemon's own connection: no other can open the file while it runs.
    const db = rt.outbox.db;
    const row = db.prepare("SELECT id, boot, seq FROM events WHERE rank = 0 ORDER BY id LIMIT 1 OFFSET 90").get() as { id: number; boot: number; seq: number };
    expect(db.prepare("DELETE FROM events WHERE id = ?").run(row.id).changes).toBe(1);
    await h.broker.resume();
    await until(() => h!.lines.some((l) => "problem" in l && l.problem === "gap"), 15_000, "the gap to be reported");
    await h.stopRuntime(rt, 10_000);
    const last = rt.recorder.counters.committed - 1;
    await until(() => h!.lines.some((l) => !("problem" in l) && l.seq === last), 15_000, "the shutdown event to reach the SOC");
    await sleep(200);
    const a = account(h.lines, last);
    const gaps = a.problems.filter((p) => p.problem === "gap");
    expect(gaps.map((g) => ({ boot: g.boot, first: g.first, last: g.last, count: g.count }))).toEqual([{ boot, first: row.seq, last: row.seq, count: 1 }]);
    expect(unexpectedProblems(a, ["gap", "duplicate"])).toEqual([]);
    expect(a.missing).toEqual([`${boot}:${row.seq}`]);
    expect(a.doubled).toEqual([]);
  });

  it("a captured MQTT message re-published gives `duplicate` lines, never a second event, also after a receiver restart", async () => {
    h = await Harness.create({ settings: { "simulate.events_per_s": "400", "upstream.max_batch_events": "32", "heartbeat.interval_ms": "600000" } });
    // A bystander on the broker records the sealed messages as they pass.
    const spy = mqtt.connect(h.broker.url, { protocolVersion: 4, clientId: "spy" });
    const captured: Buffer[] = [];
    spy.on("message", (_t, p) => captured.push(Buffer.from(p)));
    await new Promise<void>((r) => spy.once("connect", () => r()));
    await new Promise<void>((r, j) => spy.subscribe("gatewarden/v1/+/events", { qos: 1 }, (e) => (e ? j(e) : r())));
    try {
      const rt = await h.runtime();
      await until(() => captured.length >= 4, 15_000, "a few messages to pass the broker");
      await h.stopRuntime(rt, 10_000);
      const committed = rt.recorder.counters.committed;
      await until(() => h!.events >= committed, 15_000, `the receiver to verify ${committed} events`);
      const replay = async (payload: Buffer) => {
        const { header } = readHeader(payload);
        const before = h!.lines.length;
        await spy.publishAsync(`gatewarden/v1/${header.device}/events`, payload, { qos: 1 });
        await until(() => h!.lines.length >= before + header.count, 10_000, "the replayed batch to be processed");
        await sleep(100);
        const added = h!.lines.slice(before);
        expect(added.every((l) => "problem" in l && l.problem === "duplicate")).toBe(true);
        expect(added.map((l) => (l as { first: number }).first)).toEqual(Array.from({ length: header.count }, (_, i) => header.from[1] + i));
      };
      await replay(captured[1]!);
      // The receiver's de-duplication state survives its restart.
      await h.rx!.stop();
      await h.startReceiver();
      await replay(captured[2]!);
      const a = account(h.lines, committed - 1);
      expect(unexpectedProblems(a, ["duplicate", "receiver_restarted"])).toEqual([]);
      expect(a.problems.filter((p) => p.problem === "receiver_restarted").map((p) => p.previous_end)).toEqual(["stopped"]);
      expect(a.doubled).toEqual([]);
      expect(a.missing).toEqual([]);
      expect(a.events.length).toBe(committed);
    } finally {
      spy.end(true);
    }
  });
});
