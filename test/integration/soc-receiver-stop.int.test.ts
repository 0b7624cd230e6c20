import { afterEach, describe, expect, it } from "vitest";
import { Runtime } from "../../agent/runtime";
import { silent, until } from "../helpers/fixture";
import { aedesSite, startReceiver, type Cleanups } from "../helpers/soc-rig";

// A receiver asked to stop ended its MQTT connection cleanly, which waits for the broker to
// acknowledge the acks it published. When that acknowledgement never comes (a broker gone or
// stalled, a reconnect in progress) mqtt.js waits for ever: seen once as a test's cleanup
// hanging past 60 s after the broker had been flapping. What the receiver took is committed and
// acknowledged before it stops, so it now ends anyway after a bounded wait.
describe("stopping the SOC receiver", () => {
  const cleanups: Cleanups = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  it("ends within seconds while the broker never acknowledges the acks it sent", async () => {
    const held: (() => void)[] = [];
    // The receiver's signed acks to the gateway are held: their PUBACK never comes.
    const { site, broker } = await aedesSite(cleanups, { "upstream.protocol_version": "4", "simulate.events_per_s": "50" }, { authorizePublish: (topic, accept) => (topic.endsWith("/ack") ? held.push(accept) : accept()) });
    const { rx } = await startReceiver(cleanups, { broker: broker.url, dir: site.socDir });
    const rt = new Runtime(site.load(), silent);
    await rt.start();
    cleanups.push(() => rt.stop("cleanup", 0).catch(() => undefined));
    await until(() => rx.counters.events > 20 && held.length > 0, 20_000, "events received and acks in flight");
    const t0 = Date.now();
    await rx.stop();
    expect(Date.now() - t0).toBeLessThan(15_000);
    // Its state and output are whole: it opens and goes on.
    const { rx: again } = await startReceiver(cleanups, { broker: broker.url, dir: site.socDir });
    await until(() => again.counters.events > 0, 20_000, "the restarted receiver to verify events");
    for (const a of held) a();
  });
});
