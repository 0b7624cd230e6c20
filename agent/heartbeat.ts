import type { Logger } from "pino";
import { describeError } from "./core/errors";
import { withinMs } from "./core/time-limit";
import { OcsfClass } from "./core/events";
import type { EventSink } from "./core/events";

export interface Posture {
  load_1m: number | null;
  cpu_pct: number | null;
  mem_used_pct: number | null;
  disk_used_pct: number | null;
  temperature_c: number | null;
}

/** Device posture from systeminformation, loaded lazily; refreshed at most every `maxAgeMs`. */
export class PostureProbe {
  private cached: Posture | undefined;
  private at = 0;
  private inFlight: Promise<Posture> | undefined;

  constructor(
    private readonly diskPath: string,
    private readonly maxAgeMs = 30_000,
  ) {}

  async read(): Promise<Posture> {
    if (this.cached && Date.now() - this.at < this.maxAgeMs) return this.cached;
    this.inFlight ??= this.measure().finally(() => (this.inFlight = undefined));
    return this.inFlight;
  }

  private async measure(): Promise<Posture> {
    const si = (await import("systeminformation")).default;
    const [load, mem, fs, temp] = await Promise.all([
      si.currentLoad().catch(() => null),
      si.mem().catch(() => null),
      si.fsSize().catch(() => null),
      si.cpuTemperature().catch(() => null),
    ]);
    const disk = fs?.filter((f) => this.diskPath.startsWith(f.mount)).sort((a, b) => b.mount.length - a.mount.length)[0];
    const { loadavg } = await import("node:os");
    this.cached = {
      load_1m: round(loadavg()[0] ?? null),
      cpu_pct: round(load?.currentLoad ?? null),
      mem_used_pct: mem ? round(((mem.total - mem.available) / mem.total) * 100) : null,
      disk_used_pct: round(disk?.use ?? null),
      temperature_c: round(temp?.main ?? null),
    };
    this.at = Date.now();
    return this.cached;
  }
}

function round(n: number | null): number | null {
  return n === null || !Number.isFinite(n) ? null : Math.round(n * 10) / 10;
}

/** How long a heartbeat waits for the posture figures before it goes without them. */
export const PROBE_TIMEOUT_MS = 15_000;

/** A signed heartbeat every `intervalMs` carrying outbox state and posture figures. */
export class Heartbeat {
  private timer: NodeJS.Timeout | undefined;
  private busy = false;
  private stopped = false;

  constructor(
    private readonly o: {
      intervalMs: number;
      sink: EventSink;
      /** The posture figures (PostureProbe, or agent/posture.ts with a config). */
      probe: { read(): Promise<Posture | Record<string, unknown>> };
      state: () => Record<string, unknown>;
      log: Logger;
      /** How long a heartbeat waits for the probe (default PROBE_TIMEOUT_MS). */
      probeTimeoutMs?: number;
    },
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.beat(), this.o.intervalMs);
    this.timer.unref();
  }

  async beat(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      let posture: Posture | Record<string, unknown> = {};
      // A probe that hangs (a command or /sys read that never returns) must not stop the
      // heartbeat: it goes out without the figures, saying why.
      const limit = this.o.probeTimeoutMs ?? PROBE_TIMEOUT_MS;
      try {
        posture = await withinMs(this.o.probe.read(), limit, `the posture probe did not answer within ${limit} ms`);
      } catch (e) {
        this.o.log.warn({ err: describeError(e) }, "Posture probe failed; the heartbeat goes without its figures.");
        posture = { error: describeError(e) };
      }
      // The probe can take seconds: the daemon may have stopped (outbox closed) meanwhile.
      if (this.stopped) return;
      this.o.sink.record({
        class: "heartbeat",
        severity: 1,
        ocsf: {
          class_uid: OcsfClass.DeviceInventoryInfo,
          activity_id: 2, // Collect
          message: "Heartbeat",
          // `interval_ms`: when the next one is due (the SOC receiver's silence check reads it).
          unmapped: { heartbeat: { ...this.o.state(), interval_ms: this.o.intervalMs, posture } },
        },
      });
    } finally {
      this.busy = false;
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
  }
}
