import { createServer, type Server, type Socket } from "node:net";
import type { AddressInfo } from "node:net";

/**
 * An in-process MQTT 3.1.1 broker (aedes) on 127.0.0.1, for the demo and tests. `pause()`
 * simulates an outage (closes the listener and every connection); `resume()` listens again on
 * the same port. Loaded lazily: the daemon never needs it.
 */
export class EmbeddedBroker {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  /** The MQTT client id each connection gave, once it has connected. */
  private readonly clientIds = new WeakMap<object, string>();
  port = 0;
  private broker: { handle: (s: Socket) => void; close: (cb: () => void) => void; connectedClients: number; on: (e: "client", f: (c: { id: string; conn: object }) => void) => void } | undefined;

  /**
   * `authorizePublish` (tests) sees every PUBLISH before the broker takes it; the broker
   * acknowledges it only once `accept` is called, so a test can hold acknowledgements back.
   * `drop` acknowledges it and delivers it to no one (nor keeps it retained); `payload` is the
   * message's (a test may hand it over later itself); `connection` is the same object for every
   * message of one client connection (a reconnect is another).
   */
  async start(port = 0, opts: { authorizePublish?: (topic: string, accept: () => void, drop: () => void, payload: Buffer, connection: object) => void; authorizeSubscribe?: (topic: string) => boolean } = {}): Promise<void> {
    const { Aedes } = await import("aedes");
    type AedesOptions = NonNullable<Parameters<typeof Aedes.createBroker>[0]>;
    const hook = opts.authorizePublish;
    const mayRead = opts.authorizeSubscribe;
    // A subscription refused by `authorizeSubscribe` (tests) is answered with the SUBACK failure code.
    const subscribe: AedesOptions = mayRead ? { authorizeSubscribe: (_c, sub, done) => done(null, mayRead(sub.topic) ? sub : null) } : {};
    const broker = await Aedes.createBroker(
      hook
        ? {
            ...subscribe,
            authorizePublish: (client, packet, done) =>
              hook(
                packet.topic,
                () => done(null),
                () => {
                  Object.assign(packet, { topic: "gatewarden-dropped", retain: false });
                  done(null);
                },
                Buffer.from(packet.payload),
                client ?? packet,
              ),
          }
        : subscribe,
    );
    this.broker = broker as unknown as NonNullable<EmbeddedBroker["broker"]>;
    this.broker.on("client", (c) => this.clientIds.set(c.conn, c.id));
    this.port = port;
    await this.resume();
  }

  /** MQTT clients connected now. */
  get connectedClients(): number {
    return this.broker?.connectedClients ?? 0;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  async resume(): Promise<void> {
    const server = createServer({ noDelay: true }, (s) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
      this.broker!.handle(s);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, "127.0.0.1", () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /**
   * Closes the listener and every connection, except those of the client ids in `keep` (a test
   * that takes one peer's broker away while another, already connected, keeps its session).
   */
  async pause(keep: readonly string[] = []): Promise<void> {
    const s = this.server;
    this.server = undefined;
    let kept = 0;
    for (const sock of this.sockets) {
      if (keep.includes(this.clientIds.get(sock) ?? "")) kept++;
      else sock.destroy();
    }
    // close() stops listening at once; its callback waits for every connection, kept ones too.
    if (s) await new Promise<void>((r) => (kept > 0 ? (s.close(), r()) : s.close(() => r())));
  }

  async stop(): Promise<void> {
    await this.pause();
    const b = this.broker;
    this.broker = undefined;
    if (b) await new Promise<void>((r) => b.close(() => r()));
  }
}
