/**
 * Modbus TCP and Modbus/TCP Security listeners. Per connection: strict framing, then the
 * decision point, then routing to an upstream; replies carry the client's transaction id.
 * Several transactions may be in flight per connection (bounded; past the bound the socket
 * stops reading, which pushes back on the client). A partial frame must complete within
 * `frame_timeout_ms` (slow-loris); an idle connection is closed after `idle_timeout_ms`.
 * A TLS listener loads changed certificate, key, CA and CRL files for new connections while
 * running (`reloadTls`); bad new material is refused and the current material kept. Open
 * connections are checked against new material and closed when their client certificate is
 * revoked or no longer trusted.
 */
import { createServer, type Server, type Socket } from "node:net";
import { createSecureContext, createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from "node:tls";
import { constants as cryptoConstants, type X509Certificate } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { readSecretFile } from "../../agent/core/secret-files";
import { listenError } from "../../agent/core/listen-error";
import { DaemonError } from "../../agent/core/errors";
import { describeCertificate } from "./tls/cert-role";
import { type ListenerConfig } from "./config";
import { splitHostPort } from "../../agent/core/host-port";
import { describeIdentity, identityKey, normaliseAddress, type PeerIdentity } from "./policy/identity";
import { ProxyConnection, type ProxyContext } from "./proxy-connection";
import { pemCertificates, peerChain, TrustAnchors } from "./tls/trust";

export type { ProxyContext } from "./proxy-connection";

export interface ListenerStatus {
  name: string;
  type: "tcp" | "tls";
  address?: string;
  port?: number;
  connections: number;
  /** Of which from clients no identity rule matches. */
  unknown_connections: number;
  requests: number;
  denied: number;
  malformed: number;
}

/** The outcome of loading a TLS listener's files again. */
export type TlsReloadReport = { listener: string; trigger: string } & ({ ok: true } | { ok: false; reason: string });

type TlsConfig = Extract<ListenerConfig, { type: "tls" }>["tls"];

/**
 * TLS 1.2 renegotiation is refused by OpenSSL itself (a no_renegotiation alert, no handshake
 * work): a client may not make the gateway run handshakes on an open connection. TLS 1.3 has
 * no renegotiation.
 */
const SECURE_OPTIONS = cryptoConstants.SSL_OP_NO_RENEGOTIATION;

/** Identity of the TLS files' current contents (stat follows symlinks); "-" for a missing file. */
function tlsFilesStamp(t: TlsConfig): string {
  let s = "";
  for (const f of [t.cert_file, t.key_file, t.ca_file, t.crl_file]) {
    if (f === undefined) continue;
    try {
      const st = statSync(f);
      s += `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs};`;
    } catch {
      s += "-;";
    }
  }
  return s;
}

/**
 * Read and check a TLS listener's files: the key owner-only (KEY_PERMISSIONS) and matching
 * the certificate, every CA certificate parseable (OpenSSL silently skips a broken CA file,
 * which would refuse every client), the CRL parseable (by OpenSSL and by the re-check of open
 * connections). On a reload the certificate must also be within its validity (at start an
 * expired one does not stop the whole daemon; clients refuse it).
 */
function loadTlsMaterial(listener: string, t: TlsConfig, reload: boolean): { material: { cert: Buffer; key: Buffer; ca: Buffer; crl?: Buffer }; trust: TrustAnchors } {
  let m: { cert: Buffer; key: Buffer; ca: Buffer; crl?: Buffer };
  try {
    m = { cert: readFileSync(t.cert_file), key: readSecretFile(t.key_file, `listener ${listener} TLS key`), ca: readFileSync(t.ca_file), ...(t.crl_file ? { crl: readFileSync(t.crl_file) } : {}) };
  } catch (e) {
    if (e instanceof DaemonError) throw e;
    throw new DaemonError("TLS_SETUP", `listener ${listener}: cannot read TLS files (${(e as Error).message})`, { cause: e });
  }
  try {
    const [leaf] = pemCertificates(m.cert, `cert_file ${t.cert_file}`);
    if (reload && Date.parse(leaf!.validTo) <= Date.now()) throw new Error(`cert_file ${t.cert_file} expired on ${new Date(leaf!.validTo).toISOString()}`);
    const trust = new TrustAnchors(m.ca, m.crl, { ca: t.ca_file, ...(t.crl_file ? { crl: t.crl_file } : {}) });
    // Parses the key and the CRL, and checks that key and certificate belong together.
    createSecureContext({ ...m, minVersion: t.min_version });
    return { material: m, trust };
  } catch (e) {
    throw new DaemonError("TLS_SETUP", `listener ${listener}: TLS material rejected (${(e as Error).message})`, { cause: e });
  }
}

export class ModbusListener {
  readonly name: string;
  readonly type: "tcp" | "tls";
  private server: Server | TlsServer | undefined;
  /** Open connections and who they are. */
  private readonly sockets = new Map<Socket, PeerIdentity>();
  private readonly perIdentity = new Map<string, number>();
  /** Open connections of clients no identity rule matches (capped apart from known ones). */
  private unknownOpen = 0;
  readonly counters = { requests: 0, denied: 0, malformed: 0 };
  private tlsStamp = "";
  private pendingStamp: string | undefined;
  private reloadTimer: NodeJS.Timeout | undefined;
  /** What the current TLS material trusts, and when it was loaded (`performance.now()`). */
  private trust: TrustAnchors | undefined;
  private trustSince = -Infinity;

  constructor(
    private readonly cfg: ListenerConfig,
    private readonly ctx: ProxyContext,
    private readonly hooks: { onTlsReload?: (r: TlsReloadReport) => void } = {},
  ) {
    this.name = cfg.name;
    this.type = cfg.type;
  }

  async start(): Promise<{ address: string; port: number }> {
    const { host, port } = splitHostPort(this.cfg.listen);
    const limits = this.ctx.limits;
    let server: Server | TlsServer;
    if (this.cfg.type === "tls") {
      const t = this.cfg.tls;
      const stamp = tlsFilesStamp(t);
      const { material, trust } = loadTlsMaterial(this.name, t, false);
      try {
        server = createTlsServer({
          ...material,
          requestCert: true,
          // Verified below instead (s.authorized): a refused client is then recorded with the
          // verification error and its address. Nothing is read from it before that check.
          rejectUnauthorized: false,
          minVersion: t.min_version,
          secureOptions: SECURE_OPTIONS,
          handshakeTimeout: t.handshake_timeout_ms,
        });
      } catch (e) {
        throw new DaemonError("TLS_SETUP", `listener ${this.name}: TLS material rejected (${(e as Error).message})`, { cause: e });
      }
      this.tlsStamp = stamp;
      this.trust = trust;
      server.on("secureConnection", (s: TLSSocket) => {
        const cert = s.getPeerX509Certificate();
        if (!s.authorized || !cert) {
          const presented = cert ? describeCertificate(cert) : undefined;
          this.ctx.events?.authFailure({
            listener: this.name,
            address: normaliseAddress(s.remoteAddress),
            reason: cert ? String(s.authorizationError ?? "client certificate not verified") : "no client certificate",
            ...(presented ? { certificate: { subject: presented.subject, fingerprint: presented.fingerprint, issuer: cert!.issuer.split("\n").join(",") } } : {}),
          });
          return s.destroy();
        }
        const c = describeCertificate(cert);
        const id: PeerIdentity = { transport: "tls", address: normaliseAddress(s.remoteAddress), fingerprint: c.fingerprint, subject: c.subject, ...(c.role ? { role: c.role } : {}), ...(c.roleError ? { roleError: c.roleError } : {}) };
        // A handshake that began before a reload was verified with the old material.
        if (performance.now() - this.trustSince <= t.handshake_timeout_ms && !this.stillTrusted(s, id)) return;
        if (this.accept(s, id)) this.closeAtExpiry(s, id, cert);
      });
      // The handshake itself failed (no shared protocol or cipher, timeout, reset): the
      // address is taken when the connection arrives, as the socket may be gone by now.
      const from = new WeakMap<object, string>();
      server.on("connection", (raw: Socket) => from.set(raw, normaliseAddress(raw.remoteAddress)));
      server.on("tlsClientError", (err: Error & { code?: string }, s: TLSSocket) => {
        const raw = (s as unknown as { _parent?: object })._parent;
        const address = s.remoteAddress ? normaliseAddress(s.remoteAddress) : ((raw && from.get(raw)) ?? "unknown");
        this.ctx.events?.authFailure({ listener: this.name, address, reason: err.code ?? err.message });
        s.destroy();
      });
    } else {
      server = createServer({ noDelay: true }, (s) => this.accept(s, { transport: "tcp", address: normaliseAddress(s.remoteAddress) }));
    }
    server.maxConnections = limits.max_connections;
    server.on("error", (e) => this.ctx.log?.warn({ listener: this.name, err: e.message }, "Listener error."));
    await new Promise<void>((resolve, reject) => {
      server.once("error", (e: NodeJS.ErrnoException) => reject(listenError(e, `modbus listener ${this.name}`, this.cfg.listen)));
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.server = server;
    if (this.cfg.type === "tls" && this.cfg.tls.reload_check_ms > 0) {
      this.reloadTimer = setInterval(() => this.checkTlsFiles(), this.cfg.tls.reload_check_ms);
      this.reloadTimer.unref();
    }
    const a = server.address();
    return typeof a === "object" && a ? { address: a.address, port: a.port } : { address: host, port };
  }

  /**
   * Watch for new TLS material (stat polling, so a file replaced by rename or a re-pointed
   * symlink is seen). A change is loaded once the files have stayed the same for one more
   * check, so a rotation written file by file is not caught half-way.
   */
  private checkTlsFiles(): void {
    if (this.cfg.type !== "tls" || !this.server) return;
    const now = tlsFilesStamp(this.cfg.tls);
    if (now === this.tlsStamp) {
      this.pendingStamp = undefined;
      return;
    }
    if (now !== this.pendingStamp) {
      this.pendingStamp = now;
      return;
    }
    this.pendingStamp = undefined;
    this.reloadTls("files changed");
  }

  /**
   * Load the TLS files again and use them for new connections (`setSecureContext`). Open
   * connections keep the context they were accepted with, but each is checked against the new
   * CA and CRL and closed if its client certificate is revoked or no longer trusted (see
   * tls/trust.ts). New material that cannot be read, does not parse, has a key that does not
   * match or is not owner-only, is not used: the listener keeps its current material and the
   * failure is reported. A new context also has new session-ticket keys, so a client revoked
   * by a new CRL cannot resume an old session.
   */
  reloadTls(trigger = "requested"): { ok: true } | { ok: false; reason: string } {
    if (this.cfg.type !== "tls") return { ok: false, reason: "not a TLS listener" };
    const server = this.server as TlsServer | undefined;
    if (!server) return { ok: false, reason: "listener is not running" };
    const t = this.cfg.tls;
    // Stamp first: a change made while reading is seen by the next check.
    const stamp = tlsFilesStamp(t);
    let result: { ok: true } | { ok: false; reason: string };
    let trust: TrustAnchors | undefined;
    try {
      const loaded = loadTlsMaterial(this.name, t, true);
      server.setSecureContext({ ...loaded.material, minVersion: t.min_version, secureOptions: SECURE_OPTIONS });
      trust = loaded.trust;
      result = { ok: true };
    } catch (e) {
      result = { ok: false, reason: e instanceof DaemonError ? e.message : `listener ${this.name}: TLS material rejected (${(e as Error).message})` };
    }
    // A failed load is not retried until the files change again.
    this.tlsStamp = stamp;
    try {
      this.hooks.onTlsReload?.({ listener: this.name, trigger, ...result });
    } catch {
      /* reporting must not break the listener */
    }
    if (trust) {
      this.trust = trust;
      this.trustSince = performance.now();
      for (const [sock, id] of this.sockets) this.stillTrusted(sock as TLSSocket, id);
    }
    return result;
  }

  /**
   * Check a connection's client certificate against the current material; one that is
   * revoked or no longer chains to the CA is closed, with one authentication event.
   */
  private stillTrusted(s: TLSSocket, id: PeerIdentity): boolean {
    if (!this.trust || s.destroyed) return true;
    let verdict: ReturnType<TrustAnchors["check"]>;
    let chain: ReturnType<typeof peerChain> = undefined;
    try {
      chain = peerChain(s);
      // No certificate left to read: the TLS session is already gone; nothing to serve.
      if (!chain) {
        s.destroy();
        return false;
      }
      verdict = this.trust.check(chain.leaf, chain.presented);
    } catch (e) {
      verdict = { ok: false, reason: "untrusted", detail: `the client certificate cannot be checked (${(e as Error).message})` };
    }
    if (verdict.ok) return true;
    s.destroy();
    const identity = describeIdentity(id);
    this.ctx.log?.warn({ listener: this.name, peer: identity, reason: verdict.reason }, "Open Modbus/TCP Security connection closed: the new TLS material no longer accepts its certificate.");
    this.ctx.events?.tlsConnectionClosed({
      listener: this.name,
      identity,
      address: id.address,
      reason: verdict.reason,
      detail: verdict.detail,
      ...(chain ? { certificate: { serial: chain.leaf.serialNumber, fingerprint: chain.leaf.fingerprint256, subject: chain.leaf.subject.replace(/\n/g, ","), issuer: chain.leaf.issuer.replace(/\n/g, ",") } } : {}),
    });
    return false;
  }

  /**
   * A client certificate that expires while its connection is open ends the connection then,
   * with the same authentication event as a revocation: TLS checked the dates only at the
   * handshake. One timer per connection (connections are bounded), cleared when it closes.
   */
  private closeAtExpiry(s: TLSSocket, id: PeerIdentity, cert: X509Certificate): void {
    const arm = (): void => {
      const left = Date.parse(cert.validTo) - Date.now();
      if (left > 0) {
        // setTimeout holds at most 2^31-1 ms (24.8 days): longer validities re-arm.
        timer = setTimeout(arm, Math.min(left, 2 ** 31 - 1));
        timer.unref();
        return;
      }
      if (s.destroyed) return;
      s.destroy();
      const identity = describeIdentity(id);
      this.ctx.log?.warn({ listener: this.name, peer: identity }, "Open Modbus/TCP Security connection closed: its client certificate expired.");
      this.ctx.events?.tlsConnectionClosed({
        listener: this.name,
        identity,
        address: id.address,
        reason: "expired",
        detail: `valid until ${new Date(cert.validTo).toISOString()}`,
        certificate: { serial: cert.serialNumber, fingerprint: cert.fingerprint256, subject: cert.subject.replace(/\n/g, ","), issuer: cert.issuer.replace(/\n/g, ",") },
      });
    };
    let timer: NodeJS.Timeout | undefined;
    arm();
    s.once("close", () => clearTimeout(timer));
  }

  async stop(): Promise<void> {
    if (this.reloadTimer) clearInterval(this.reloadTimer);
    this.reloadTimer = undefined;
    const s = this.server;
    this.server = undefined;
    for (const sock of this.sockets.keys()) sock.destroy();
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }

  status(): ListenerStatus {
    const a = this.server?.address();
    return {
      name: this.name,
      type: this.cfg.type,
      ...(typeof a === "object" && a ? { address: a.address, port: a.port } : {}),
      connections: this.sockets.size,
      unknown_connections: this.unknownOpen,
      ...this.counters,
    };
  }

  /**
   * Takes the connection unless a limit refuses it; true when taken. Clients no identity rule
   * matches (they can only be denied) have a cap of their own, at most half the listener's,
   * so they can never take the places of known clients such as SCADA, and a silent one is
   * closed after `unknown_idle_timeout_ms`.
   */
  private accept(sock: Socket, id: PeerIdentity): boolean {
    const limits = this.ctx.limits;
    const key = identityKey(id);
    const n = this.perIdentity.get(key) ?? 0;
    const known = this.ctx.knows ? this.ctx.knows(id) : true;
    const unknownMax = Math.min(limits.max_unknown_connections, Math.floor(limits.max_connections / 2));
    const limit = this.sockets.size >= limits.max_connections ? "total" : n >= limits.max_connections_per_identity ? "per_identity" : !known && this.unknownOpen >= unknownMax ? "unknown" : undefined;
    if (limit) {
      const max = limit === "total" ? limits.max_connections : limit === "unknown" ? unknownMax : limits.max_connections_per_identity;
      this.ctx.events?.connectionLimit({ listener: this.name, identity: describeIdentity(id), address: id.address, limit, max });
      this.ctx.log?.debug({ listener: this.name, peer: key }, "Connection refused: limit reached.");
      sock.destroy();
      return false;
    }
    this.perIdentity.set(key, n + 1);
    this.sockets.set(sock, id);
    if (!known) {
      this.unknownOpen++;
      sock.once("close", () => this.unknownOpen--);
    }
    sock.setNoDelay(true);
    sock.on("error", (e: Error & { code?: string }) => {
      // Node's own renegotiation guard (ERR_TLS_SESSION_ATTACK), should OpenSSL let one through:
      // an attack on the connection, said as such; other socket errors end it quietly.
      if (e.code !== "ERR_TLS_SESSION_ATTACK") return;
      sock.destroy();
      this.ctx.events?.authFailure({ listener: this.name, address: id.address, reason: "TLS renegotiation attempted (refused; connection closed)" });
    });
    sock.once("close", () => {
      this.sockets.delete(sock);
      const m = (this.perIdentity.get(key) ?? 1) - 1;
      if (m <= 0) this.perIdentity.delete(key);
      else this.perIdentity.set(key, m);
    });
    this.ctx.events?.client({ listener: this.name, identity: describeIdentity(id), address: id.address, ...(id.fingerprint ? { certificate: { subject: id.subject ?? "", fingerprint: id.fingerprint } } : {}), known });
    new ProxyConnection(sock, id, this.name, this.ctx, this.counters).begin(known ? limits.idle_timeout_ms : limits.unknown_idle_timeout_ms);
    return true;
  }
}
