import { afterEach, describe, expect, it } from "vitest";
import { Runtime } from "../../agent/runtime";
import { silent, until } from "../helpers/fixture";
import { aedesSite, startReceiver, type Cleanups } from "../helpers/soc-rig";

// A gateway that stops (power, network, a thief) sends nothing, so nothing in its stream says
// so: the receiver reports the silence of its heartbeat, once, and when it is heard again.
describe("a gateway that goes quiet, at the SOC", () => {
  const cleanups: Cleanups = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  it("is reported silent once after --silence-ms without an event, and silence_ended when it is back", async () => {
    const { site, broker } = await aedesSite(cleanups, { "upstream.protocol_version": "4", "upstream.reconnect_min_ms": "100", "upstream.reconnect_max_ms": "300", "heartbeat.interval_ms": "200" });
    const silenceMs = 4000;
    const { rx, lines, of } = await startReceiver(cleanups, { broker: broker.url, dir: site.socDir, silenceMs });
    let rt = new Runtime(site.load(), silent);
    await rt.start();
    // Heartbeats every 200 ms for more than twice the silence: never silent while it sends.
    await until(() => rx.counters.events >= 45, 30_000, "heartbeats for 9 s");
    expect(of("silent")).toEqual([]);
    rt.stopSources();
    await rt.stop("test", 5000);
    const last = lines.filter((l) => !("problem" in l)).at(-1) as { device: string; boot: number; seq: number };
    await until(() => of("silent").length > 0, 20_000, "the silent line");
    const s = of("silent")[0]!;
    expect(s).toMatchObject({ device: last.device, boot: last.boot, last_event: { boot: last.boot, seq: last.seq } });
    expect(s.received_at - (s.last_received_at as number)).toBeGreaterThanOrEqual(silenceMs);
    expect(s.detail).toMatch(new RegExp(`^no event from ${last.device} for \\d+ s \\(last: ${last.boot}:${last.seq}, `));
    // Back: a new boot.
    rt = new Runtime(site.load(), silent);
    await rt.start();
    cleanups.push(() => rt.stop("cleanup", 0).catch(() => undefined));
    await until(() => of("silence_ended").length > 0, 20_000, "the silence_ended line");
    const e = of("silence_ended")[0]!;
    expect(e.device).toBe(last.device);
    expect(e.boot).toBeGreaterThan(last.boot); // a new boot epoch
    expect(e.silent_ms as number).toBeGreaterThanOrEqual(silenceMs);
    expect(of("silent")).toHaveLength(1);
    expect(lines.filter((l) => "problem" in l && !["silent", "silence_ended"].includes(l.problem))).toEqual([]);
  });
});
