/**
 * The OPC UA secure front: a node-opcua server on the gateway that re-exposes the upstream's
 * nodes (FrontMirror) with SignAndEncrypt only (Basic256Sha256, Aes128_Sha256_RsaOaep,
 * Aes256_Sha256_RsaPss), no None endpoint and no anonymous token. Clients log in with a user
 * name and password (FrontUsers) or an X.509 user certificate mapped by thumbprint or subject;
 * FrontPolicy decides every browse, read, subscription, write and call. Denials answer
 * BadUserAccessDenied (BadOutOfRange for a value outside its bounds) and, like every allowed
 * write or call, every refused login and every untrusted client certificate, are recorded as
 * signed events (FrontEvents).
 *
 * The hooks into node-opcua, one per kind of decision:
 * - each session's `sessionContext.checkPermission`: what the role may do (browse filtering,
 *   node-opcua's own read/write/call gates, the UserAccessLevel and UserExecutable attributes);
 * - each mirrored variable's `readAttribute` (Value) and `writeAttribute`, each mirrored method's
 *   `execute`, and each subscription's `preCreateMonitoredItem`: the decision with its event;
 * - the engine's `refreshValues` (node-opcua's value refresh before a Read's checks): upstream
 *   reads only for the nodes the reading session's role may read;
 * - `userManager.isValidUserAsync` and `isValidUserIdentityToken`: logins;
 * - the endpoint's `openSecureChannelFailure`: refused client certificates and channels.
 */
import { createHash, X509Certificate } from "node:crypto";
import { join } from "node:path";
import type { OPCUACertificateManager } from "node-opcua-certificate-manager";
import type { DataValue, StatusCode } from "node-opcua-client";
import type { OPCUAServer, ServerSession } from "node-opcua-server";
import { grantedReceiveBuffer } from "./front-guard";
import { FrontGate } from "./front-gate";
import type { LoginChannel } from "./front-login";
import { DaemonError } from "../../agent/core/errors";
import type { EventSink } from "../../agent/core/events";
import type { OpcuaServiceLog } from "./service";
import type { FrontConfig } from "./front-config";
import { FrontEvents, type FrontActor, type FrontOp } from "./front-events";
import { FrontMirror, type Mirrored, type MirroredVariable, type MirrorResult } from "./front-mirror";
import { FrontPolicy, type FrontDecision, type FrontNode, type OpenWindows } from "./front-policy";
import { FrontUpstream } from "./front-upstream";
import { authenticate } from "./front-users";
import { describeCertificate } from "./link";
import type { OpcuaLink } from "./link";

type ServerModule = typeof import("node-opcua-server");
type ClientModule = typeof import("node-opcua-client");
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = (...a: any[]) => any;

interface Identity {
  user: string;
  role: string | undefined;
}

/** The longest secure channel token the front grants; a client renews it before it runs out. */
const TOKEN_LIFETIME_MS = 600_000;

/** PermissionType bits (OPC UA Part 3) and the front action each stands for. */
const PERMISSION_ACTION: Record<number, "browse" | "read" | "write" | "call"> = { 1: "browse", 2: "read", 32: "read", 64: "write", 4096: "read", 8192: "call" };

/** The front action an OPC UA service stands for, in the events of a refused request. */
const SERVICE_OF: Record<string, FrontOp["service"]> = {
  Browse: "browse",
  BrowseNext: "browse",
  TranslateBrowsePathsToNodeIds: "browse",
  RegisterNodes: "browse",
  UnregisterNodes: "browse",
  Read: "read",
  HistoryRead: "read",
  Write: "write",
  Call: "call",
};

export interface FrontStatus {
  endpoint: string;
  /** The port it listens on (the one bound, when configured as 0). */
  port: number;
  state: "waiting for upstream" | "mirroring" | "serving" | "stopped";
  mirrored_nodes: number;
  truncated: boolean;
  channels: number;
  sessions: number;
  /** Connections the pre-authentication limits let through or refused. */
  connections: FrontGate["counters"];
  upstream: FrontUpstream["counters"];
}

export class OpcuaFront {
  private server: OPCUAServer | undefined;
  private mirror: MirrorResult | undefined;
  /** The mirrored variables of each upstream node id: where the upstream subscription's values go. */
  private variablesOf = new Map<string, MirroredVariable[]>();
  private upstream: FrontUpstream | undefined;
  private ua!: ClientModule;
  private srv: ServerModule | undefined;
  private state: FrontStatus["state"] = "waiting for upstream";
  private gate: FrontGate | undefined;
  private readonly identities = new WeakMap<object, Identity>();
  /** The session of each Read's nodesToRead, for the value refresh node-opcua does first (hookRefresh). */
  private readonly readers = new WeakMap<object, ServerSession>();
  private readonly policy: FrontPolicy;
  readonly events: FrontEvents;
  /** The client application certificates the front trusts or refused (`opcua pki`). */
  certificates: OPCUACertificateManager | undefined;
  /** The user certificates (or their CAs) the front trusts. */
  userCertificates: OPCUACertificateManager | undefined;
  port = 0;

  constructor(
    private readonly o: { config: FrontConfig; pkiDir: string; ownCertificate: { certificateFile: string; privateKeyFile: string }; deviceId: string; link: OpcuaLink; sink: EventSink; log: OpcuaServiceLog; maxNodesPerRead: number; windows?: OpenWindows },
  ) {
    this.policy = new FrontPolicy(o.config.roles, o.windows);
    this.events = new FrontEvents(o.sink, o.config.events);
  }

  async start(): Promise<void> {
    const c = this.o.config;
    const srv: ServerModule = await import("node-opcua-server");
    this.srv = srv;
    const ua: ClientModule = await import("node-opcua-client");
    this.ua = ua;
    const { OPCUACertificateManager } = await import("node-opcua-certificate-manager");
    const certificates = new OPCUACertificateManager({ rootFolder: join(this.o.pkiDir, "front"), automaticallyAcceptUnknownCertificate: false, keySize: 2048, disableFileWatchers: true });
    const userCertificates = new OPCUACertificateManager({ rootFolder: join(this.o.pkiDir, "front-users"), automaticallyAcceptUnknownCertificate: false, keySize: 2048, disableFileWatchers: true });
    await certificates.initialize();
    await userCertificates.initialize();
    this.certificates = certificates;
    this.userCertificates = userCertificates;
    this.mapUserCertificates(userCertificates);
    onRefused(certificates, (der, status) => {
      const cert = safeDescribe(der);
      this.events.loginFailed({ user: `client ${cert?.subject ?? "unknown"}` }, "client_certificate", `client application certificate refused (${status.name}); trust it with gatewarden opcua pki trust ${cert?.thumbprint ?? ""}`.trim(), cert);
    });
    const L = c.limits;
    srv.ServerSession.maxPublishRequestInQueue = L.max_publish_requests;
    const self = this;
    const server = new srv.OPCUAServer({
      port: c.port,
      host: c.host,
      serverCertificateManager: certificates,
      // The gateway's one application certificate (urn:gatewarden:<device-id>), as for the client links.
      certificateFile: this.o.ownCertificate.certificateFile,
      privateKeyFile: this.o.ownCertificate.privateKeyFile,
      userCertificateManager: userCertificates,
      securityModes: [ua.MessageSecurityMode.SignAndEncrypt],
      securityPolicies: c.security_policies.map((p) => ua.SecurityPolicy[p]),
      allowAnonymous: false,
      serverInfo: { applicationUri: `urn:gatewarden:${this.o.deviceId}`, productUri: "urn:gatewarden", applicationName: { text: `Gatewarden ${this.o.deviceId}` } },
      buildInfo: { productName: "Gatewarden OPC UA front", manufacturerName: "Gatewarden" },
      isAuditing: false,
      // node-opcua applies `timeout` to the Hello and the OpenSecureChannel request, and then as
      // the socket's idle timeout for good: the gate bounds the handshake (handshake_timeout_ms,
      // front-gate.ts), a channel without an activated session is closed after login_timeout_ms
      // (front-login.ts), and a channel with one may be idle until its token has run out with
      // its 25 % grace (a client renews it before then), not 10 s: an authenticated client
      // quiet for a few seconds must keep its connection.
      timeout: (TOKEN_LIFETIME_MS * 5) / 4,
      defaultSecureTokenLifetime: TOKEN_LIFETIME_MS,
      maxConnectionsPerEndpoint: L.max_channels,
      serverCapabilities: {
        maxSessions: L.max_sessions,
        maxSubscriptions: L.max_subscriptions,
        maxSubscriptionsPerSession: Math.min(L.max_subscriptions, 32),
        maxMonitoredItems: L.max_monitored_items,
        maxMonitoredItemsPerSubscription: L.max_monitored_items,
        maxArrayLength: 65_536,
        maxStringLength: 65_536,
        maxByteStringLength: L.max_message_bytes,
      },
      transportSettings: {
        adjustTransportLimits: (hello) => ({
          ...hello,
          // The same sizes the chunk guard enforces (front-guard.ts).
          receiveBufferSize: grantedReceiveBuffer(hello.receiveBufferSize),
          sendBufferSize: grantedReceiveBuffer(hello.sendBufferSize),
          maxMessageSize: Math.min(hello.maxMessageSize || L.max_message_bytes, L.max_message_bytes),
          maxChunkCount: Math.min(hello.maxChunkCount || L.max_chunk_count, L.max_chunk_count),
        }),
      },
      userManager: {
        isValidUserAsync(this: ServerSession, userName: string, password: string, callback: (err: Error | null, ok?: boolean) => void) {
          const session = this;
          authenticate(c.users_file, userName, password).then(
            (role) => {
              if (role === undefined) self.events.loginFailed({ user: userName, address: addressOf(session) }, "password", "unknown user or wrong password");
              else self.identities.set(session, { user: userName, role });
              callback(null, role !== undefined);
            },
            (e: unknown) => {
              self.o.log.warn({ err: String(e) }, "OPC UA users file cannot be read; login refused.");
              self.events.loginFailed({ user: userName, address: addressOf(session) }, "password", "the users file cannot be read");
              callback(null, false);
            },
          );
        },
      },
      // Monitored items of the front become monitored items upstream (counted per node).
      onCreateMonitoredItem: async (_sub, mi) => {
        const item = mi as unknown as MonitoredItemLike;
        const m = this.monitoredVariable(item);
        if (m) this.upstream?.watch(m.info.id, item.samplingInterval);
        return ua.StatusCodes.Good;
      },
      onDeleteMonitoredItem: async (_sub, mi) => {
        const m = this.monitoredVariable(mi as unknown as MonitoredItemLike);
        if (m) this.upstream?.unwatch(m.info.id);
        return ua.StatusCodes.Good;
      },
    });
    await server.initialize();
    this.hookLogins(server, ua);
    this.hookRequestRate(server, ua);
    this.hookRefresh(server);
    server.on("create_session", (session: ServerSession) => this.hookSession(session, ua));
    // Limits before authentication, checked before node-opcua reads a byte (it stops the process on an oversized chunk).
    const gate = new FrontGate({ maxChannelsPerAddress: L.max_channels_per_address, preAuthRate: L.pre_auth_rate, maxChunkCount: L.max_chunk_count, maxMessageBytes: L.max_message_bytes, handshakeTimeoutMs: L.handshake_timeout_ms, loginTimeoutMs: L.login_timeout_ms }, (address, reason, limit) =>
      this.events.loginFailed({ user: "unknown client", address }, "channel", `connection refused before authentication: ${reason}`, undefined, limit),
    );
    this.gate = gate;
    // An activation (on a new channel, or moving a session from another) and a closed session change which channels have a logged-in user.
    server.on("session_activated", () => gate.logins.sessionsChanged());
    server.on("session_closed", () => gate.logins.sessionsChanged());
    for (const ep of server.endpoints) {
      const net = (ep as unknown as { _server?: import("node:net").Server })._server;
      if (!net) throw new DaemonError("OPCUA_SETUP", "the OPC UA front's endpoint has no listening server, so its limits cannot be enforced; the front is not started");
      gate.install(net);
      ep.on("channelSecured", (channel: LoginChannel) => gate.logins.opened(channel));
      ep.on("closeChannel", (channel: LoginChannel) => gate.logins.closed(channel));
      ep.on("openSecureChannelFailure", (socket: { remoteAddress?: string; reason?: string }, channel: { clientCertificate?: Buffer | null; securityPolicy?: string }) => {
        const cert = channel.clientCertificate ? safeDescribe(channel.clientCertificate) : undefined;
        this.events.loginFailed({ user: cert ? `client ${cert.subject}` : "unknown client", address: socket.remoteAddress }, "channel", (socket.reason ?? "secure channel refused").slice(0, 300), cert);
      });
    }
    // A session asked for on a channel the front has no endpoint for (security None, say).
    server.on("response", (response: { responseHeader?: { serviceResult?: StatusCode } }, channel: { remoteAddress?: string; securityMode?: number }) => {
      const sc = response.responseHeader?.serviceResult;
      if (!sc || (sc.value !== ua.StatusCodes.BadSecurityModeRejected.value && sc.value !== ua.StatusCodes.BadSecurityPolicyRejected.value)) return;
      const mode = ua.MessageSecurityMode[channel.securityMode ?? 0] ?? "unknown";
      this.events.loginFailed({ user: "unknown client", address: channel.remoteAddress }, "channel", `session refused on a ${mode} channel (${sc.name}): the front offers SignAndEncrypt only`);
    });
    await server.start();
    this.server = server;
    this.port = server.endpoints[0]!.port;
    this.events.start();
    const upstream = new FrontUpstream(ua, this.o.link, this.o.maxNodesPerRead);
    this.upstream = upstream;
    upstream.onValue = (id, dv) => this.onUpstreamValue(id, dv);
    const space = server.engine.addressSpace!;
    const mirror = new FrontMirror(ua, space, upstream);
    const build = async () => {
      if (this.mirror || this.state === "stopped") return;
      const s = this.o.link.openSession;
      if (!s) return;
      this.state = "mirroring";
      try {
        const r = await mirror.build(s, this.o.link.namespaceArray, { roots: c.roots, maxNodes: c.max_nodes });
        for (const m of r.byFrontId.values()) this.guard(m, mirror);
        this.policy.bind(r.nodes);
        this.mirror = r;
        this.variablesOf = variablesByUpstreamId(r);
        this.state = "serving";
        if (r.skipped.length) this.o.log.warn({ skipped: r.skipped.slice(0, 20), count: r.skipped.length }, "OPC UA front: some upstream nodes cannot be mirrored.");
        if (r.truncated) this.o.log.warn({ max_nodes: c.max_nodes }, "OPC UA front: the upstream has more nodes than opcua.front.max_nodes; the rest are not mirrored.");
        this.o.log.info({ nodes: r.nodes.length, port: this.port }, "OPC UA front serving.");
      } catch (e) {
        this.state = "waiting for upstream";
        this.o.log.warn({ err: e instanceof Error ? e.message : String(e) }, "OPC UA front: mirroring the upstream failed; trying again at the next session.");
      }
    };
    this.o.link.onSession(() => void build());
    void build();
  }

  private monitoredVariable(item: MonitoredItemLike): Mirrored | undefined {
    const m = item.node ? this.byId(item.node.nodeId.toString()) : undefined;
    return m?.kind === "variable" && item.itemToMonitor.attributeId === this.ua.AttributeIds.Value ? m : undefined;
  }

  private byId(id: string): Mirrored | undefined {
    return this.mirror?.byFrontId.get(id);
  }

  /** Who a session acts for: a password user (set at login) or a certificate user (mapped here). */
  private identity(session: ServerSession | undefined): Identity {
    if (!session) return { user: "unknown", role: undefined };
    const known = this.identities.get(session);
    if (known) return known;
    const token = session.userIdentityToken as { certificateData?: Buffer } | undefined;
    if (token?.certificateData) {
      const id = this.certificateUser(token.certificateData);
      this.identities.set(session, id);
      return id;
    }
    return { user: "unknown", role: undefined };
  }

  private certificateUser(der: Buffer): Identity {
    const c = this.o.config;
    const thumb = createHash("sha1").update(der).digest("hex");
    let subject = "";
    try {
      subject = new X509Certificate(der).subject.replace(/\n/g, ", ");
    } catch {
      return { user: `certificate ${thumb}`, role: undefined };
    }
    const m = c.certificate_users.find((u) => (u.thumbprint !== undefined ? u.thumbprint.replace(/:/g, "").toLowerCase() === thumb : sameSubject(u.subject!, subject)));
    return { user: `certificate ${subject || thumb}`, role: m?.role };
  }

  /** User certificates: one listed by thumbprint is accepted as itself; by subject, only when the user trust list (a CA) vouches for it. */
  private mapUserCertificates(cm: OPCUACertificateManager): void {
    const check = cm.checkCertificate.bind(cm) as (chain: Buffer | Buffer[]) => Promise<StatusCode>;
    const wrapped = async (chain: Buffer | Buffer[]): Promise<StatusCode> => {
      const der = Array.isArray(chain) ? chain[0]! : chain;
      const id = this.certificateUser(der);
      const listed = this.o.config.certificate_users.some((u) => u.thumbprint !== undefined && u.thumbprint.replace(/:/g, "").toLowerCase() === createHash("sha1").update(der).digest("hex"));
      const ua: ClientModule = await import("node-opcua-client");
      let status: StatusCode = ua.StatusCodes.BadCertificateUntrusted;
      if (id.role !== undefined) {
        const x = new X509Certificate(der);
        const now = Date.now();
        const inDates = now >= Date.parse(x.validFrom) && now <= Date.parse(x.validTo);
        status = !inDates ? ua.StatusCodes.BadCertificateTimeInvalid : listed ? ua.StatusCodes.Good : await check(chain);
      }
      if (status.value !== 0) this.events.loginFailed({ user: id.user }, "certificate", `user certificate refused (${status.name})`, safeDescribe(der));
      return status;
    };
    replaceCheck(cm, wrapped);
  }

  /** Refused identity tokens (anonymous, malformed, a rejected user certificate) are login failures too. */
  private hookLogins(server: OPCUAServer, ua: ClientModule): void {
    const s = server as unknown as { isValidUserIdentityToken: Fn };
    const orig = s.isValidUserIdentityToken.bind(server);
    s.isValidUserIdentityToken = (channel: unknown, session: unknown, token: { userName?: string; constructor: { name: string } } | undefined, sig: unknown, endpoint: unknown, cb: (err: Error | null, sc?: StatusCode) => void) => {
      orig(channel, session, token, sig, endpoint, (err: Error | null, sc?: StatusCode) => {
        if (!err && sc && sc.value !== ua.StatusCodes.Good.value && !/Certificate/.test(sc.name)) {
          const kind = token?.constructor.name;
          const method = kind === "AnonymousIdentityToken" || !token ? "anonymous" : kind === "X509IdentityToken" ? "certificate" : "token";
          this.events.loginFailed({ user: token?.userName ?? (method === "anonymous" ? "anonymous" : "unknown"), address: addressOf(session as ServerSession) }, method, `identity token refused (${sc.name})`);
        }
        cb(err, sc);
      });
    };
  }

  private hookSession(session: ServerSession, ua: ClientModule): void {
    const ctx = session.sessionContext as unknown as { checkPermission: (node: { nodeId: { toString(): string } }, permission: number) => boolean };
    ctx.checkPermission = (node, permission) => {
      const action = PERMISSION_ACTION[permission];
      if (!action) return false;
      const id = this.identity(session);
      if (id.role === undefined) return false;
      const m = this.byId(node.nodeId.toString());
      // No rate is taken here: node-opcua asks for every reference a browse returns and for
      // its own gates; the operations below decide and record. A node a browse hides is a
      // browse denial, recorded (flood-bounded per user) like the others.
      const may = this.policy.may(id.role, m?.info, action);
      if (!may && action === "browse" && m) this.events.denied(this.actor(session, id), this.op(m.info, "browse"), "default-deny", `role ${id.role} may not browse ${m.info.path}`, "BadUserAccessDenied");
      return may;
    };
    session.on("new_subscription", (sub: { preCreateMonitoredItem: Fn }) => {
      const orig = sub.preCreateMonitoredItem.bind(sub);
      sub.preCreateMonitoredItem = (addressSpace: unknown, ts: unknown, req: { itemToMonitor: { nodeId: { toString(): string }; attributeId: number } }) => {
        const m = this.byId(req.itemToMonitor.nodeId.toString());
        if (m && req.itemToMonitor.attributeId === ua.AttributeIds.Value) {
          const d = this.decide(session, m, "subscribe");
          if (!d.allow) return { createResult: new ua.MonitoredItemCreateResult({ statusCode: ua.StatusCodes.BadUserAccessDenied }), monitoredItemCreateRequest: req };
        }
        return orig(addressSpace, ts, req);
      };
    });
  }

  /**
   * Every service request on an active session (but Publish and Republish, bounded by
   * max_publish_requests) counts against the user's role `request_rate`; past it the request
   * answers BadTooManyOperations and a denial is recorded (flood-bounded per user).
   */
  private hookRequestRate(server: OPCUAServer, ua: ClientModule): void {
    const s = server as unknown as { _apply_on_SessionObject: Fn };
    const apply = s._apply_on_SessionObject.bind(server);
    s._apply_on_SessionObject = (Response: { schema: { name: string } }, message: { session?: ServerSession & { status?: string } }, channel: unknown, action: Fn) => {
      const session = message.session;
      const request = Response.schema.name.replace(/Response$/, "");
      const nodesToRead = (message as { request?: { nodesToRead?: unknown } }).request?.nodesToRead;
      if (session && (request === "Read" || request === "HistoryRead") && Array.isArray(nodesToRead)) this.readers.set(nodesToRead, session);
      if (session?.status === "active" && request !== "Publish" && request !== "Republish") {
        const id = this.identity(session);
        const d = this.policy.request(id.user, id.role, request, Date.now());
        if (!d.allow) {
          this.events.denied(this.actor(session, id), { service: SERVICE_OF[request] ?? "subscribe", request }, d.rule, d.reason, d.status ?? "BadTooManyOperations");
          return apply(Response, message, channel, (_s: unknown, _send: unknown, sendError: (sc: StatusCode) => void) => sendError(ua.StatusCodes.BadTooManyOperations));
        }
      }
      return apply(Response, message, channel, action);
    };
  }

  /**
   * node-opcua refreshes the values a Read asks for (our upstream reads) before it checks who
   * may read them: the refresh goes upstream only for the nodes the reading session's role may
   * read. A refresh no session asked for (see hookRequestRate) reads no mirrored node upstream.
   * The denial itself, with its event, is the Value read's (guard).
   */
  private hookRefresh(server: OPCUAServer): void {
    const engine = server.engine as unknown as { refreshValues: (nodes: { nodeId: { toString(): string } }[], maxAge: number, cb: Fn) => void };
    const refresh = engine.refreshValues.bind(engine);
    engine.refreshValues = (nodes, maxAge, cb) => {
      const session = this.readers.get(nodes);
      const role = session ? this.identity(session).role : undefined;
      const allowed = nodes.filter((n) => {
        const m = this.byId(n.nodeId.toString());
        return !m || (role !== undefined && this.policy.may(role, m.info, "read"));
      });
      return refresh(allowed, maxAge, cb);
    };
  }

  /** One decision with its event. */
  private decide(session: ServerSession | undefined, m: Mirrored, action: "read" | "subscribe" | "write" | "call", value?: unknown): FrontDecision {
    const id = this.identity(session);
    const d = this.policy.decide({ user: id.user, role: id.role, node: m.info, action, value, now: Date.now() });
    if (!d.allow) this.events.denied(this.actor(session, id), this.op(m.info, action, value), d.rule, d.reason, d.status ?? "BadUserAccessDenied");
    return d;
  }

  private actor(session: ServerSession | undefined, id: Identity): FrontActor {
    return { user: id.user, ...(id.role ? { role: id.role } : {}), ...(session ? { address: addressOf(session) } : {}) };
  }

  private op(n: FrontNode, service: FrontOp["service"], value?: unknown): FrontOp {
    return { service, node_id: n.uriId, path: n.path, ...(value !== undefined ? { value } : {}) };
  }

  /** Puts the decision (and its event) in front of each operation on a mirrored node. */
  private guard(m: Mirrored, mirror: FrontMirror): void {
    const sessionOf = (ctx: unknown) => (ctx as { session?: ServerSession } | null)?.session;
    if (m.kind === "variable") {
      const v = m.node as unknown as { readAttribute: Fn; writeAttribute: Fn };
      const read = v.readAttribute.bind(v);
      v.readAttribute = (ctx: unknown, attributeId: number, ...rest: unknown[]) => {
        const session = sessionOf(ctx);
        if (session && attributeId === 13) {
          const d = this.decide(session, m, "read");
          if (!d.allow) return new this.ua.DataValue({ statusCode: this.statusOf(d) });
        }
        return read(ctx, attributeId, ...rest);
      };
      // writeAttribute, not writeValue: node-opcua's own gate (canUserWriteAttribute) comes first there.
      const write = v.writeAttribute.bind(v);
      v.writeAttribute = (ctx: unknown, wv: { attributeId: number; value?: DataValue }, cb: (err: Error | null, sc?: StatusCode) => void) => {
        const session = sessionOf(ctx);
        if (!session) return write(ctx, wv, cb);
        if (wv.attributeId !== 13) {
          const id = this.identity(session);
          this.events.denied(this.actor(session, id), this.op(m.info, "write"), "attributes", `attribute ${wv.attributeId} of ${m.info.path} cannot be written through the front`, "BadUserAccessDenied");
          return cb(null, this.ua.StatusCodes.BadUserAccessDenied);
        }
        const value = wv.value?.value?.value as unknown;
        const d = this.decide(session, m, "write", value);
        if (!d.allow) return cb(null, this.statusOf(d));
        return write(ctx, wv, (err: Error | null, sc?: StatusCode) => {
          this.events.allowed(this.actor(session, this.identity(session)), this.op(m.info, "write", value), d.rule, err ? "error" : (sc?.name ?? "Good"));
          cb(err, sc);
        });
      };
    } else if (m.kind === "method") {
      mirror.bindMethod(m);
      const meth = m.node as unknown as { execute: Fn };
      const exec = meth.execute.bind(meth);
      // node-opcua calls execute with a callback or, in its promise form, without one.
      meth.execute = (object: unknown, inputArguments: unknown, ctx: unknown, cb?: (err: Error | null, r?: { statusCode: StatusCode }) => void) => {
        const run = async (): Promise<{ statusCode: StatusCode }> => {
          const session = sessionOf(ctx);
          if (!session) return exec(object, inputArguments, ctx);
          const d = this.decide(session, m, "call");
          if (!d.allow) return { statusCode: this.statusOf(d) };
          const r = (await exec(object, inputArguments, ctx)) as { statusCode: StatusCode };
          this.events.allowed(this.actor(session, this.identity(session)), this.op(m.info, "call"), d.rule, r?.statusCode?.name ?? "Good");
          return r;
        };
        if (typeof cb !== "function") return run();
        run().then(
          (r) => cb(null, r),
          (e: Error) => cb(e),
        );
      };
    }
  }

  private onUpstreamValue(upstreamId: string, dv: DataValue): void {
    for (const x of this.variablesOf.get(upstreamId) ?? []) x.node.setValueFromSource(dv.value, dv.statusCode, dv.sourceTimestamp ?? new Date());
  }

  /** The application certificate was renewed: new channels get the new one. */
  certificateChanged(): void {
    if (this.server) this.srv?.invalidateServerCertificateCache(this.server);
  }

  private statusOf(d: FrontDecision): StatusCode {
    return this.ua.StatusCodes[d.status ?? "BadUserAccessDenied"];
  }

  status(): FrontStatus {
    return {
      endpoint: this.server?.getEndpointUrl() ?? "",
      port: this.port,
      state: this.state,
      mirrored_nodes: this.mirror?.nodes.length ?? 0,
      truncated: this.mirror?.truncated ?? false,
      channels: this.server?.currentChannelCount ?? 0,
      sessions: this.server?.currentSessionCount ?? 0,
      connections: this.gate?.counters ?? { admitted: 0, refused: 0, open: 0 },
      upstream: this.upstream?.counters ?? { reads: 0, read_batches: 0, writes: 0, calls: 0, monitored: 0 },
    };
  }

  async stop(): Promise<void> {
    this.state = "stopped";
    this.events.stop();
    this.gate?.logins.stop();
    await this.upstream?.stop();
    await this.server?.shutdown(0);
    this.server = undefined;
  }
}

function variablesByUpstreamId(r: MirrorResult): Map<string, MirroredVariable[]> {
  const out = new Map<string, MirroredVariable[]>();
  for (const x of r.byFrontId.values()) {
    if (x.kind !== "variable") continue;
    const list = out.get(x.info.id);
    if (list) list.push(x);
    else out.set(x.info.id, [x]);
  }
  return out;
}

/** Replaces a store's checkCertificate (both its promise and callback forms) with `check`. */
function replaceCheck(cm: OPCUACertificateManager, check: (chain: Buffer | Buffer[]) => Promise<StatusCode>): void {
  (cm as unknown as { checkCertificate: unknown }).checkCertificate = (chain: Buffer | Buffer[], cb?: (err: Error | null, s?: StatusCode) => void) => {
    const p = check(chain);
    if (!cb) return p;
    p.then(
      (s) => cb(null, s),
      (e: Error) => cb(e),
    );
  };
}

/** Calls `refused` for every certificate the store does not accept. */
function onRefused(cm: OPCUACertificateManager, refused: (der: Buffer, status: StatusCode) => void): void {
  const check = cm.checkCertificate.bind(cm) as (chain: Buffer | Buffer[]) => Promise<StatusCode>;
  replaceCheck(cm, async (chain) => {
    const status = await check(chain);
    if (status.value !== 0) refused(Array.isArray(chain) ? chain[0]! : chain, status);
    return status;
  });
}

interface MonitoredItemLike {
  node?: { nodeId: { toString(): string } } | null;
  itemToMonitor: { attributeId: number };
  samplingInterval: number;
}

function addressOf(session: ServerSession | undefined): string | undefined {
  try {
    return session?.channel?.remoteAddress ?? undefined;
  } catch {
    return undefined;
  }
}

function safeDescribe(der: Buffer) {
  try {
    return describeCertificate(Buffer.from(der));
  } catch {
    return undefined;
  }
}

/** Subjects compare without regard to spacing around separators or case of attribute names. */
function sameSubject(a: string, b: string): boolean {
  const norm = (s: string) =>
    s
      .split(/[,\n/]+/)
      .map((p) => p.trim())
      .filter(Boolean)
      .map((p) => p.replace(/^([^=]+)=/, (_m, k: string) => `${k.trim().toUpperCase()}=`))
      .sort()
      .join(",");
  return norm(a) === norm(b);
}
