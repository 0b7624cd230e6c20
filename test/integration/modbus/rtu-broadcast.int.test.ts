import { createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { modbusConfigSchema } from "../../../protocols/modbus/config";
import { decodeRtu, encodeRtu } from "../../../protocols/modbus/codec/frame";
import type { PolicyInput } from "../../../protocols/modbus/policy/schema";
import { ModbusProxyService } from "../../../protocols/modbus/service";
import { MemorySink, RawClient } from "./_harness";

/**
 * A serial device server with three slaves (units 1-3) behind it, speaking RTU frames over
 * TCP: reads (3), single (6) and multiple (16) register writes. A broadcast (unit 0) is
 * executed by every slave and answered by none, except a slave told to misbehave.
 */
class RtuLine {
  readonly holding = new Map<number, number[]>([1, 2, 3].map((u) => [u, new Array<number>(20).fill(0)]));
  readonly wire: Array<{ unit: number; fc: number; at: number }> = [];
  /** Garbage a slave sends in reply to a broadcast (it should not answer at all). */
  noiseOnBroadcast: Buffer | undefined;
  private server: Server | undefined;
  private readonly socks = new Set<Socket>();

  async listen(): Promise<number> {
    this.server = createServer((s) => {
      this.socks.add(s);
      s.on("close", () => this.socks.delete(s));
      let buf = Buffer.alloc(0);
      s.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        for (;;) {
          if (buf.length < 8) return;
          const size = buf[1] === 16 ? 9 + buf[6]! : 8;
          if (buf.length < size) return;
          const f = decodeRtu(buf.subarray(0, size));
          buf = buf.subarray(size);
          if (!f.ok) continue;
          this.wire.push({ unit: f.unit, fc: f.pdu[0]!, at: performance.now() });
          const answer = this.execute(f.unit, f.pdu);
          if (f.unit === 0) {
            if (this.noiseOnBroadcast) s.write(this.noiseOnBroadcast);
          } else if (answer) s.write(encodeRtu(f.unit, answer));
        }
      });
    });
    await new Promise<void>((r) => this.server!.listen(0, "127.0.0.1", () => r()));
    return (this.server.address() as { port: number }).port;
  }

  private execute(unit: number, pdu: Buffer): Buffer | undefined {
    const regs = unit === 0 ? [...this.holding.values()] : this.holding.has(unit) ? [this.holding.get(unit)!] : [];
    if (!regs.length) return undefined;
    const addr = pdu.readUInt16BE(1);
    if (pdu[0] === 3) {
      const q = pdu.readUInt16BE(3);
      const out = Buffer.alloc(2 + 2 * q);
      out[0] = 3;
      out[1] = 2 * q;
      for (let i = 0; i < q; i++) out.writeUInt16BE(regs[0]![addr + i]!, 2 + 2 * i);
      return out;
    }
    if (pdu[0] === 6) {
      for (const r of regs) r[addr] = pdu.readUInt16BE(3);
      return Buffer.from(pdu);
    }
    if (pdu[0] === 16) {
      const q = pdu.readUInt16BE(3);
      for (const r of regs) for (let i = 0; i < q; i++) r[addr + i] = pdu.readUInt16BE(6 + 2 * i);
      return Buffer.from(pdu.subarray(0, 5));
    }
    return undefined;
  }

  async close(): Promise<void> {
    for (const s of this.socks) s.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}

const policy = (units: Array<number | string>): PolicyInput => ({
  identities: [{ match: { address: "127.0.0.1" }, role: "eng" }],
  roles: { eng: { units, functions: ["read-write"], read: { holding: ["0-19"] }, write: { holding: ["0-9"] }, values: [{ table: "holding", address: "5", max: 100 }] } },
});

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function rig(o: { broadcast: boolean; units: Array<number | string>; turnaround_ms?: number }) {
  const line = new RtuLine();
  const port = await line.listen();
  cleanups.push(() => line.close());
  const sink = new MemorySink();
  const service = new ModbusProxyService({
    config: modbusConfigSchema.parse({
      listeners: [{ name: "plain", type: "tcp", listen: "127.0.0.1:0" }],
      upstreams: [{ name: "bus", type: "rtu_tcp", target: `127.0.0.1:${port}`, baud: 115_200, timeout_ms: 300, broadcast: o.broadcast, turnaround_ms: o.turnaround_ms ?? 150 }],
      routes: [{ unit: "0-3", upstream: "bus" }],
      policy: policy(o.units),
    }),
    events: sink,
  });
  const [bound] = await service.start();
  cleanups.push(() => service.stop());
  // Wait for the bus to connect.
  for (let i = 0; i < 100 && service.status().upstreams[0]!.state !== "up"; i++) await new Promise((r) => setTimeout(r, 20));
  const c = await RawClient.connect(bound!.port);
  cleanups.push(() => c.close());
  return { line, c, sink };
}

describe("Modbus broadcast (unit 0) towards an RTU bus", () => {
  it("is refused with 0A unless the upstream enables it, even when the policy allows unit 0", async () => {
    const { line, c } = await rig({ broadcast: false, units: ["0-3"] });
    expect(await c.request(0, "06 0001 0007")).toBe("860a");
    expect(await c.request(1, "06 0001 0007")).toBe("0600010007");
    expect(line.wire.map((w) => w.unit)).toEqual([1]);
  });

  it("needs a policy role whose units include 0", async () => {
    const { line, c } = await rig({ broadcast: true, units: ["1-3"] });
    expect(await c.request(0, "06 0001 0007")).toBe("8601");
    expect(line.wire).toEqual([]);
  });

  it("goes out as one frame to unit 0, reaches every slave, and is answered with the write response after the turnaround", async () => {
    const { line, c, sink } = await rig({ broadcast: true, units: ["0-3"], turnaround_ms: 150 });
    line.noiseOnBroadcast = Buffer.from("ff00ff", "hex"); // a misbehaving slave: dropped
    const t0 = performance.now();
    expect(await c.request(0, "06 0002 002a")).toBe("060002002a");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(140);
    expect([1, 2, 3].map((u) => line.holding.get(u)![2])).toEqual([42, 42, 42]);
    // FC 16: function, address and quantity, as a slave would answer.
    const t16 = performance.now(); // before the broadcast is sent: the turnaround runs from after it
    const p16 = c.request(0, "10 0003 0002 04 0001 0002");
    // A request to unit 1 queued behind it waits for the turnaround; its answer is its own.
    const r1 = c.request(1, "03 0002 0003");
    expect(await p16).toBe("1000030002");
    expect(await r1).toBe("0306" + "002a" + "0001" + "0002");
    const w = line.wire.filter((x) => x.fc === 16 || x.fc === 3);
    expect(w.map((x) => x.unit)).toEqual([0, 1]);
    // The line was held quiet: unit 1's frame came a turnaround after the broadcast was sent.
    // Measured from before the send, not from the broadcast's arrival, which a loaded machine
    // can deliver to this rig late (130 ms between arrivals was seen beside another test run).
    expect(w[1]!.at - t16).toBeGreaterThanOrEqual(140);
    // The policy still applies: value bounds, write ranges, and no broadcast reads.
    expect(await c.request(0, "06 0005 0065")).toBe("8601"); // 101 > max 100
    expect(await c.request(0, "06 000a 0001")).toBe("8601"); // holding 10 is not writable
    expect(await c.request(0, "03 0000 0001")).toBe("830a"); // a read cannot be broadcast
    expect(line.wire.filter((x) => x.unit === 0).map((x) => x.fc)).toEqual([6, 16]);
    // Each broadcast write is audited like any other write.
    const audits = sink.drafts.filter((d) => d.class === "audit" && d.ocsf.class_uid === 4001);
    expect(audits.map((d) => (d.ocsf.unmapped as { modbus: { unit_id: number; remote_unit: number } }).modbus)).toMatchObject([
      { unit_id: 0, remote_unit: 0 },
      { unit_id: 0, remote_unit: 0 },
    ]);
  });

  it("cannot be reached by routing another unit to remote unit 0", () => {
    const r = modbusConfigSchema.safeParse({
      upstreams: [{ name: "bus", type: "rtu_tcp", target: "127.0.0.1:4001", broadcast: true }],
      routes: [{ unit: 9, upstream: "bus", remote_unit: 0 }],
    });
    expect(r.success).toBe(false);
    expect(r.error!.issues[0]!.path).toEqual(["routes", 0, "remote_unit"]);
    expect(modbusConfigSchema.safeParse({ upstreams: [{ name: "bus", type: "rtu_tcp", target: "127.0.0.1:4001" }], routes: [{ unit: 0, upstream: "bus", remote_unit: 0 }] }).success).toBe(true);
  });
});
