/**
 * A small in-memory Modbus TCP device: the benchmark's reference server (no added delay,
 * unlike modbus-serial's ServerTCP), the demo's PLC, and tests' device that records every
 * request PDU it receives.
 */
import { createServer, type Server, type Socket } from "node:net";
import { encodeMbap, scanMbap } from "../../protocols/modbus/codec/frame";
import { exceptionPdu, parseRequest } from "../../protocols/modbus/codec/pdu";

export class SimDevice {
  readonly holding = new Uint16Array(65536);
  readonly input = new Uint16Array(65536);
  readonly coils = new Uint8Array(65536);
  readonly discrete = new Uint8Array(65536);
  /** Every request PDU received (hex), when `record` is on. */
  readonly received: string[] = [];
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly opts: { record?: boolean; units?: readonly number[]; delayMs?: number } = {}) {
    for (let i = 0; i < 65536; i++) this.input[i] = i & 0xffff;
  }

  /** Answer one request PDU. */
  handle(unit: number, pdu: Buffer): Buffer | undefined {
    if (this.opts.record) this.received.push(`${unit}:${pdu.toString("hex")}`);
    if (this.opts.units && !this.opts.units.includes(unit)) return undefined;
    const p = parseRequest(pdu);
    if (!p.ok) return exceptionPdu(pdu[0] ?? 0, p.exception);
    const r = p.req;
    const regs = (arr: Uint16Array, a: number, q: number): Buffer => {
      const b = Buffer.alloc(2 + 2 * q);
      b[0] = r.fc;
      b[1] = 2 * q;
      for (let i = 0; i < q; i++) b.writeUInt16BE(arr[a + i]!, 2 + 2 * i);
      return b;
    };
    const bits = (arr: Uint8Array, a: number, q: number): Buffer => {
      const n = Math.ceil(q / 8);
      const b = Buffer.alloc(2 + n);
      b[0] = r.fc;
      b[1] = n;
      for (let i = 0; i < q; i++) if (arr[a + i]) b[2 + (i >> 3)]! |= 1 << (i & 7);
      return b;
    };
    switch (r.fc) {
      case 1:
        return bits(this.coils, r.address, r.quantity);
      case 2:
        return bits(this.discrete, r.address, r.quantity);
      case 3:
        return regs(this.holding, r.address, r.quantity);
      case 4:
        return regs(this.input, r.address, r.quantity);
      case 5:
        this.coils[r.address] = r.value;
        return Buffer.from(pdu);
      case 6:
        this.holding[r.address] = r.value;
        return Buffer.from(pdu);
      case 15:
      case 16:
        r.values.forEach((v, i) => ((r.fc === 15 ? this.coils : this.holding)[r.address + i] = v));
        return Buffer.from(pdu.subarray(0, 5));
      case 22: {
        const cur = this.holding[r.address]!;
        this.holding[r.address] = (cur & r.andMask) | (r.orMask & ~r.andMask & 0xffff);
        return Buffer.from(pdu);
      }
      case 23: {
        r.values.forEach((v, i) => (this.holding[r.writeAddress + i] = v));
        return regs(this.holding, r.readAddress, r.readQuantity);
      }
      case 7:
        return Buffer.from([7, 0]);
      case 8:
        return Buffer.from(pdu);
      case 11:
        return Buffer.from([11, 0, 0, 0, 0]);
      case 17:
        return Buffer.from([17, 2, 0x47, 0xff]);
      case 43: {
        const v = Buffer.from("Gatewarden");
        return Buffer.concat([Buffer.from([43, 14, r.readCode, 1, 0, 0, 1, 0, v.length]), v]);
      }
      default:
        return exceptionPdu(r.fc, 1);
    }
  }

  async listen(port = 0, host = "127.0.0.1"): Promise<number> {
    const server = createServer({ noDelay: true }, (s) => {
      this.sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => this.sockets.delete(s));
      let buf: Buffer = Buffer.alloc(0);
      s.on("data", (d: Buffer) => {
        buf = buf.length ? Buffer.concat([buf, d]) : d;
        let off = 0;
        for (;;) {
          const f = scanMbap(buf, off);
          if (f.kind === "need") break;
          if (f.kind === "bad") {
            if (this.opts.record) this.received.push(`bad:${buf.subarray(off).toString("hex")}`);
            s.destroy();
            return;
          }
          off += f.size;
          const resp = this.handle(f.unit, f.pdu);
          if (!resp) continue;
          const out = encodeMbap(f.tid, f.unit, resp);
          if (this.opts.delayMs) setTimeout(() => s.writable && s.write(out), this.opts.delayMs);
          else s.write(out);
        }
        buf = off === buf.length ? Buffer.alloc(0) : buf.subarray(off);
      });
    });
    // A bind failure (the port taken, an address not this host's) rejects: without a listener
    // for it, the server's 'error' event would end the process with a stack.
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.server = server;
    return (server.address() as { port: number }).port;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const srv = this.server;
    this.server = undefined;
    if (srv) await new Promise<void>((r) => srv.close(() => r()));
  }
}
