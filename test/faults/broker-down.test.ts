import { afterEach, describe, expect, it } from "vitest";
import { account, unexpectedProblems } from "../helpers/daemon";
import { sleep, until } from "../helpers/fixture";
import { Harness, pick, TIMEOUT } from "./_harness";

describe("fault: broker down for a while", () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  const downMs = pick(2000, 30_000);
  it(`buffers through a ${downMs} ms outage and delivers every event exactly once`, async () => {
    h = await Harness.create({ settings: { "simulate.events_per_s": "1000" } });
    const rt = await h.runtime();
    await until(() => rt.upstreamState() === "up" && h!.events > 100, 10_000, "first deliveries");
    await h.broker.pause();
    await sleep(300);
    const before = h.events;
    await sleep(downMs);
    // Nothing got through, and the outbox held everything recorded meanwhile.
    expect(rt.upstreamState()).not.toBe("up");
    expect(h.events).toBe(before);
    expect(rt.outbox.stats().depth).toBeGreaterThan(pick(200, 3000));
    await h.broker.resume();
    await until(() => rt.upstreamState() === "up", 10_000, "the agent to reconnect");
    await until(() => rt.outbox.stats().depth < 100, pick(20_000, 120_000), "the backlog to drain");
    await h.stopRuntime(rt, 15_000);
    const committed = rt.recorder.counters.committed;
    expect(rt.outbox.db.open).toBe(false);
    await until(() => h!.events >= committed, 20_000, `the receiver to verify ${committed} events (has ${h!.events})`);
    const a = account(h.lines, committed - 1);
    expect(unexpectedProblems(a, ["duplicate"])).toEqual([]);
    expect(a.doubled).toEqual([]);
    expect(a.missing).toEqual([]);
    expect(a.events.length).toBe(committed);
    const v = await h.verifyOutput();
    expect(v.problems).toEqual({});
  }, TIMEOUT);
});
