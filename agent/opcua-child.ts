/**
 * The OPC UA process: the OPC UA client (points) and the secure front, run by the daemon in a
 * child process of their own (agent/opcua-process.ts) so that node-opcua's memory and faults
 * stay out of the core (outbox, Modbus proxy, detectors). It signs nothing: event drafts and
 * readings go to the core over the IPC channel, in batches, through a bounded queue; what does
 * not fit is counted and the count reaches the core, which records it as an event.
 */
import { describeError, isDaemonError } from "./core/errors";
import type { EventDraft, EventSink } from "./core/events";
import { createLogger } from "./log";
import type { Reading, ReadingSink } from "./core/readings";
import { registerPkiControl } from "../protocols/opcua/pki-control";
import { ALIVE_MS, MAX_QUEUED, MAX_UNFLUSHED, type ToChild, type ToCore } from "../protocols/opcua/process-protocol";
import { OpcuaService } from "../protocols/opcua/service";
import type { WindowSpan } from "../protocols/opcua/front-policy";

type Send = (m: ToCore, done?: (err: Error | null) => void) => void;

/** Event drafts and readings on their way to the core: batched per turn, bounded, drops counted. */
export class Uplink implements EventSink, ReadingSink {
  private events: EventDraft[] = [];
  private readings: Reading[] = [];
  private dropped = { events: 0, readings: 0 };
  private unflushed = 0;
  private scheduled = false;
  private idle: (() => void)[] = [];

  constructor(private readonly send: Send) {}

  record(d: EventDraft): void {
    if (this.events.length >= MAX_QUEUED) this.dropped.events++;
    else this.events.push(d);
    this.schedule();
  }

  reading(r: Reading): void {
    if (this.readings.length >= MAX_QUEUED) this.dropped.readings++;
    else this.readings.push(r);
    this.schedule();
  }

  /** Resolves once everything queued has been written to the channel. */
  drained(): Promise<void> {
    if (!this.pending() && this.unflushed === 0) return Promise.resolve();
    return new Promise((r) => this.idle.push(r));
  }

  private pending(): boolean {
    return this.events.length > 0 || this.readings.length > 0 || this.dropped.events + this.dropped.readings > 0;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    if (this.unflushed >= MAX_UNFLUSHED || !this.pending()) return; // a write's callback flushes again
    const d = this.dropped;
    const m: ToCore = { t: "batch", events: this.events, readings: this.readings, ...(d.events + d.readings > 0 ? { dropped: d } : {}) };
    this.events = [];
    this.readings = [];
    this.dropped = { events: 0, readings: 0 };
    this.unflushed++;
    this.send(m, () => {
      this.unflushed--;
      if (this.pending()) this.schedule();
      else if (this.unflushed === 0) for (const r of this.idle.splice(0)) r();
    });
  }
}

/** Runs the OPC UA process until the core says stop or goes away. */
export function runOpcuaProcess(): void {
  const send: Send = (m, done) => {
    if (!process.connected) return done?.(new Error("the core is gone"));
    process.send!(m, undefined, undefined, (err) => done?.(err));
  };
  if (!process.send) {
    process.stderr.write("error[USAGE]: the OPC UA process is started by `gatewarden run`, not by hand\n");
    process.exit(2);
  }
  const uplink = new Uplink(send);
  const handlers = new Map<string, (args: Record<string, unknown>) => unknown>();
  let svc: OpcuaService | undefined;
  let windows: WindowSpan[] = [];
  let stopping = false;
  const exit = async (code: number) => {
    if (stopping) return;
    stopping = true;
    await svc?.stop().catch(() => undefined);
    await uplink.drained();
    process.exit(code);
  };
  const alive = setInterval(() => {
    const m = process.memoryUsage();
    send({ t: "alive", rss: m.rss, heap_used: m.heapUsed });
  }, ALIVE_MS);
  alive.unref();

  process.on("disconnect", () => void exit(0)); // the core died or stopped: never outlive it
  process.on("message", (m: ToChild) => {
    if (m.t === "init") {
      const log = createLogger(m.logLevel).child({ component: "opcua", process: "opcua" });
      svc = new OpcuaService({ config: m.config, deviceId: m.deviceId, points: m.points, events: uplink, readings: uplink, log });
      svc.setWindows(windows);
      const s = svc;
      handlers.set("opcua.status", () => s.status());
      handlers.set("opcua.trust", (a) => s.trust(String(a.thumbprint), String(a.by)));
      registerPkiControl({ handle: (cmd, fn) => handlers.set(cmd, (a) => fn(a, { push: () => undefined, signal: new AbortController().signal })) }, s);
      s.start().then(
        () => send({ t: "ready" }),
        (e: unknown) => {
          send({ t: "failed", code: isDaemonError(e) ? e.code : "INTERNAL", message: isDaemonError(e) ? e.message : describeError(e) }, () => void exit(1));
        },
      );
    } else if (m.t === "call") {
      const h = handlers.get(m.cmd);
      Promise.resolve()
        .then(() => {
          if (!h) throw new Error(`${m.cmd} is not served by the OPC UA process`);
          return h(m.args);
        })
        .then(
          (value) => send({ t: "reply", id: m.id, ok: true, value: value ?? null }),
          (e: unknown) => send({ t: "reply", id: m.id, ok: false, code: isDaemonError(e) ? e.code : "INTERNAL", message: isDaemonError(e) ? e.message : describeError(e) }),
        );
    } else if (m.t === "windows") {
      windows = m.open;
      svc?.setWindows(windows);
    } else if (m.t === "stop") {
      void exit(0);
    }
  });
}
