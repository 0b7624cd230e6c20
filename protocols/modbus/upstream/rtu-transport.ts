/**
 * Byte transports for an RTU bus: a serial line (serialport, loaded only when used) or a TCP
 * connection to a serial device server (RTU over TCP).
 */
import { connect, type Socket } from "node:net";

export interface ByteTransport {
  /** Resolves once the line is usable; rejects when it cannot be opened. */
  open(): Promise<void>;
  write(b: Buffer): void;
  onData(cb: (b: Buffer) => void): void;
  onClose(cb: (reason: string) => void): void;
  close(): Promise<void>;
}

export class TcpByteTransport implements ByteTransport {
  private sock: Socket | undefined;
  private dataCb: (b: Buffer) => void = () => {};
  private closeCb: (r: string) => void = () => {};
  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly connectTimeoutMs: number,
  ) {}

  open(): Promise<void> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: this.host, port: this.port, noDelay: true });
      const t = setTimeout(() => s.destroy(new Error("connect timeout")), this.connectTimeoutMs);
      let opened = false;
      s.once("connect", () => {
        clearTimeout(t);
        opened = true;
        this.sock = s;
        resolve();
      });
      s.on("data", (d: Buffer) => this.dataCb(d));
      s.on("error", (e) => {
        if (!opened) reject(e);
      });
      s.once("close", () => {
        clearTimeout(t);
        if (opened) this.closeCb("connection closed");
        this.sock = undefined;
      });
    });
  }
  write(b: Buffer): void {
    this.sock?.write(b);
  }
  onData(cb: (b: Buffer) => void): void {
    this.dataCb = cb;
  }
  onClose(cb: (reason: string) => void): void {
    this.closeCb = cb;
  }
  async close(): Promise<void> {
    this.sock?.destroy();
    this.sock = undefined;
  }
}

export interface SerialOptions {
  path: string;
  baud: number;
  parity: "none" | "even" | "odd";
  data_bits: 7 | 8;
  stop_bits: 1 | 2;
}

interface SerialPortLike {
  open(cb: (err: Error | null) => void): void;
  write(b: Buffer): void;
  on(ev: "data", cb: (b: Buffer) => void): void;
  on(ev: "close" | "error", cb: (e?: Error) => void): void;
  close(cb: (err: Error | null) => void): void;
  isOpen: boolean;
}

export class SerialByteTransport implements ByteTransport {
  private port: SerialPortLike | undefined;
  private dataCb: (b: Buffer) => void = () => {};
  private closeCb: (r: string) => void = () => {};
  constructor(private readonly o: SerialOptions) {}

  async open(): Promise<void> {
    const mod = (await import("serialport")) as unknown as { SerialPort: new (o: Record<string, unknown>) => SerialPortLike };
    const port = new mod.SerialPort({ path: this.o.path, baudRate: this.o.baud, parity: this.o.parity, dataBits: this.o.data_bits, stopBits: this.o.stop_bits, autoOpen: false });
    await new Promise<void>((resolve, reject) => port.open((err) => (err ? reject(err) : resolve())));
    port.on("data", (d: Buffer) => this.dataCb(d));
    port.on("error", () => {});
    port.on("close", () => {
      if (this.port === port) {
        this.port = undefined;
        this.closeCb("serial line closed");
      }
    });
    this.port = port;
  }
  write(b: Buffer): void {
    this.port?.write(b);
  }
  onData(cb: (b: Buffer) => void): void {
    this.dataCb = cb;
  }
  onClose(cb: (reason: string) => void): void {
    this.closeCb = cb;
  }
  async close(): Promise<void> {
    const p = this.port;
    this.port = undefined;
    if (p?.isOpen) await new Promise<void>((r) => p.close(() => r()));
  }
}
