import { afterEach, describe, expect, it } from "vitest";
import { statSync } from "node:fs";
import { join } from "node:path";
import { account, unexpectedProblems } from "../helpers/daemon";
import { sleep, until } from "../helpers/fixture";
import { Harness, pick, TIMEOUT } from "./_harness";
import { simulatedDraft } from "../../agent/simulate";
import { connectAsync as mqttConnect } from "mqtt";
import { formatStatus, type StatusView } from "../../agent/commands/daemon";

const MAX_BYTES = 1024 * 1024; // the smallest budget the config accepts

describe("fault: disk budget exhausted", () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  const runMs = pick(2500, 20_000);
  it(`stays within buffer.max_bytes with the broker down for ${runMs} ms at a high rate; loss records account for every evicted seq`, async () => {
    // The SOC waits 180 s for a position before it calls it a gap: on a loaded machine the loss
    // records that name the outage's evictions have come after the receiver's usual 60 s.
    h = await Harness.create({ settings: { "simulate.events_per_s": "4000", "buffer.max_bytes": String(MAX_BYTES), "heartbeat.interval_ms": "500" }, gapTimeoutMs: 180_000 });
    const db = join(h.site.gwDir, "data", "outbox.db");
    const size = () => ["", "-wal", "-shm"].reduce((n, s) => n + fileSize(db + s), 0);
    await h.broker.pause();
    const rt = await h.runtime();
    const started = Date.now();
    let max = 0;
    let samples = 0;
    let ranMs = 0;
    const sampler = setInterval(() => {
      max = Math.max(max, size());
      samples++;
    }, 5);
    // Also sample right after every commit, when the files are at their largest.
    const off = rt.recorder.onCommit(() => {
      max = Math.max(max, size());
      samples++;
    });
    try {
      await sleep(runMs);
      // On a loaded machine the synthetic source runs slow: wait for a real amount of eviction.
      await until(() => rt.recorder.counters.evicted >= pick(500, 20_000), 60_000, "the outbox to fill and evict");
      rt.stopSources();
      await h.broker.resume();
      await until(() => rt.upstreamState() === "up", 10_000, "the agent to reconnect");
      // Drained in about 2 s on a quiet machine; twice in loaded full-suite runs it had not in 30 s.
      // Allowed one SOC-acknowledgement resend (soc_ack_timeout_ms, 30 s) and more; a timeout says
      // where it stood, for the next look.
      await until(() => rt.outbox.stats().depth < 100, 90_000, "the backlog to drain").catch((e: Error) => {
        const st = rt.status() as { upstream?: unknown };
        throw new Error(`${e.message}: ${JSON.stringify({ depth: rt.outbox.stats().depth, upstream: st.upstream, counters: rt.recorder.counters, soc_events: h!.events, loss_pending: rt.outbox.pendingLoss().length })}`);
      });
      await h.stopRuntime(rt, 60_000);
    } finally {
      ranMs = Date.now() - started;
      clearInterval(sampler);
      off();
    }
    expect(samples).toBeGreaterThan(20);
    expect(max).toBeLessThanOrEqual(MAX_BYTES);
    const committed = rt.recorder.counters.committed;
    const evicted = rt.recorder.counters.evicted;
    // Every position received or named by a loss record that has arrived: a condition, not a
    // pause (the stop's drain waits for the SOC's acknowledgements, but may run out).
    let a = account(h.lines, committed - 1);
    const settled = () => h!.events >= committed - evicted && (a = account(h!.lines, committed - 1)).missing.length === 0;
    // On a timeout the assertions below say what is missing.
    await until(settled, 60_000, "every position received or named").catch(() => undefined);
    expect(h.events, `the receiver verified ${h.events} of ${committed - evicted} events`).toBeGreaterThanOrEqual(committed - evicted);
    expect(unexpectedProblems(a, ["duplicate", "loss_record"])).toEqual([]);
    // Every position is received or named by exactly one loss record, never neither. Both only
    // for a row evicted after it was sent (the drain's commits, heartbeats every 500 ms here, still
    // evict the oldest rows while the SOC's acknowledgements lag the backlog): its loss record
    // must say so (sent_unacknowledged), and the SOC must not count it lost.
    const losses = a.problems.filter((p) => p.problem === "loss_record");
    const namedSent = new Set(losses.flatMap((p) => keys((p.sent_unacknowledged as { ranges: Ranges } | null)?.ranges ?? [])));
    expect(a.missing).toEqual([]);
    expect(a.lostAndReceived.filter((k) => !namedSent.has(k)), "received, and named lost without saying it had been sent").toEqual([]);
    expect(a.heldButToldLost).toEqual([]);
    expect(a.lostTwice).toEqual([]);
    expect(a.doubled).toEqual([]);
    expect(a.lost.size).toBe(evicted);
    expect(a.events.length + a.lost.size - a.lostAndReceived.length).toBe(committed);
    // The SOC was told by signed loss records (the eviction order itself is unit-tested).
    expect(losses.length).toBeGreaterThan(0);
    expect(losses.every((p) => p.reason === "buffer_full")).toBe(true);
    // Coalesced: one loss record per class per 5 s interval (and at shutdown), not one per commit.
    expect(losses.length).toBeLessThanOrEqual(5 * (Math.ceil(ranMs / 5000) + 1));
    const v = await h.verifyOutput();
    expect(Object.keys(v.problems).filter((k) => k !== "loss_record")).toEqual([]);
  }, Math.max(TIMEOUT, 240_000)); // conditions, each bounded, add up past the short run's 60 s on a loaded machine

  // Seen under load: the SOC held the backlog but could not acknowledge past the first hole until
  // the interval's loss records came; a commit then evicted 83 rows it had received, and the loss
  // records named them lost.
  it("names an outage's evictions when the upstream comes back, before the backlog: the SOC acknowledges it and is told of no loss it did not have", async () => {
    let published = 0;
    h = await Harness.create({
      settings: { "buffer.max_bytes": String(MAX_BYTES), "heartbeat.interval_ms": "3600000" },
      authorizePublish: (topic, accept) => {
        if (topic.endsWith("/events")) published++;
        accept();
      },
    });
    await h.broker.pause();
    const rt = await h.runtime();
    // The outbox overflows at once, well within the first loss record interval (5 s).
    for (let n = 0; rt.recorder.counters.evicted < 500; n++) {
      rt.recorder.record(simulatedDraft(n));
      if (n % 100 === 99) rt.recorder.flush();
    }
    rt.recorder.flush();
    expect(rt.outbox.pendingLoss().length, "evictions no loss record names yet").toBeGreaterThan(0);
    let publishedWhenNamed: number | undefined;
    const off = rt.recorder.onCommit(() => {
      if (publishedWhenNamed === undefined && rt.outbox.pendingLoss().length === 0) publishedWhenNamed = published;
    });
    await h.broker.resume();
    const last = () => rt.recorder.counters.committed - 1;
    await until(() => account(h!.lines, last()).missing.length === 0 && rt.outbox.stats().depth === 0, 60_000, "the SOC to settle and acknowledge the backlog");
    off();
    expect(publishedWhenNamed, "batches published before the loss records were committed").toBe(0);
    await h.stopRuntime(rt, 60_000);
    const evicted = rt.recorder.counters.evicted;
    let a = account(h.lines, last());
    await until(() => (a = account(h!.lines, last())).missing.length === 0, 60_000, "the shutdown event").catch(() => undefined);
    expect(a.missing).toEqual([]);
    expect(a.lostAndReceived).toEqual([]);
    expect(a.heldButToldLost).toEqual([]);
    expect(a.lostTwice).toEqual([]);
    expect(a.lost.size).toBe(evicted);
  }, 180_000);

  // With the link up but the SOC's acknowledgements not reaching the gateway (the broker drops
  // them), the oldest rows are delivered and still in the outbox when it overflows: the device
  // names them lost, and the SOC must say it has them.
  it("the SOC's acknowledgements lag while the outbox overflows: the loss records' lines say which named events the SOC received", async () => {
    let holding = true;
    h = await Harness.create({
      settings: { "buffer.max_bytes": String(MAX_BYTES), "heartbeat.interval_ms": "3600000" },
      authorizePublish: (topic, accept, drop) => (holding && topic.endsWith("/ack") ? drop() : accept()),
    });
    const rt = await h.runtime();
    const last = () => rt.recorder.counters.committed - 1;
    await until(() => rt.upstreamState() === "up", 10_000, "the agent to connect");
    // 300 rows (a third of the budget) delivered and left unacknowledged, then enough to overflow.
    let n = 0;
    for (; n < 300; n++) rt.recorder.record(simulatedDraft(n));
    rt.recorder.flush();
    await until(() => h!.events >= 300, 60_000, "the SOC to receive the first rows");
    for (; rt.recorder.counters.evicted < 500; n++) {
      rt.recorder.record(simulatedDraft(n));
      if (n % 100 === 99) rt.recorder.flush();
    }
    rt.recorder.flush();
    await until(() => account(h!.lines, last()).lostAndReceived.length > 0, 60_000, "an evicted row the SOC received to be named lost");
    // What `gatewarden status` prints, from the running gateway's status.
    const st = rt.status() as unknown as StatusView;
    expect(st.counters.evicted_sent).toBeGreaterThan(0);
    expect(formatStatus(st).split("\n")).toContain(`  evicted   ${st.counters.evicted} evicted (${st.counters.evicted_sent} of them had been sent; the SOC may hold them) since start (buffer.max_bytes; named by loss records)`);
    holding = false;
    await h.stopRuntime(rt, 60_000);
    let a = account(h.lines, last());
    await until(() => (a = account(h!.lines, last())).missing.length === 0, 60_000, "every position received or named").catch(() => undefined);
    expect(a.missing).toEqual([]);
    expect(a.heldButToldLost).toEqual([]);
    const losses = a.problems.filter((p) => p.problem === "loss_record");
    const received = losses.reduce((n, p) => n + (p.received as { count: number }).count, 0);
    expect(received).toBeGreaterThan(0);
    // Each line's count is what it named minus what the SOC held when it came.
    for (const p of losses) expect(p.count).toBe((p.ranges as [number, number, number][]).reduce((n, r) => n + r[2] - r[1] + 1, 0) - (p.received as { count: number }).count);
    // The device named the delivered rows it evicted as sent and unacknowledged (its counter,
    // `status` and the records agree), and the SOC agrees: what it held when a record came, and
    // what came after it (late, naming that record), is exactly what the record says was sent.
    const evictedSent = rt.recorder.counters.evicted_sent;
    expect(evictedSent).toBeGreaterThan(0);
    expect(losses.reduce((n, p) => n + ((p.sent_unacknowledged as { count: number } | null)?.count ?? 0), 0)).toBe(evictedSent);
    const late = a.events.filter((e) => e.late);
    for (const p of losses) {
      const rec = p.record as { boot: number; seq: number };
      const sent = (p.sent_unacknowledged as { ranges: Ranges } | null)?.ranges ?? [];
      const arrived = [...keys((p.received as { ranges: Ranges }).ranges), ...late.filter((e) => e.loss_record?.boot === rec.boot && e.loss_record.seq === rec.seq).map((e) => `${e.boot}:${e.seq}`)];
      expect(arrived.sort(), `record ${rec.boot}:${rec.seq}: received and late against sent_unacknowledged`).toEqual(keys(sent).sort());
    }
    // Every late event names its record.
    expect(late.filter((e) => !e.loss_record)).toEqual([]);
  }, 180_000);

  // A batch the broker acknowledges but hands over only after the gateway evicted its rows
  // (named sent and unacknowledged) and the SOC got that loss record: the SOC verifies the
  // events as late, each naming the record that named it. The broker drops the batch; the test
  // hands the same message over later, as a delayed copy (a bridge catching up) would.
  it("rows sent, evicted before any acknowledgement and delivered after their loss record: named sent_unacknowledged, late at the SOC naming that record", async () => {
    let hold = false;
    let held: Buffer | undefined;
    h = await Harness.create({
      // The gateway does not send the dropped batch again (after soc_ack_timeout_ms) before it evicts it, however slow the machine.
      settings: { "buffer.max_bytes": String(MAX_BYTES), "heartbeat.interval_ms": "3600000", "upstream.soc_ack_timeout_ms": "600000" },
      authorizePublish: (topic, accept, drop, payload) => {
        if (!hold || !topic.endsWith("/events") || held) return accept();
        held = payload;
        drop();
      },
    });
    const rt = await h.runtime();
    const last = () => rt.recorder.counters.committed - 1;
    await until(() => rt.upstreamState() === "up" && h!.events > 0, 10_000, "the boot event at the SOC");
    hold = true;
    let n = 0;
    for (; n < 20; n++) rt.recorder.record(simulatedDraft(n));
    rt.recorder.flush();
    await until(() => held !== undefined, 10_000, "a batch dropped by the broker");
    // Its rows stay in flight (never evicted) until the broker's acknowledgement reaches the
    // gateway; the loop below fills the budget without yielding, so it waits for that first.
    await until(() => rt.sink("upstream")!.inFlight().size === 0, 10_000, "the broker's acknowledgement of the dropped batch at the gateway");
    hold = false;
    for (; rt.recorder.counters.evicted < 500; n++) {
      rt.recorder.record(simulatedDraft(n));
      if (n % 100 === 99) rt.recorder.flush();
    }
    rt.recorder.flush();
    const records = () => account(h!.lines).problems.filter((p) => p.problem === "loss_record");
    const sentNamed = () => records().reduce((k, p) => k + ((p.sent_unacknowledged as { count: number } | null)?.count ?? 0), 0);
    // A timeout says where it stood: what the SOC's loss records named as sent, against the gateway's count.
    const stood = () => JSON.stringify({ named_sent: sentNamed(), evicted_sent: rt.recorder.counters.evicted_sent, counters: rt.recorder.counters, outbox: rt.outbox.stats(), records: records().map((p) => ({ record: p.record, count: p.count, sent_unacknowledged: p.sent_unacknowledged })) });
    await until(() => sentNamed() > 0 && sentNamed() === rt.recorder.counters.evicted_sent, 60_000, "the loss records naming the sent rows at the SOC").catch((e: Error) => {
      throw new Error(`${e.message}; ${stood()}`);
    });
    // The dropped batch reaches the SOC now, after the records that named its rows.
    const copy = await mqttConnect(h.broker.url);
    await copy.publishAsync(`gatewarden/v1/${h.site.load().config.device.id}/events`, held!, { qos: 1 });
    await copy.endAsync();
    await until(() => account(h!.lines).events.some((e) => e.late), 30_000, "a late event at the SOC");
    await h.stopRuntime(rt, 60_000);
    const a = account(h.lines, last());
    const late = a.events.filter((e) => e.late);
    expect(late.length).toBeGreaterThan(0);
    for (const e of late) {
      const rec = records().find((p) => (p.record as { boot: number; seq: number }).seq === e.loss_record?.seq && (p.record as { boot: number }).boot === e.loss_record.boot);
      expect(rec, `late ${e.boot}:${e.seq} names a loss record the SOC has`).toBeDefined();
      expect(keys((rec!.sent_unacknowledged as { ranges: Ranges }).ranges)).toContain(`${e.boot}:${e.seq}`);
      // Not received when its record came: counted lost there, and said to have been sent.
      expect(keys((rec!.received as { ranges: Ranges }).ranges)).not.toContain(`${e.boot}:${e.seq}`);
    }
    expect(a.heldButToldLost).toEqual([]);
    expect(unexpectedProblems(a, ["loss_record", "duplicate"])).toEqual([]);
  }, 180_000);
});

type Ranges = [number, number, number][];
const keys = (ranges: Ranges) => ranges.flatMap(([b, f, l]) => Array.from({ length: l - f + 1 }, (_, i) => `${b}:${f + i}`));

function fileSize(p: string): number {
  try {
    return statSync(p).size;
  } catch {
    return 0;
  }
}
