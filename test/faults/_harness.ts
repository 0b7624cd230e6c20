import { join } from "node:path";
import { EmbeddedBroker } from "../../agent/embedded-broker";
import { Runtime } from "../../agent/runtime";
import { SocReceiver } from "../../agent/soc/receive";
import { TrustStore } from "../../agent/soc/trust";
import type { OutLine } from "../../agent/soc/verifier";
import { verifyFile, type VerifyReport } from "../../agent/soc/verify-file";
import { makeSite, silent, tempDir } from "../helpers/fixture";

/** Short versions by default (CI); long ones with GATEWARDEN_FAULTS=long (`npm run test:faults`). */
export const LONG = process.env.GATEWARDEN_FAULTS === "long";
export const pick = <T>(short: T, long: T): T => (LONG ? long : short);
/** Per-test timeout: the long versions run for minutes. */
export const TIMEOUT = pick(60_000, 900_000);

/**
 * One gateway site for a fault test: the in-process aedes broker (MQTT 3.1.1), a gateway
 * config that points at it, and a SOC receiver writing to `out`. Runtimes are in-process
 * unless the test spawns the daemon itself.
 */
export class Harness {
  readonly lines: OutLine[] = [];
  readonly out: string;
  rx: SocReceiver | undefined;
  private readonly runtimes = new Set<Runtime>();

  private constructor(
    readonly t: ReturnType<typeof tempDir>,
    readonly broker: EmbeddedBroker,
    readonly site: ReturnType<typeof makeSite>,
    private readonly gapTimeoutMs: number,
  ) {
    this.out = join(t.dir, "soc-out.jsonl");
  }

  /** `authorizePublish` sees every PUBLISH before the broker takes it (see EmbeddedBroker.start). */
  static async create(o: { settings?: Record<string, string>; gapTimeoutMs?: number; authorizePublish?: (topic: string, accept: () => void, drop: () => void, payload: Buffer) => void } = {}): Promise<Harness> {
    const t = tempDir("gw-fault-");
    const broker = new EmbeddedBroker();
    await broker.start(0, { authorizePublish: o.authorizePublish });
    const site = makeSite(t.dir, {
      settings: {
        "upstream.url": broker.url,
        "upstream.protocol_version": "4",
        "upstream.reconnect_min_ms": "50",
        "upstream.reconnect_max_ms": "300",
        "upstream.connect_timeout_ms": "2000",
        "heartbeat.interval_ms": "1000",
        ...o.settings,
      },
    });
    const h = new Harness(t, broker, site, o.gapTimeoutMs ?? 60_000);
    await h.startReceiver();
    return h;
  }

  async startReceiver(): Promise<SocReceiver> {
    const rx = new SocReceiver({
      broker: this.broker.url,
      dir: this.site.socDir,
      out: this.out,
      topic: "gatewarden/v1/+/events",
      clientId: "soc-1",
      protocolVersion: 4,
      gapTimeoutMs: this.gapTimeoutMs,
      dedupeWindow: 1_000_000,
      log: silent,
      onLine: (l) => this.lines.push(l),
    });
    await rx.start();
    this.rx = rx;
    return rx;
  }

  async runtime(): Promise<Runtime> {
    const rt = new Runtime(this.site.load(), silent);
    this.runtimes.add(rt);
    await rt.start();
    return rt;
  }

  async stopRuntime(rt: Runtime, drainMs: number): Promise<void> {
    this.runtimes.delete(rt);
    rt.stopSources();
    await rt.stop("test", drainMs);
  }

  get events(): number {
    return this.rx?.counters.events ?? 0;
  }

  /** Re-verifies the receiver's output file offline (signatures, hashes, chain, gaps). */
  async verifyOutput(): Promise<VerifyReport> {
    return verifyFile(this.out, new TrustStore(this.site.socDir));
  }

  async close(): Promise<void> {
    for (const rt of this.runtimes) await rt.stop("cleanup", 0).catch(() => undefined);
    this.runtimes.clear();
    const rx = this.rx;
    this.rx = undefined;
    if (rx) await rx.stop().catch(() => undefined);
    await this.broker.stop().catch(() => undefined);
    this.t.cleanup();
  }
}
