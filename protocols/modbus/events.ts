/**
 * Modbus proxy events through the spine, with flood aggregation.
 *
 * OCSF mapping (class_uid / activity_id, spine event class, severity_id):
 *
 * | what                         | OCSF class                    | class_uid | activity_id       | class     | severity |
 * |------------------------------|-------------------------------|-----------|-------------------|-----------|----------|
 * | request denied by policy     | Network Activity              | 4001      | 5 Refuse          | finding   | 3 Medium |
 * | write allowed (audit)        | Network Activity              | 4001      | 6 Traffic         | audit     | 1 Info   |
 * | malformed frame              | Detection Finding             | 2004      | 1 Create          | finding   | 3 Medium |
 * | scan (many distinct denials) | Detection Finding             | 2004      | 1 Create          | finding   | 4 High   |
 * | exception storm              | Detection Finding             | 2004      | 1 Create          | finding   | 3 Medium |
 * | connection limit reached     | Detection Finding             | 2004      | 1 Create          | finding   | 3 Medium |
 * | unknown client connected     | Network Activity              | 4001      | 1 Open            | finding   | 3 Medium |
 * | new known client (first seen)| Network Activity              | 4001      | 1 Open            | telemetry | 1 Info   |
 * | TLS / authentication failure | Authentication                | 3002      | 1 Logon (failure) | finding   | 3 Medium |
 * | open TLS connection closed:  | Authentication                | 3002      | 2 Logoff (failure)| finding   | 3 Medium |
 * |   certificate revoked or no  |                               |           |                   |           |          |
 * |   longer trusted on reload   |                               |           |                   |           |          |
 * | write window opened / closed | Device Config State Change    | 5019      | 99 Other          | audit     | 2 Low    |
 * | upstream down                | Network Activity              | 4001      | 4 Fail            | finding   | 3 Medium |
 * | upstream up again            | Network Activity              | 4001      | 1 Open            | audit     | 1 Info   |
 * | point reads NaN or infinity  | Detection Finding             | 2004      | 1 Create          | finding   | 3 Medium |
 * | aggregate of suppressed ones | same class as what it counts  |           |                   | same      | same     |
 *
 * Floods: per interval (default 10 s) each key (kind + identity + rule ...) records its first
 * `per_key` events; the rest are counted and recorded as one summary (`unmapped.suppressed`)
 * at the end of the interval. Keys per interval are bounded; past the bound they share one
 * overflow key. So a flood of N frames costs a bounded number of events per interval.
 * Connections closed on a TLS reload are recorded one by one (at most one per open connection,
 * which `max_connections` bounds).
 */
import { FloodGate } from "../../agent/core/flood";
import { ReportEvery } from "../../agent/core/report-every";
import type { EventClass, EventDraft, EventSink, SeverityId } from "../../agent/core/events";
import { FUNCTION_NAMES } from "./codec/function-codes";
import { windowClosedDraft, windowOpenedDraft, type WriteWindow } from "./policy/window-store";
import type { PollBlockInfo } from "./poller";
import type { TapPoint } from "./tap";

/** A point that keeps reading NaN or infinity is reported at once, then at most this often, with a count. */
const NOT_FINITE_EVERY_MS = 10 * 60_000;
/** Points whose not-finite reads are throttled one by one (the points config bounds them; past this, they share one). */
const NOT_FINITE_POINTS = 4096;

export interface EventLimits {
  interval_ms: number;
  per_key: number;
  max_keys: number;
  /** Distinct denied targets per identity per interval that make a scan finding. */
  scan_threshold: number;
  /** Exception responses per identity per interval that make a storm finding. */
  storm_threshold: number;
}
export const DEFAULT_EVENT_LIMITS: EventLimits = { interval_ms: 10_000, per_key: 3, max_keys: 256, scan_threshold: 20, storm_threshold: 200 };

/** The client certificate of a Modbus/TCP Security client (tells apart holders of one role). */
export interface ClientCertificate {
  subject: string;
  /** SHA-256, `AA:BB:...`. */
  fingerprint: string;
}

export interface RequestInfo {
  listener: string;
  identity: string;
  address: string;
  certificate?: ClientCertificate;
  role?: string;
  unit: number;
  fc: number;
  addresses?: string;
  values?: readonly number[];
}

export class ModbusEvents {
  private readonly flood: FloodGate;
  private targets = new Map<string, Set<string>>();
  private exceptions = new Map<string, number>();
  private flagged = new Set<string>();
  private readonly seen = new Set<string>();
  private readonly notFinite = new Map<string, ReportEvery>();
  private timer: NodeJS.Timeout | undefined;
  readonly limits: EventLimits;

  constructor(
    sink: EventSink,
    limits: Partial<EventLimits> = {},
    private readonly now: () => number = Date.now,
  ) {
    this.limits = { ...DEFAULT_EVENT_LIMITS, ...limits };
    this.flood = new FloodGate(sink, this.limits, now);
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.flush(), this.limits.interval_ms);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.flush();
  }

  private draft(cls: EventClass, severity: SeverityId, class_uid: number, activity_id: number, message: string, attrs: Record<string, unknown>): EventDraft {
    return { class: cls, severity, time: this.now(), ocsf: { class_uid, activity_id, message, ...attrs } };
  }

  private emit(key: string, d: EventDraft): void {
    this.flood.emit(key, d);
  }

  private safeRecord(d: EventDraft): void {
    this.flood.record(d);
  }

  /** Record summaries of what the interval suppressed and start a new interval. */
  flush(): void {
    this.targets = new Map();
    this.exceptions = new Map();
    this.flagged = new Set();
    this.flood.flush();
  }

  private static modbus(i: RequestInfo): Record<string, unknown> {
    return {
      listener: i.listener,
      unit_id: i.unit,
      function_code: i.fc,
      function: FUNCTION_NAMES[i.fc] ?? `fc${i.fc}`,
      ...(i.addresses ? { addresses: i.addresses } : {}),
      ...(i.values ? { values: i.values.slice(0, 16) } : {}),
      ...(i.role ? { role: i.role } : {}),
    };
  }

  denied(i: RequestInfo, rule: string, reason: string): void {
    const d = this.draft("finding", 3, 4001, 5, `Modbus request denied: ${reason}`, {
      action_id: 2,
      disposition_id: 2,
      src_endpoint: { ip: i.address },
      actor: actor(i.identity, i.certificate),
      unmapped: { modbus: { ...ModbusEvents.modbus(i), rule, reason } },
    });
    this.emit(`deny|${i.identity}|${rule}`, d);
    this.trackScan(i);
    this.trackException(i.identity, i.address);
  }

  malformed(m: { listener: string; identity: string; address: string; certificate?: ClientCertificate; reason: string; fc?: number }): void {
    const d = this.draft("finding", 3, 2004, 1, `Malformed Modbus frame: ${m.reason}`, {
      finding_info: { title: "Malformed Modbus frame", types: ["modbus.malformed"] },
      src_endpoint: { ip: m.address },
      actor: actor(m.identity, m.certificate),
      unmapped: { modbus: { listener: m.listener, reason: m.reason, ...(m.fc !== undefined ? { function_code: m.fc } : {}) } },
    });
    this.emit(`malformed|${m.address}`, d);
    this.trackException(m.identity, m.address);
  }

  /** Count an exception answered to a client (upstream exception or gateway error). */
  exception(identity: string, address: string): void {
    this.trackException(identity, address);
  }

  private trackScan(i: RequestInfo): void {
    let s = this.targets.get(i.identity);
    if (!s) {
      if (this.targets.size >= this.limits.max_keys) return;
      s = new Set();
      this.targets.set(i.identity, s);
    }
    if (s.size <= this.limits.scan_threshold) s.add(`${i.unit}/${i.fc}/${i.addresses ?? ""}`);
    const flag = `scan|${i.identity}`;
    if (s.size >= this.limits.scan_threshold && !this.flagged.has(flag)) {
      this.flagged.add(flag);
      this.safeRecord(
        this.draft("finding", 4, 2004, 1, `Modbus scan: ${s.size} distinct denied targets from ${i.identity}`, {
          finding_info: { title: "Modbus scan", types: ["modbus.scan"] },
          src_endpoint: { ip: i.address },
          actor: actor(i.identity, i.certificate),
          unmapped: { modbus: { listener: i.listener, distinct_targets: s.size, interval_ms: this.limits.interval_ms } },
        }),
      );
    }
  }

  private trackException(identity: string, address: string): void {
    if (!this.exceptions.has(identity) && this.exceptions.size >= this.limits.max_keys) return;
    const n = (this.exceptions.get(identity) ?? 0) + 1;
    this.exceptions.set(identity, n);
    const flag = `storm|${identity}`;
    if (n >= this.limits.storm_threshold && !this.flagged.has(flag)) {
      this.flagged.add(flag);
      this.safeRecord(
        this.draft("finding", 3, 2004, 1, `Modbus exception storm: ${n} exception responses to ${identity}`, {
          finding_info: { title: "Modbus exception storm", types: ["modbus.exception_storm"] },
          src_endpoint: { ip: address },
          actor: { user: { name: identity } },
          unmapped: { modbus: { exceptions: n, interval_ms: this.limits.interval_ms } },
        }),
      );
    }
  }

  /** A client connected; first sight of each identity is recorded (bounded memory). */
  client(c: { listener: string; identity: string; address: string; certificate?: ClientCertificate; known: boolean }): void {
    const k = `${c.listener}|${c.identity}`;
    if (c.known && this.seen.has(k)) return;
    if (this.seen.size < 4096) this.seen.add(k);
    const d = c.known
      ? this.draft("telemetry", 1, 4001, 1, `New Modbus client ${c.identity}`, { src_endpoint: { ip: c.address }, actor: actor(c.identity, c.certificate), unmapped: { modbus: { listener: c.listener } } })
      : this.draft("finding", 3, 4001, 1, `Unknown Modbus client ${c.identity}`, { src_endpoint: { ip: c.address }, actor: actor(c.identity, c.certificate), unmapped: { modbus: { listener: c.listener, known: false } } });
    this.emit(`client|${c.known}|${c.address}`, d);
  }

  /** A connection was refused because a connection limit was reached. */
  connectionLimit(c: { listener: string; identity: string; address: string; limit: "total" | "per_identity" | "unknown"; max: number }): void {
    const which = c.limit === "total" ? "listener" : c.limit === "unknown" ? "unknown-client" : "per-identity";
    const d = this.draft("finding", 3, 2004, 1, `Modbus connection refused: ${which} limit of ${c.max} reached`, {
      finding_info: { title: "Modbus connection limit", types: ["modbus.connection_limit"] },
      src_endpoint: { ip: c.address },
      actor: { user: { name: c.identity } },
      unmapped: { modbus: { listener: c.listener, limit: c.limit, max: c.max } },
    });
    this.emit(`limit|${c.address}`, d);
  }

  /**
   * A client refused at the TLS handshake: the verification error (`CERT_HAS_EXPIRED`,
   * `UNABLE_TO_VERIFY_LEAF_SIGNATURE`, ...) or handshake error, its address, and the
   * certificate it presented, if any.
   */
  authFailure(a: { listener: string; address: string; reason: string; certificate?: { subject: string; fingerprint: string; issuer: string } }): void {
    const by = a.certificate ? ` (certificate ${a.certificate.subject}, issuer ${a.certificate.issuer})` : "";
    const d = this.draft("finding", 3, 3002, 1, `Modbus/TCP Security authentication failed from ${a.address}: ${a.reason}${by}`, {
      status_id: 2,
      status_detail: a.reason,
      src_endpoint: { ip: a.address },
      auth_protocol: "TLS",
      ...(a.certificate ? { certificate: certificateObject(a.certificate) } : {}),
      unmapped: { modbus: { listener: a.listener } },
    });
    this.emit(`auth|${a.address}|${a.reason}`, d);
  }

  /**
   * An open Modbus/TCP Security connection was closed because newly loaded TLS material no
   * longer accepts its client certificate (revoked by the CRL, or not chaining to the CA).
   * Recorded once per connection, never aggregated away.
   */
  tlsConnectionClosed(c: {
    listener: string;
    identity: string;
    address: string;
    reason: "revoked" | "untrusted" | "expired";
    detail: string;
    certificate?: { serial: string; fingerprint: string; subject: string; issuer: string };
  }): void {
    const what = c.reason === "revoked" ? "client certificate revoked" : c.reason === "expired" ? "client certificate expired" : "client certificate no longer trusted";
    const when = c.reason === "expired" ? "" : " after a TLS reload";
    this.safeRecord(
      this.draft("finding", 3, 3002, 2, `Modbus/TCP Security connection of ${c.identity} closed${when}: ${what} (${c.detail})`, {
        activity_name: "Logoff",
        status_id: 2,
        status_detail: what,
        src_endpoint: { ip: c.address },
        actor: { user: { name: c.identity } },
        auth_protocol: "TLS",
        ...(c.certificate ? { certificate: certificateObject(c.certificate) } : {}),
        unmapped: { modbus: { listener: c.listener, tls_recheck: c.reason, reason: c.detail } },
      }),
    );
  }

  writeAllowed(i: RequestInfo & { device: string; remote_unit: number }, rule: string): void {
    const d = this.draft("audit", 1, 4001, 6, `Modbus write allowed: ${FUNCTION_NAMES[i.fc] ?? i.fc} ${i.addresses ?? ""} on ${i.device}`, {
      action_id: 1,
      disposition_id: 1,
      src_endpoint: { ip: i.address },
      actor: actor(i.identity, i.certificate),
      unmapped: { modbus: { ...ModbusEvents.modbus(i), device: i.device, remote_unit: i.remote_unit, rule } },
    });
    this.emit(`write|${i.identity}|${i.device}|${i.unit}|${i.fc}|${i.addresses ?? ""}`, d);
  }

  windowOpened(w: WriteWindow): void {
    this.safeRecord(windowOpenedDraft(w, this.now()));
  }

  windowClosed(w: WriteWindow, how: "expired" | "closed", by: string): void {
    this.safeRecord(windowClosedDraft(w, how, by, this.now()));
  }

  upstreamDown(name: string, target: string, reason: string): void {
    this.emit(`updown|${name}`, this.draft("finding", 3, 4001, 4, `Modbus upstream ${name} is down: ${reason}`, { dst_endpoint: { name: target }, unmapped: { modbus: { upstream: name, reason } } }));
  }

  /**
   * The device behind an upstream sent bytes that are not a Modbus answer (lost framing, or
   * not Modbus at all): the connection was reset and its requests in flight got 04 or 0B.
   */
  upstreamInvalid(name: string, target: string, reason: string): void {
    this.emit(`invalid|${name}`, this.draft("finding", 3, 2004, 1, `Modbus upstream ${name} sent bytes that are not a Modbus answer (${reason}); the connection was reset`, {
      finding_info: { title: "Invalid answer from a Modbus device", types: ["modbus.upstream_invalid"] },
      dst_endpoint: { name: target },
      unmapped: { modbus: { upstream: name, reason } },
    }));
  }

  /**
   * A point's words decode to NaN or an infinity. A float register holding one is how many
   * devices say the sensor failed or is out of range; a wrong type or word order can also give
   * one. The reading is not passed to detection, so this is the only trace of it.
   */
  pointNotFinite(p: TapPoint, value: number): void {
    let r = this.notFinite.get(p.id) ?? this.notFinite.get("");
    if (!r) {
      r = new ReportEvery(NOT_FINITE_EVERY_MS);
      this.notFinite.set(this.notFinite.size < NOT_FINITE_POINTS ? p.id : "", r);
    }
    const count = r.hit(this.now());
    if (!count) return;
    const where = `unit ${p.unit}, ${p.table} ${p.address}, ${p.type}${p.type.endsWith("32") ? ` ${p.word_order} word order` : ""}`;
    this.safeRecord(this.draft("finding", 3, 2004, 1, `Point ${p.id} reads ${value} from Modbus upstream ${p.device} (${where}): not a number detection can use, so it has no reading of it; a float register holds NaN or infinity when the sensor has failed or is out of range, or the point's type or word order is wrong${count > 1 ? ` (${count} such reads since the last report)` : ""}`, {
      finding_info: { title: "Modbus point reads no number", types: ["modbus.point_not_finite"] },
      unmapped: { modbus: { upstream: p.device, unit_id: p.unit, table: p.table, address: p.address, point: p.id, type: p.type, word_order: p.word_order, value: String(value), count } },
    }));
  }

  /** Polled points whose reads have failed for a while (see PointPoller): detection is blind on them. */
  pointsUnreadable(b: PollBlockInfo, forMs: number, reason: string): void {
    const what = pollBlockText(b);
    this.safeRecord(this.draft("finding", 3, 2004, 1, `${what.points} could not be read from Modbus upstream ${b.device} (${what.where}) for ${Math.round(forMs / 1000)} s: ${reason}; detection has no readings of them until they are read again`, {
      finding_info: { title: "Modbus points unreadable", uid: `modbus-unreadable-${b.device}-${b.unit}-${b.table}-${b.address}-${this.now()}` },
      unmapped: { modbus: { upstream: b.device, unit_id: b.unit, table: b.table, address: b.address, quantity: b.quantity, points: b.points, reason, failing_ms: forMs } },
    }));
  }

  pointsReadable(b: PollBlockInfo, afterMs: number): void {
    const what = pollBlockText(b);
    this.safeRecord(this.draft("finding", 1, 2004, 3, `${what.points} are read again from Modbus upstream ${b.device} (${what.where}) after ${Math.round(afterMs / 1000)} s`, {
      finding_info: { title: "Modbus points readable again" },
      unmapped: { modbus: { upstream: b.device, unit_id: b.unit, table: b.table, address: b.address, quantity: b.quantity, points: b.points, failing_ms: afterMs } },
    }));
  }

  upstreamUp(name: string, target: string): void {
    this.emit(`upup|${name}`, this.draft("audit", 1, 4001, 1, `Modbus upstream ${name} is up`, { dst_endpoint: { name: target }, unmapped: { modbus: { upstream: name } } }));
  }
}

/** OCSF `certificate` object of a client certificate. */
function certificateObject(c: { serial?: string; fingerprint: string; subject: string; issuer: string }): Record<string, unknown> {
  return {
    ...(c.serial ? { serial_number: c.serial } : {}),
    fingerprints: [{ algorithm: "SHA-256", algorithm_id: 3, value: c.fingerprint }],
    subject: c.subject,
    issuer: c.issuer,
  };
}

/** OCSF actor: the identity label, and the client certificate's fingerprint and subject when there is one. */
function actor(identity: string, cert?: ClientCertificate): { user: Record<string, string> } {
  return { user: { name: identity, ...(cert ? { uid: cert.fingerprint, uid_alt: cert.subject } : {}) } };
}

/** "Points A, B and 3 more" and "unit 1, holding 40-43" for a polled block. */
function pollBlockText(b: PollBlockInfo): { points: string; where: string } {
  const shown = b.points.slice(0, 8).join(", ");
  const more = b.points.length > 8 ? ` and ${b.points.length - 8} more` : "";
  return { points: `${b.points.length === 1 ? "Point" : "Points"} ${shown}${more}`, where: `unit ${b.unit}, ${b.table} ${b.address}-${b.address + b.quantity - 1}` };
}
