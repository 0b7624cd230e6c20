import { afterEach, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Runtime } from "../../agent/runtime";
import { silent, until } from "../helpers/fixture";
import { aedesSite, startReceiver, type Cleanups } from "../helpers/soc-rig";

describe("agent -> aedes -> SOC receiver", () => {
  const cleanups: Cleanups = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  it("delivers every event exactly once across a broker outage", async () => {
    const { dir, site, broker } = await aedesSite(cleanups, { "upstream.protocol_version": "4", "upstream.reconnect_min_ms": "100", "upstream.reconnect_max_ms": "500", "simulate.events_per_s": "500", "heartbeat.interval_ms": "1000" });
    const out = join(dir, "soc-out.jsonl");
    const { rx, lines } = await startReceiver(cleanups, { broker: broker.url, dir: site.socDir, out });
    const rt = new Runtime(site.load(), silent);
    await rt.start();
    await until(() => rx.counters.events >= 100, 20_000, "events to arrive before the outage");
    await broker.pause();
    const atPause = rt.recorder.counters.committed;
    await until(() => rt.recorder.counters.committed >= atPause + 200, 20_000, "events recorded during the outage");
    await broker.resume();
    const atResume = rt.recorder.counters.committed;
    await until(() => rx.counters.events >= atResume + 100, 20_000, "events after the outage to arrive");
    rt.stopSources();
    await rt.stop("test", 10_000);
    const committed = rt.recorder.counters.committed;
    await until(() => rx.counters.events >= committed, 10_000, `receiver to verify ${committed} events (has ${rx.counters.events})`);
    const events = lines.filter((l) => !("problem" in l));
    const problems = lines.filter((l) => "problem" in l).map((l) => (l as { problem: string }).problem);
    expect(problems.filter((p) => p !== "duplicate")).toEqual([]);
    const seqs = events.map((e) => (e as { seq: number }).seq).sort((a, b) => a - b);
    expect(seqs).toEqual(Array.from({ length: committed }, (_, i) => i));
    expect(readFileSync(out, "utf8").trim().split("\n").length).toBe(lines.length);
    // Heartbeats carry the outbox state and posture.
    const hb = events.find((e) => (e as { class: string }).class === "heartbeat") as unknown as { ocsf: { class_uid: number; unmapped: { heartbeat: Record<string, unknown> } } };
    expect(hb.ocsf.class_uid).toBe(5001);
    expect(hb.ocsf.unmapped.heartbeat).toMatchObject({ upstream: expect.any(String), outbox_depth: expect.any(Number), posture: expect.any(Object) });
  });

  it("a restarted receiver neither repeats nor misses a line, even after a crash mid-write", async () => {
    const { dir, site, broker } = await aedesSite(cleanups, { "upstream.protocol_version": "4", "upstream.reconnect_min_ms": "100", "upstream.reconnect_max_ms": "300", "simulate.events_per_s": "300" });
    const out = join(dir, "soc-out.jsonl");
    const mk = async () => (await startReceiver(cleanups, { broker: broker.url, dir: site.socDir, out, clientId: "soc-restart" })).rx;
    const first = await mk();
    const rt = new Runtime(site.load(), silent);
    await rt.start();
    await until(() => first.counters.events >= 50, 20_000, "the first receiver to write lines");
    await first.stop();
    // A crash between writing lines and committing state leaves uncommitted bytes: they are cut.
    const { appendFileSync } = await import("node:fs");
    appendFileSync(out, '{"device":"half-written');
    const atStop = rt.recorder.counters.committed;
    await until(() => rt.recorder.counters.committed >= atStop + 100, 20_000, "events recorded while no receiver runs");
    const second = await mk();
    await until(() => second.counters.events >= 50, 20_000, "the second receiver to write lines");
    rt.stopSources();
    await rt.stop("test", 10_000);
    const committed = rt.recorder.counters.committed;
    // Only whole lines: the receiver may be appending while the test reads.
    const read = () => readFileSync(out, "utf8").split("\n").slice(0, -1).map((l) => JSON.parse(l) as { seq?: number; problem?: string });
    await until(() => read().filter((l) => !l.problem).length >= committed, 10_000, "all events in the output file");
    const all = read();
    // The restart itself is reported, once: the output says the receiver was down in between.
    expect(all.filter((l) => l.problem && l.problem !== "duplicate")).toEqual([expect.objectContaining({ problem: "receiver_restarted", previous_end: "stopped" })]);
    expect(all.filter((l) => !l.problem).map((l) => l.seq).sort((a, b) => a! - b!)).toEqual(Array.from({ length: committed }, (_, i) => i));
  });
});
