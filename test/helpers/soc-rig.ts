import { join } from "node:path";
import { EmbeddedBroker } from "../../agent/embedded-broker";
import { SocReceiver, type ReceiverOptions } from "../../agent/soc/receive";
import type { OutLine, ProblemLine } from "../../agent/soc/verifier";
import { makeSite, silent, tempDir, until } from "./fixture";

/** Teardowns run in reverse order after each test. */
export type Cleanups = (() => Promise<void> | void)[];

/**
 * A temp dir, an aedes broker (with `brokerOptions`' authorisation hooks) and a gateway site
 * (config pointed at the broker) with a SOC dir that trusts it.
 */
export async function aedesSite(cleanups: Cleanups, settings: Record<string, string> = {}, brokerOptions: Parameters<EmbeddedBroker["start"]>[1] = {}): Promise<{ dir: string; broker: EmbeddedBroker; site: ReturnType<typeof makeSite> }> {
  const t = tempDir();
  cleanups.push(t.cleanup);
  const broker = new EmbeddedBroker();
  await broker.start(0, brokerOptions);
  cleanups.push(() => broker.stop());
  const site = makeSite(t.dir, { settings: { "upstream.url": broker.url, ...settings } });
  return { dir: t.dir, broker, site };
}

export interface RunningReceiver {
  rx: SocReceiver;
  /** Every line the receiver wrote. */
  lines: OutLine[];
  /** Its problem lines of one kind. */
  of: (kind: string) => ProblemLine[];
  /** Waits for n more group commits (each sweep is one). */
  sweeps: (n: number) => Promise<void>;
}

/** A started SOC receiver (MQTT 3.1.1, client id soc-1, the events topic of every gateway), stopped after the test. */
export async function startReceiver(cleanups: Cleanups, o: Pick<ReceiverOptions, "broker" | "dir"> & Partial<ReceiverOptions>): Promise<RunningReceiver> {
  const lines: OutLine[] = [];
  const rx = new SocReceiver({ out: join(o.dir, "..", "soc.jsonl"), topic: "gatewarden/v1/+/events", clientId: "soc-1", protocolVersion: 4, gapTimeoutMs: 60_000, dedupeWindow: 100_000, log: silent, onLine: (l) => lines.push(l), ...o });
  await rx.start();
  cleanups.push(() => rx.stop());
  return {
    rx,
    lines,
    of: (kind) => lines.filter((l): l is ProblemLine => "problem" in l && l.problem === kind),
    sweeps: async (n) => {
      const c = rx.counters.commits;
      await until(() => rx.counters.commits >= c + n, 20_000, `${n} sweeps`);
    },
  };
}
