/**
 * OPC UA client events through the spine. Every event marks a change of state (a server going
 * down or up, a certificate or user refused, a point turning unreadable), so a server that keeps
 * failing costs one event, not one per attempt.
 *
 * | what                              | OCSF class            | class_uid | activity_id       | class   | severity |
 * |-----------------------------------|-----------------------|-----------|-------------------|---------|----------|
 * | server down / unreachable         | Network Activity      | 4001      | 4 Fail            | finding | 3 Medium |
 * | server up                         | Network Activity      | 4001      | 1 Open            | audit   | 1 Info   |
 * | server certificate not trusted    | Authentication        | 3002      | 1 Logon (failure) | finding | 4 High   |
 * | user or security settings refused | Authentication        | 3002      | 1 Logon (failure) | finding | 3 Medium |
 * | point unreadable (bad status)     | Detection Finding     | 2004      | 1 Create          | finding | 2 Low    |
 * | trust list changed (CLI)          | Device Config State Change | 5019 | 99 Other          | audit   | 2 Low    |
 */
import type { EventClass, EventDraft, EventSink, SeverityId } from "../../agent/core/events";

export interface CertificateSeen {
  /** SHA-1 thumbprint, hex, as OPC UA tools show it. */
  thumbprint: string;
  sha256: string;
  subject: string;
  /** Where the refused certificate was saved for review. */
  file?: string;
}

/** Minimum time between two "unreadable" events of one point. */
const POINT_HOLD_MS = 10 * 60_000;
/** Points tracked for the hold; beyond it the oldest entry goes (bounded state). */
const MAX_POINT_STATES = 10_000;

export class OpcuaEvents {
  private readonly serverState = new Map<string, string>();
  private readonly pointBad = new Map<string, number>();

  constructor(
    private readonly sink: EventSink,
    private readonly now: () => number = Date.now,
  ) {}

  /** A connection attempt failed or an open connection broke. Recorded once per outage and reason kind. */
  down(server: string, endpoint: string, reason: string, kind: "network" | "certificate" | "authentication" = "network", cert?: CertificateSeen): void {
    const key = `down:${kind}`;
    if (this.serverState.get(server) === key) return;
    this.serverState.set(server, key);
    const base = { dst_endpoint: { name: endpoint }, unmapped: { opcua: { server, reason, ...(cert ? { certificate: cert } : {}) } } };
    if (kind === "network") {
      this.emit("finding", 3, 4001, 4, `OPC UA server ${server} is down: ${reason}`, base);
    } else if (kind === "certificate") {
      const how = cert?.file ? `; saved to ${cert.file} for review` : "";
      this.emit("finding", 4, 3002, 1, `OPC UA server ${server} presented a certificate that is not trusted (SHA-1 thumbprint ${cert?.thumbprint ?? "unknown"})${how}`, {
        ...base,
        status: "Failure",
        status_detail: reason,
        auth_protocol: "OPC UA",
      });
    } else {
      this.emit("finding", 3, 3002, 1, `OPC UA server ${server} refused the session: ${reason}`, { ...base, status: "Failure", status_detail: reason, auth_protocol: "OPC UA" });
    }
  }

  up(server: string, endpoint: string, security: string): void {
    if (this.serverState.get(server) === "up") return;
    this.serverState.set(server, "up");
    this.emit("audit", 1, 4001, 1, `OPC UA server ${server} is up (${security})`, { dst_endpoint: { name: endpoint }, unmapped: { opcua: { server, security } } });
  }

  /** An operator trusted a refused server certificate (`gatewarden opcua trust`). */
  certificateTrusted(cert: CertificateSeen, by: string): void {
    this.trustChanged("servers", "trusted", cert, by);
  }

  /** An operator renewed the gateway's own application certificate (`gatewarden opcua pki renew`). */
  ownCertificateRenewed(before: string | undefined, after: { thumbprint: string; sha256: string; subject: string; not_after: string }, by: string): void {
    this.emit("audit", 2, 5019, 99, `OPC UA application certificate renewed by ${by}: ${after.thumbprint} (${after.subject}, valid until ${after.not_after})${before ? `, replacing ${before}` : ""}`, {
      actor: { user: { name: by } },
      unmapped: { opcua: { own_certificate: { thumbprint: after.thumbprint, sha256: after.sha256, subject: after.subject, not_after: after.not_after }, replaced: before ?? null } },
    });
  }

  /** An operator changed a trust list (`gatewarden opcua pki trust|reject`, `opcua trust`). */
  trustChanged(list: "servers" | "clients" | "users", change: "trusted" | "rejected", cert: CertificateSeen, by: string): void {
    const kind = list === "servers" ? "server" : list === "clients" ? "client" : "user";
    const c = { thumbprint: cert.thumbprint, sha256: cert.sha256, subject: cert.subject };
    this.emit("audit", 2, 5019, 99, `OPC UA ${kind} certificate ${cert.thumbprint} (${cert.subject}) ${change} by ${by}`, { actor: { user: { name: by } }, unmapped: { opcua: { trust_list: list, change, certificate: c } } });
  }

  /** A point's node answered with a bad status or a value that is not a number. At most one
   * event per point per hold time, so a flapping node cannot flood the outbox. */
  pointUnreadable(point: string, server: string, nodeId: string, reason: string): void {
    const t = this.now();
    const last = this.pointBad.get(point);
    if (last !== undefined && t - last < POINT_HOLD_MS) return;
    this.pointBad.delete(point);
    if (this.pointBad.size >= MAX_POINT_STATES) this.pointBad.delete(this.pointBad.keys().next().value!);
    this.pointBad.set(point, t);
    this.emit("finding", 2, 2004, 1, `Point ${point} could not be read from OPC UA server ${server} (${nodeId}): ${reason}`, {
      finding_info: { title: "OPC UA point unreadable", uid: `opcua-unreadable-${point}-${t}` },
      unmapped: { opcua: { server, node_id: nodeId, point, reason } },
    });
  }

  private emit(cls: EventClass, severity: SeverityId, class_uid: number, activity_id: number, message: string, attrs: Record<string, unknown>): void {
    const d: EventDraft = { class: cls, severity, time: this.now(), ocsf: { class_uid, activity_id, message, ...attrs } };
    this.sink.record(d);
  }
}
