import { connect, createServer, type Server, type Socket } from "node:net";

/**
 * A TCP relay in front of a real server that can hold connections: while holding, it accepts
 * a connection and neither forwards nor answers a byte (a device slow to answer), so the
 * client's attempt stays in progress; `release()` drops the held connections and relays every
 * later one to the server.
 */
export class HoldingRelay {
  private server: Server | undefined;
  private holding = true;
  private readonly held = new Set<Socket>();
  private readonly open = new Set<Socket>();
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  get endpoint(): string {
    return `opc.tcp://127.0.0.1:${this.port}`;
  }

  /** Connections held now. */
  get holdingNow(): number {
    return this.held.size;
  }

  async start(): Promise<void> {
    const server = createServer((s) => {
      this.track(s);
      if (this.holding) {
        this.held.add(s);
        s.on("close", () => this.held.delete(s));
        return;
      }
      const up = connect(this.target);
      this.track(up);
      s.pipe(up).pipe(s);
      s.on("close", () => up.destroy());
      up.on("close", () => s.destroy());
    });
    this.server = server;
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    this.port = (server.address() as { port: number }).port;
  }

  release(): void {
    this.holding = false;
    for (const s of this.held) s.destroy();
  }

  async stop(): Promise<void> {
    for (const s of this.open) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private track(s: Socket): void {
    this.open.add(s);
    s.on("error", () => undefined);
    s.on("close", () => this.open.delete(s));
  }
}
