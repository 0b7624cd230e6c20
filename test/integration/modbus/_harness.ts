import { connect, type Socket } from "node:net";
import type { EventDraft, EventSink } from "../../../agent/core/events";
import { modbusConfigSchema, type ModbusConfigInput } from "../../../protocols/modbus/config";
import { scanMbap } from "../../../protocols/modbus/codec/frame";
import { ModbusProxyService, type ModbusProxyServiceOptions } from "../../../protocols/modbus/service";
import { SimDevice } from "../../../agent/demo/sim-server";
import type { PolicyInput } from "../../../protocols/modbus/policy/schema";

export class MemorySink implements EventSink {
  readonly drafts: EventDraft[] = [];
  record(d: EventDraft): void {
    this.drafts.push(d);
  }
  messages(): string[] {
    return this.drafts.map((d) => d.ocsf.message);
  }
}

export interface Rig {
  device: SimDevice;
  service: ModbusProxyService;
  sink: MemorySink;
  port: number;
  close(): Promise<void>;
}

/** A recording device behind a proxy with one plain listener routing every unit to it. */
export async function startRig(policy: PolicyInput | undefined, extra: Partial<ModbusConfigInput> = {}, opts: Partial<ModbusProxyServiceOptions> = {}): Promise<Rig> {
  const device = new SimDevice({ record: true });
  const dport = await device.listen();
  const sink = new MemorySink();
  const config = modbusConfigSchema.parse({
    listeners: [{ name: "plain", type: "tcp", listen: "127.0.0.1:0" }],
    upstreams: [{ name: "plc", type: "tcp", target: `127.0.0.1:${dport}`, timeout_ms: 500 }],
    routes: [{ unit: "0-255", upstream: "plc" }],
    ...(policy ? { policy } : {}),
    ...extra,
  });
  const service = new ModbusProxyService({ config, events: sink, ...opts });
  const bound = await service.start();
  return {
    device,
    service,
    sink,
    port: bound[0]!.port,
    async close() {
      await service.stop();
      await device.close();
    },
  };
}

/** Send raw bytes; collect response frames until `count` arrived, the socket closed, or timeout. */
export function exchange(port: number, bytes: Buffer, count: number, timeoutMs = 2000, halfClose = false): Promise<{ frames: string[]; closed: boolean }> {
  return new Promise((resolve) => {
    const s: Socket = connect({ port, host: "127.0.0.1" });
    const frames: string[] = [];
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(t);
      s.destroy();
      resolve({ frames, closed });
    };
    const t = setTimeout(() => finish(false), timeoutMs);
    s.on("connect", () => {
      s.write(bytes);
      if (halfClose) s.end();
    });
    s.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const f = scanMbap(buf);
        if (f.kind !== "frame") break;
        frames.push(buf.subarray(0, f.size).toString("hex"));
        buf = buf.subarray(f.size);
      }
      if (frames.length >= count) finish(false);
    });
    s.on("error", () => finish(true));
    s.on("close", () => finish(true));
  });
}

/** A persistent raw client for request/response tests. */
export class RawClient {
  private buf = Buffer.alloc(0);
  private waiters = new Map<number, (hex: string) => void>();
  private tid = 0;
  closed = false;
  constructor(private readonly sock: Socket) {
    sock.on("data", (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      for (;;) {
        const f = scanMbap(this.buf);
        if (f.kind !== "frame") break;
        const w = this.waiters.get(f.tid);
        this.waiters.delete(f.tid);
        w?.(Buffer.from(f.pdu).toString("hex"));
        this.buf = this.buf.subarray(f.size);
      }
    });
    sock.on("close", () => {
      this.closed = true;
      for (const w of this.waiters.values()) w("closed");
      this.waiters.clear();
    });
    sock.on("error", () => {});
  }
  /** `localAddress` (e.g. 127.0.0.2) makes the client another plain-TCP identity. */
  static connect(port: number, localAddress?: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = connect({ port, host: "127.0.0.1", ...(localAddress ? { localAddress } : {}) }, () => resolve(new RawClient(s)));
      s.once("error", reject);
    });
  }
  /** Send a request PDU (hex) to `unit`; resolves with the response PDU hex or "closed". */
  request(unit: number, pduHex: string, timeoutMs = 2000): Promise<string> {
    return this.requestAll(unit, [pduHex], timeoutMs)[0]!;
  }
  /** Send several request PDUs (hex) to `unit` in one write: they arrive in one segment. */
  requestAll(unit: number, pduHexes: string[], timeoutMs = 2000): Promise<string>[] {
    const frames: Buffer[] = [];
    const answers = pduHexes.map((pduHex) => {
      const tid = (this.tid = (this.tid + 1) & 0xffff);
      const pdu = Buffer.from(pduHex.replace(/\s+/g, ""), "hex");
      const f = Buffer.alloc(7 + pdu.length);
      f.writeUInt16BE(tid, 0);
      f.writeUInt16BE(1 + pdu.length, 4);
      f[6] = unit;
      pdu.copy(f, 7);
      frames.push(f);
      return new Promise<string>((resolve) => {
        if (this.closed) return resolve("closed");
        const t = setTimeout(() => {
          this.waiters.delete(tid);
          resolve("timeout");
        }, timeoutMs);
        this.waiters.set(tid, (h) => {
          clearTimeout(t);
          resolve(h);
        });
      });
    });
    if (!this.closed) this.sock.write(Buffer.concat(frames));
    return answers;
  }
  close(): void {
    this.sock.destroy();
  }
}
