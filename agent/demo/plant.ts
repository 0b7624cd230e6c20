import { connect, type Socket } from "node:net";
import { encodeMbap, scanMbap } from "../../protocols/modbus/codec/frame";
import { SimDevice } from "./sim-server";

/**
 * The demo's simulated pumping station: one PLC (Modbus TCP) with a tank level (input 30, cm),
 * the inflow pump's flow (input 31, L/s x 10) and its speed setpoint (holding 100, rpm). The
 * pump runs between 2 m and 5 m (the PLC's level rule); demand follows a daily-like wave.
 * `spoof` makes the level reading lie (a sensor attack the detectors should catch).
 */
export class DemoPlant {
  readonly plc = new SimDevice();
  private level = 3.2;
  private pumpOn = true;
  private t = 0;
  private timer: NodeJS.Timeout | undefined;
  spoof: number | undefined;
  port = 0;

  async start(port = 0, host = "127.0.0.1"): Promise<void> {
    this.plc.holding[100] = 1450;
    this.port = await this.plc.listen(port, host);
    this.timer = setInterval(() => this.step(0.1), 100);
  }

  /** The true tank level (m), whatever the reading says. */
  get trueLevel(): number {
    return this.level;
  }

  /** Advances the plant by `dt` simulated units (the demo runs 0.1 every 100 ms). */
  step(dt: number): void {
    this.t += dt;
    const rpm = this.plc.holding[100]!;
    const inflow = this.pumpOn ? 40 * (rpm / 1450) : 0; // L/s
    const demand = 22 + 8 * Math.sin(this.t / 6); // L/s
    this.level = Math.max(0, Math.min(6.5, this.level + ((inflow - demand) / 1000 / 12) * dt * 60));
    if (this.level < 2) this.pumpOn = true;
    if (this.level > 5) this.pumpOn = false;
    this.plc.input[30] = Math.round((this.spoof ?? this.level) * 100);
    this.plc.input[31] = Math.round(inflow * 10);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.plc.close();
  }
}

/** A minimal Modbus TCP client (one request at a time) for the demo's SCADA and attacker. */
export class DemoClient {
  private buf: Buffer = Buffer.alloc(0);
  private tid = 0;
  private waiting: ((hex: string) => void) | undefined;

  private constructor(readonly sock: Socket) {
    sock.on("data", (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      const f = scanMbap(this.buf);
      if (f.kind !== "frame") return;
      this.buf = this.buf.subarray(f.size);
      const w = this.waiting;
      this.waiting = undefined;
      w?.(f.pdu.toString("hex"));
    });
    sock.on("error", () => undefined);
    sock.on("close", () => this.waiting?.("closed"));
  }

  /** Connects from `localAddress` (a loopback address of its own: the proxy tells clients apart by address). */
  static connect(port: number, localAddress?: string): Promise<DemoClient> {
    return new Promise((resolve, reject) => {
      const s = connect({ port, host: "127.0.0.1", ...(localAddress ? { localAddress } : {}) }, () => resolve(new DemoClient(s)));
      s.once("error", reject);
    });
  }

  /** Sends a PDU (hex) to `unit`; resolves with the response PDU (hex), or "timeout"/"closed". */
  request(unit: number, pduHex: string, timeoutMs = 2000): Promise<string> {
    return this.exchange(encodeMbap(++this.tid, unit, Buffer.from(pduHex.replace(/\s/g, ""), "hex")), timeoutMs);
  }

  /** Sends raw bytes (the malformed-frame attack); resolves with the first answer PDU (hex), or "timeout"/"closed". */
  raw(bytes: Buffer, timeoutMs = 2000): Promise<string> {
    return this.exchange(bytes, timeoutMs);
  }

  private exchange(bytes: Buffer, timeoutMs: number): Promise<string> {
    if (this.sock.destroyed) return Promise.resolve("closed");
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiting = undefined;
        resolve("timeout");
      }, timeoutMs);
      this.waiting = (hex) => {
        clearTimeout(t);
        resolve(hex);
      };
      this.sock.write(bytes);
    });
  }

  close(): void {
    this.sock.destroy();
  }
}
