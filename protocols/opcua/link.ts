/**
 * One OPC UA server: a secure channel and a session, kept open and re-opened with a backoff when
 * they break. Reads go through `read`; while the link is down they fail at once, so pollers
 * never queue behind a dead server.
 *
 * Trust is checked twice: the certificate store refuses a server certificate it does not
 * trust (it is saved under `rejected/` and reported with its thumbprint), and when
 * `server_certificate` is configured the server must present exactly that certificate.
 */
import { createHash, X509Certificate } from "node:crypto";
import { readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { OPCUACertificateManager } from "node-opcua-certificate-manager";
import type { ClientSession, DataValue, OPCUAClient, ReadValueIdOptions, UserIdentityInfo } from "node-opcua-client";
import type { OpcuaServerConfig } from "./config";
import type { CertificateSeen, OpcuaEvents } from "./events";
import { loadUserCredentials } from "./user";

type ClientModule = typeof import("node-opcua-client");

export type LinkState = "connecting" | "up" | "down" | "stopped";

export interface LinkStatus {
  name: string;
  endpoint: string;
  security: string;
  state: LinkState;
  last_error?: string;
  connects: number;
  reads: number;
  read_errors: number;
}

export interface LinkLimits {
  maxMessageBytes: number;
  maxChunkCount: number;
  /** The application URI in the gateway's own certificate. */
  applicationUri: string;
}

/** Status codes that mean the server refused who we are, not that it is unreachable. */
const AUTH_REFUSED = /BadUserAccessDenied|BadIdentityTokenInvalid|BadIdentityTokenRejected|BadSecurityPolicyRejected|BadSecurityModeRejected|BadCertificate(?!Untrusted)|BadSecurityChecksFailed|The endpoint .* not found|Cannot find an Endpoint/i;

export class OpcuaLink {
  private client: OPCUAClient | undefined;
  private session: ClientSession | undefined;
  private state: LinkState = "down";
  private lastError: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private delay: number;
  /** An attempt is running, from connect() to the end of its teardown (no second one may start). */
  private attempting = false;
  /** retryNow was asked during the running attempt. */
  private wake = false;
  private namespaces: string[] = [];
  private readonly counters = { connects: 0, reads: 0, read_errors: 0 };
  /** The certificate this server last presented and the client refused (store or pin). */
  refusedCertificate: CertificateSeen | undefined;
  /** Called after each new session (node ids with a namespace URI are resolved again, the front re-subscribes). */
  private readonly sessionListeners: ((session: ClientSession) => void)[] = [];
  /** Called when an open session breaks (before the link reconnects). */
  private readonly lostListeners: (() => void)[] = [];

  constructor(
    private readonly ua: ClientModule,
    readonly config: OpcuaServerConfig,
    private readonly certificates: OPCUACertificateManager,
    private readonly events: OpcuaEvents,
    private readonly limits: LinkLimits,
    private readonly log: { info(o: object, m: string): void; warn(o: object, m: string): void },
  ) {
    this.delay = config.reconnect_min_ms;
  }

  get security(): string {
    return `${this.config.security_mode}/${this.config.security_mode === "None" ? "None" : this.config.security_policy}`;
  }

  isUp(): boolean {
    return this.state === "up";
  }

  start(): void {
    if (this.state === "stopped") return;
    void this.connect();
  }

  onSession(fn: (session: ClientSession) => void): void {
    this.sessionListeners.push(fn);
  }

  onLost(fn: () => void): void {
    this.lostListeners.push(fn);
  }

  /** The open session, or undefined while the link is not up. */
  get openSession(): ClientSession | undefined {
    return this.state === "up" ? this.session : undefined;
  }

  /** The connected server's namespace table (index -> URI). */
  get namespaceArray(): readonly string[] {
    return this.namespaces;
  }

  /** Namespace index of a URI on the connected server, or undefined. */
  namespaceIndex(uri: string): number | undefined {
    const i = this.namespaces.indexOf(uri);
    return i < 0 ? undefined : i;
  }

  async read(nodes: ReadValueIdOptions[]): Promise<DataValue[]> {
    const s = this.session;
    if (!s || this.state !== "up") throw new Error(`server ${this.config.name} is ${this.state}`);
    this.counters.reads++;
    try {
      return await s.read(nodes);
    } catch (e) {
      this.counters.read_errors++;
      throw e;
    }
  }

  /**
   * Try now instead of at the end of the backoff (after the operator fixed trust, say). During
   * an attempt (from its connect to its teardown) the attempt is not cut short: if it fails, the
   * next one starts at once instead of after the backoff.
   */
  retryNow(): void {
    if (this.state === "up" || this.state === "stopped") return;
    this.delay = this.config.reconnect_min_ms;
    if (this.attempting) {
      this.wake = true;
      return;
    }
    clearTimeout(this.timer);
    void this.connect();
  }

  status(): LinkStatus {
    return { name: this.config.name, endpoint: this.config.endpoint, security: this.security, state: this.state, ...(this.lastError ? { last_error: this.lastError } : {}), ...this.counters };
  }

  async stop(): Promise<void> {
    this.state = "stopped";
    clearTimeout(this.timer);
    await this.teardown();
  }

  private async connect(): Promise<void> {
    if (this.state === "stopped") return;
    this.state = "connecting";
    this.attempting = true;
    this.wake = false;
    const c = this.config;
    const ua = this.ua;
    const client = ua.OPCUAClient.create({
      applicationName: "Gatewarden",
      applicationUri: this.limits.applicationUri,
      clientName: `gatewarden-${c.name}`,
      clientCertificateManager: this.certificates,
      securityMode: ua.MessageSecurityMode[c.security_mode],
      securityPolicy: c.security_mode === "None" ? ua.SecurityPolicy.None : ua.SecurityPolicy[c.security_policy],
      endpointMustExist: false,
      keepSessionAlive: true,
      requestedSessionTimeout: 60_000,
      defaultTransactionTimeout: c.request_timeout_ms,
      // One attempt per call: the backoff between attempts is ours, so state and events stay exact.
      connectionStrategy: { maxRetry: 0, initialDelay: c.reconnect_min_ms, maxDelay: c.reconnect_max_ms },
      // Bounds checked before a message is reassembled: chunks that never end cannot grow memory.
      transportSettings: { maxMessageSize: this.limits.maxMessageBytes, maxChunkCount: this.limits.maxChunkCount, receiveBufferSize: 65_536, sendBufferSize: 65_536 },
    });
    this.client = client;
    // A server that accepts the socket and then stalls (or streams chunks that never make a
    // message) must not hold the link in "connecting" forever.
    let deadline: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      deadline = setTimeout(() => reject(new Error(`no session within connect_timeout_ms (${c.connect_timeout_ms} ms)`)), c.connect_timeout_ms);
    });
    try {
      const session = await Promise.race([this.open(client), timeout]);
      clearTimeout(deadline);
      if (this.isStopped()) {
        await session.close().catch(() => undefined);
        return;
      }
      this.session = session;
      const broken = (why: string) => void this.broken(client, why);
      client.once("start_reconnection", () => broken("connection lost"));
      client.once("close", () => broken("connection closed"));
      session.once("session_closed", () => broken("session closed by the server"));
      session.once("keepalive_failure", () => broken("session keep-alive failed"));
      this.state = "up";
      this.attempting = false;
      this.lastError = undefined;
      this.delay = c.reconnect_min_ms;
      this.counters.connects++;
      this.events.up(c.name, c.endpoint, this.security);
      this.log.info({ server: c.name, endpoint: c.endpoint, security: this.security }, "OPC UA session open.");
      for (const fn of this.sessionListeners) fn(session);
    } catch (e) {
      clearTimeout(deadline);
      await this.failed(client, e);
    }
  }

  /** Channel, pin check, session and the server's namespace table. */
  private async open(client: OPCUAClient): Promise<ClientSession> {
    await client.connect(this.config.endpoint);
    this.checkPinned(client);
    const session = await client.createSession(this.userIdentity());
    try {
      this.namespaces = await session.readNamespaceArray();
    } catch (e) {
      await session.close().catch(() => undefined);
      throw e;
    }
    return session;
  }

  private isStopped(): boolean {
    return this.state === "stopped";
  }

  private userIdentity(): UserIdentityInfo {
    const u = loadUserCredentials(this.config);
    if (u.kind === "anonymous") return { type: this.ua.UserTokenType.Anonymous };
    if (u.kind === "password") return { type: this.ua.UserTokenType.UserName, userName: u.username, password: u.password };
    return { type: this.ua.UserTokenType.Certificate, certificateData: u.certificate, privateKey: u.keyPem };
  }

  /** With `server_certificate` set, the channel must be with exactly that certificate. */
  private checkPinned(client: OPCUAClient): void {
    const file = this.config.server_certificate;
    if (!file || this.config.security_mode === "None") return;
    const presented = client.serverCertificate;
    const der = Array.isArray(presented) ? presented[0] : presented;
    const want = derOf(readFileSync(file));
    if (!der || !Buffer.from(der).equals(want)) {
      const seen = der ? describeCertificate(Buffer.from(der)) : undefined;
      throw new PinMismatch(`the server presented ${seen ? `certificate ${seen.thumbprint}` : "no certificate"}, not the configured server_certificate`, seen);
    }
  }

  private async failed(client: OPCUAClient, e: unknown): Promise<void> {
    if (this.isStopped()) return this.teardown(client);
    this.attempting = true;
    const reason = messageOf(e);
    this.lastError = reason;
    this.state = "down";
    if (e instanceof PinMismatch) {
      this.refusedCertificate = e.seen;
      this.events.down(this.config.name, this.config.endpoint, reason, "certificate", e.seen);
    } else if (/BadCertificateUntrusted|certificate verification failed/i.test(reason)) {
      this.refusedCertificate = this.lastRejected();
      this.events.down(this.config.name, this.config.endpoint, reason, "certificate", this.refusedCertificate);
      // Someone in the middle can present a new certificate at every attempt: keep the newest.
      pruneRejected(this.certificates.rejectedFolder, MAX_REJECTED);
    }
    else if (AUTH_REFUSED.test(reason)) this.events.down(this.config.name, this.config.endpoint, reason, "authentication");
    else this.events.down(this.config.name, this.config.endpoint, reason);
    this.log.warn({ server: this.config.name, endpoint: this.config.endpoint, reason }, "OPC UA server not available.");
    await this.teardown(client);
    this.attempting = false;
    this.schedule();
  }

  private async broken(client: OPCUAClient, why: string): Promise<void> {
    if (this.client !== client || this.state !== "up") return;
    for (const fn of this.lostListeners) fn();
    await this.failed(client, new Error(why));
  }

  private schedule(): void {
    if (this.state === "stopped") return;
    clearTimeout(this.timer);
    // Full jitter keeps a fleet of gateways from reconnecting in step after a server restart.
    // A retryNow during the attempt that just failed: the next one starts now.
    const wait = this.wake ? 0 : Math.round(this.delay / 2 + (Math.random() * this.delay) / 2);
    this.wake = false;
    this.delay = Math.min(this.delay * 2, this.config.reconnect_max_ms);
    this.timer = setTimeout(() => void this.connect(), wait);
    this.timer.unref();
  }

  private async teardown(client = this.client): Promise<void> {
    const s = this.session;
    this.session = undefined;
    if (client === this.client) this.client = undefined;
    if (s) await s.close().catch(() => undefined);
    if (client) {
      client.removeAllListeners();
      await client.disconnect().catch(() => undefined);
    }
  }

  /** The newest certificate in the store's `rejected/` folder: what the server just presented. */
  private lastRejected(): CertificateSeen | undefined {
    const newest = rejectedFiles(this.certificates.rejectedFolder)[0];
    try {
      return newest ? { ...describeCertificate(derOf(readFileSync(newest))), file: newest } : undefined;
    } catch {
      return undefined;
    }
  }
}

/** Refused certificates kept for review; older ones are deleted. */
export const MAX_REJECTED = 32;

/** The certificate files of the store's `rejected/` folder, newest first ([] if unreadable). */
export function rejectedFiles(dir: string): string[] {
  try {
    return readdirSync(dir)
      .filter((f) => /\.(pem|der)$/i.test(f))
      .map((f) => ({ f: join(dir, f), t: statSync(join(dir, f)).mtimeMs }))
      .sort((a, b) => b.t - a.t)
      .map((x) => x.f);
  } catch {
    return [];
  }
}

/** Deletes all but the `keep` newest certificate files of the store's `rejected/` folder. */
export function pruneRejected(dir: string, keep: number): void {
  for (const f of rejectedFiles(dir).slice(keep)) rmSync(f, { force: true });
}

class PinMismatch extends Error {
  constructor(
    message: string,
    readonly seen: CertificateSeen | undefined,
  ) {
    super(message);
  }
}

/** DER bytes of a PEM or DER certificate file. */
export function derOf(buf: Buffer): Buffer {
  const text = buf.toString("latin1");
  const m = /-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/.exec(text);
  return m ? Buffer.from(m[1]!.replace(/\s+/g, ""), "base64") : buf;
}

export function describeCertificate(der: Buffer): CertificateSeen {
  const x = new X509Certificate(der);
  return { thumbprint: createHash("sha1").update(der).digest("hex"), sha256: createHash("sha256").update(der).digest("hex"), subject: x.subject.replace(/\n/g, ", ") };
}

/** The first non-empty line of an error, trimmed: node-opcua's messages often start with a space or a newline. */
export function messageOf(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return (m.split("\n").map((l) => l.trim()).find((l) => l) ?? "unknown error").slice(0, 300);
}
