/**
 * The front's limits before authentication, per source address, on each TCP connection
 * before node-opcua's own listener sees it (the CVE-2022-21208 class: resource exhaustion by
 * unauthenticated peers):
 * - `max_channels_per_address` connections open at once from one address;
 * - `pre_auth_rate`: connections and OpenSecureChannel requests from one address, a token
 *   bucket of `max` per `interval_ms` (the Modbus proxy's RateLimiter);
 * - every chunk through a ChunkGuard (chunk sizes, chunks and bytes per message);
 * - `handshake_timeout_ms` from the accept to the OpenSecureChannel response, whatever holds
 *   the connection up: a peer that says nothing or stalls after its Hello, or node-opcua not
 *   reading it yet (it resumes an accepted socket only once its channel count allows, and may
 *   first wait for another channel to close);
 * - `login_timeout_ms` from the OpenSecureChannel response (or the last session's end) to an
 *   activated session on the channel (`logins`, front-login.ts; front.ts feeds it node-opcua's
 *   channel and session events). With a session, node-opcua's own idle timeout applies.
 * A refused connection is destroyed at once and reported through `refused` (a login-refused
 * finding, flood-bounded per address by FrontEvents). The totals node-opcua enforces itself
 * (channels, sessions, subscriptions, monitored items, publish requests) are set in front.ts.
 */
import type { Server, Socket } from "node:net";
import { RateLimiter } from "../modbus/policy/rate-limiter";
import { ChunkGuard, guardSocket, onChannelOpened, type MessageLimits } from "./front-guard";
import { LoginDeadline } from "./front-login";

export interface GateLimits extends MessageLimits {
  maxChannelsPerAddress: number;
  preAuthRate: { max: number; interval_ms: number };
  /** From the accept to the OpenSecureChannel response. */
  handshakeTimeoutMs: number;
  /** From the OpenSecureChannel response (or the last session's end) to an activated session. */
  loginTimeoutMs: number;
}

/** Which limit refused a connection. */
export type GateLimit = "max_channels_per_address" | "pre_auth_rate" | "chunks" | "handshake_timeout_ms" | "login_timeout_ms";

export class FrontGate {
  private readonly live = new Map<string, number>();
  /** Bounded like every table keyed by a peer: past it, new addresses are refused (fail closed). */
  private readonly rate = new RateLimiter(4096);
  private readonly totals = { admitted: 0, refused: 0 };
  private openNow = 0;
  /** Secure channels without an activated session, each closed past login_timeout_ms. */
  readonly logins: LoginDeadline;

  constructor(
    private readonly limits: GateLimits,
    private readonly refused: (address: string | undefined, reason: string, limit: GateLimit) => void,
    private readonly now: () => number = Date.now,
  ) {
    this.logins = new LoginDeadline(limits.loginTimeoutMs, (address, reason) => {
      this.totals.refused += 1;
      this.refused(address, reason, "login_timeout_ms");
    });
  }

  /** Connections let through and refused so far, and those open now. */
  get counters(): { admitted: number; refused: number; open: number } {
    return { ...this.totals, open: this.openNow };
  }

  /** Puts the gate in front of a listening server's connection listeners (node-opcua's endpoint). */
  install(server: Server): void {
    const listeners = server.listeners("connection") as ((s: Socket) => void)[];
    server.removeAllListeners("connection");
    server.on("connection", (socket: Socket) => {
      if (!this.admit(socket)) return;
      for (const l of listeners) l.call(server, socket);
    });
  }

  /** Whether a new connection may go on to node-opcua; a refused one is destroyed and reported. */
  admit(socket: Socket): boolean {
    const address = socket.remoteAddress;
    const key = address ?? "unknown";
    const open = this.live.get(key) ?? 0;
    if (open >= this.limits.maxChannelsPerAddress) return this.refuse(socket, address, `${open} connections from ${key} are open, the most one address may have (opcua.front.limits.max_channels_per_address)`, "max_channels_per_address");
    const why = this.take(key);
    if (why !== undefined) return this.refuse(socket, address, why, "pre_auth_rate");
    this.totals.admitted += 1;
    this.openNow += 1;
    this.live.set(key, open + 1);
    socket.once("close", () => {
      this.openNow -= 1;
      const n = (this.live.get(key) ?? 1) - 1;
      if (n > 0) this.live.set(key, n);
      else this.live.delete(key);
    });
    let opening = false;
    const guard = new ChunkGuard(this.limits, () => {
      const r = this.take(key);
      opening = r !== undefined;
      return r;
    });
    guardSocket(
      socket,
      (reason) => {
        this.totals.refused += 1;
        this.refused(address, reason, opening ? "pre_auth_rate" : "chunks");
      },
      guard,
    );
    this.deadline(socket, address);
    return true;
  }

  /** Closes (and reports) a connection without a secure channel after handshake_timeout_ms. */
  private deadline(socket: Socket, address: string | undefined): void {
    const { handshakeTimeoutMs } = this.limits;
    const timer = setTimeout(() => {
      if (socket.destroyed) return;
      this.totals.refused += 1;
      this.refused(address, `no secure channel within ${handshakeTimeoutMs} ms of connecting (opcua.front.limits.handshake_timeout_ms)`, "handshake_timeout_ms");
      socket.destroy();
    }, handshakeTimeoutMs);
    socket.once("close", () => clearTimeout(timer));
    onChannelOpened(socket, () => clearTimeout(timer));
  }

  /** One pre-authentication request (a connection or an OpenSecureChannel) from `key`. */
  private take(key: string): string | undefined {
    const { max, interval_ms } = this.limits.preAuthRate;
    const r = this.rate.take(key, max, interval_ms, this.now());
    if (r === "ok") return undefined;
    return r === "rate"
      ? `${key} is over the pre-authentication rate of ${max} per ${interval_ms} ms (opcua.front.limits.pre_auth_rate)`
      : `too many source addresses are being tracked; ${key} is refused until one is idle`;
  }

  private refuse(socket: Socket, address: string | undefined, reason: string, limit: GateLimit): false {
    this.totals.refused += 1;
    this.refused(address, reason, limit);
    socket.destroy();
    return false;
  }
}
