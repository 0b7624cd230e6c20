/** describeSink against each sink: the MQTT forwarder with a real broker (aedes) and SOC receiver. */
import { join } from "node:path";
import { EmbeddedBroker } from "../../agent/embedded-broker";
import { Runtime } from "../../agent/runtime";
import { SocReceiver } from "../../agent/soc/receive";
import type { EventLine, OutLine } from "../../agent/soc/verifier";
import { makeSite, silent, tempDir } from "../helpers/fixture";
import { describeSink, type Position, type SinkRig } from "./describe-sink";

const WINDOW = 4;

describeSink("MQTT forwarder (aedes)", async (): Promise<SinkRig> => {
  const t = tempDir();
  let holding = false;
  let held: { accept: () => void; connection: object }[] = [];
  let maxHeld = 0;
  const broker = new EmbeddedBroker();
  await broker.start(0, {
    authorizePublish: (topic, accept, _drop, _payload, connection) => {
      if (!holding || !topic.endsWith("/events")) return accept();
      held.push({ accept, connection });
      // The window bounds one connection's messages in flight. A hold longer than the keepalive
      // ends the connection (the broker answers no ping behind a held PUBLISH), and the sink sends
      // its unacknowledged messages again on the next: those are not more in flight at once.
      maxHeld = Math.max(maxHeld, held.filter((h) => h.connection === connection).length);
    },
  });
  const site = makeSite(t.dir, {
    settings: {
      "upstream.url": broker.url,
      "upstream.protocol_version": "4",
      "upstream.reconnect_min_ms": "100",
      "upstream.reconnect_max_ms": "300",
      "upstream.max_inflight": String(WINDOW),
      "upstream.max_batch_events": "10",
      "heartbeat.interval_ms": "3600000",
    },
  });
  const lines: EventLine[] = [];
  const rx = new SocReceiver({ broker: broker.url, dir: site.socDir, out: join(t.dir, "soc-out.jsonl"), topic: "gatewarden/v1/+/events", clientId: "soc-conformance", protocolVersion: 4, gapTimeoutMs: 60_000, dedupeWindow: 100_000, log: silent, onLine: (l: OutLine) => void ("problem" in l ? undefined : lines.push(l)) });
  await rx.start();
  const boots: Runtime[] = [];
  const boot = async () => {
    const rt = new Runtime(site.load(), silent);
    await rt.start();
    boots.push(rt);
  };
  await boot();
  const rt = () => boots[boots.length - 1]!;
  return {
    sink: () => rt().sink("upstream")!,
    produce(n) {
      for (let i = 0; i < n; i++) rt().recorder.record({ class: "audit", severity: 1, ocsf: { class_uid: 6002, activity_id: 99, message: `conformance ${i}` } });
      rt().recorder.flush();
    },
    committed: () => boots.flatMap((b) => Array.from({ length: b.recorder.counters.committed }, (_, seq): Position => ({ boot: b.recorder.bootEpoch, seq }))),
    received: () => lines.map((l) => ({ boot: l.boot, seq: l.seq })),
    // The sink loses its broker; the receiver stays connected, so what it sees first is the order
    // the sink sent (a receiver queued offline would add the broker's own delivery order to it).
    outage: () => broker.pause(["soc-conformance"]),
    restore: () => broker.resume(),
    holdAcks: () => void (holding = true),
    releaseAcks() {
      holding = false;
      for (const h of held.splice(0)) h.accept();
    },
    maxHeld: () => maxHeld,
    window: WINDOW,
    // The SOC receiver's connection and the sink's.
    connections: () => broker.connectedClients - 1,
    async restart() {
      await rt().stop("conformance restart", 0);
      await boot();
    },
    async close() {
      holding = false;
      for (const h of held.splice(0)) h.accept();
      for (const b of boots) await b.stop("conformance done", 0);
      await rx.stop();
      await broker.stop();
      t.cleanup();
    },
  };
});
