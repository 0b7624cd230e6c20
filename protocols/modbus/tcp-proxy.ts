/**
 * Modbus TCP and Modbus/TCP Security listeners. Per connection: strict framing, then the
 * decision point, then routing to an upstream; replies carry the client's transaction id.
 * Several transactions may be in flight per connection (bounded; past the bound the socket
 * stops reading, which pushes back on the client). A partial frame must complete within
 * `frame_timeout_ms` (slow-loris); an idle connection is closed after `idle_timeout_ms`.
 */
import { createServer, type Server, type Socket } from "node:net";
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from "node:tls";
import { readFileSync } from "node:fs";
import { readSecretFile } from "../../agent/keys/files";
import { DaemonError } from "../../agent/errors";
import { describeCertificate } from "./cert-role";
import { splitHostPort, type ListenerConfig } from "./config";
import { describeIdentity, normaliseAddress, type PeerIdentity } from "./identity";
import { ProxyConnection, type ProxyContext } from "./proxy-connection";

export type { ProxyContext } from "./proxy-connection";

export interface ListenerStatus {
  name: string;
  type: "tcp" | "tls";
  address?: string;
  port?: number;
  connections: number;
  requests: number;
  denied: number;
  malformed: number;
}

export class ModbusListener {
  readonly name: string;
  private server: Server | TlsServer | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly perIdentity = new Map<string, number>();
  readonly counters = { requests: 0, denied: 0, malformed: 0 };

  constructor(
    private readonly cfg: ListenerConfig,
    private readonly ctx: ProxyContext,
  ) {
    this.name = cfg.name;
  }

  async start(): Promise<{ address: string; port: number }> {
    const { host, port } = splitHostPort(this.cfg.listen);
    const limits = this.ctx.limits;
    let server: Server | TlsServer;
    if (this.cfg.type === "tls") {
      const t = this.cfg.tls;
      let material: { cert: Buffer; key: Buffer; ca: Buffer; crl?: Buffer };
      try {
        // The private key must be owner-only (KEY_PERMISSIONS otherwise): the daemon refuses to start.
        material = { cert: readFileSync(t.cert_file), key: readSecretFile(t.key_file, `listener ${this.name} TLS key`), ca: readFileSync(t.ca_file), ...(t.crl_file ? { crl: readFileSync(t.crl_file) } : {}) };
      } catch (e) {
        if (e instanceof DaemonError) throw e;
        throw new DaemonError("TLS_SETUP", `listener ${this.name}: cannot read TLS files (${(e as Error).message})`, { cause: e });
      }
      try {
        server = createTlsServer({
          ...material,
          requestCert: true,
          rejectUnauthorized: true,
          minVersion: t.min_version,
          handshakeTimeout: t.handshake_timeout_ms,
        });
      } catch (e) {
        throw new DaemonError("TLS_SETUP", `listener ${this.name}: TLS material rejected (${(e as Error).message})`, { cause: e });
      }
      server.on("secureConnection", (s: TLSSocket) => {
        const cert = s.getPeerX509Certificate();
        if (!cert) return s.destroy();
        const c = describeCertificate(cert);
        this.accept(s, { transport: "tls", address: normaliseAddress(s.remoteAddress), fingerprint: c.fingerprint, subject: c.subject, ...(c.role ? { role: c.role } : {}), ...(c.roleError ? { roleError: c.roleError } : {}) });
      });
      server.on("tlsClientError", (err: Error & { code?: string }, s: TLSSocket) => {
        this.ctx.events?.authFailure({ listener: this.name, address: normaliseAddress(s.remoteAddress), reason: err.code ?? err.message });
        s.destroy();
      });
    } else {
      server = createServer({ noDelay: true }, (s) => this.accept(s, { transport: "tcp", address: normaliseAddress(s.remoteAddress) }));
    }
    server.maxConnections = limits.max_connections;
    server.on("error", (e) => this.ctx.log?.warn({ listener: this.name, err: e.message }, "Listener error."));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.server = server;
    const a = server.address();
    return typeof a === "object" && a ? { address: a.address, port: a.port } : { address: host, port };
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    for (const sock of this.sockets) sock.destroy();
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }

  status(): ListenerStatus {
    const a = this.server?.address();
    return {
      name: this.name,
      type: this.cfg.type,
      ...(typeof a === "object" && a ? { address: a.address, port: a.port } : {}),
      connections: this.sockets.size,
      ...this.counters,
    };
  }

  private accept(sock: Socket, id: PeerIdentity): void {
    const limits = this.ctx.limits;
    const key = id.fingerprint ?? id.address;
    const n = this.perIdentity.get(key) ?? 0;
    if (n >= limits.max_connections_per_identity || this.sockets.size >= limits.max_connections) {
      const total = this.sockets.size >= limits.max_connections;
      this.ctx.events?.connectionLimit({ listener: this.name, identity: describeIdentity(id), address: id.address, limit: total ? "total" : "per_identity", max: total ? limits.max_connections : limits.max_connections_per_identity });
      this.ctx.log?.debug({ listener: this.name, peer: key }, "Connection refused: limit reached.");
      sock.destroy();
      return;
    }
    this.perIdentity.set(key, n + 1);
    this.sockets.add(sock);
    sock.setNoDelay(true);
    sock.on("error", () => {});
    sock.once("close", () => {
      this.sockets.delete(sock);
      const m = (this.perIdentity.get(key) ?? 1) - 1;
      if (m <= 0) this.perIdentity.delete(key);
      else this.perIdentity.set(key, m);
    });
    this.ctx.events?.client({ listener: this.name, identity: describeIdentity(id), address: id.address, known: this.ctx.knows ? this.ctx.knows(id) : true });
    new ProxyConnection(sock, id, this.name, this.ctx, this.counters).begin();
  }
}
