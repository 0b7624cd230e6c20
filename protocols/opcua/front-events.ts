/**
 * The front's events through the spine, flood-bounded like the Modbus proxy's.
 *
 * | what                                   | OCSF class                 | class_uid | activity_id       | class   | severity |
 * |----------------------------------------|----------------------------|-----------|-------------------|---------|----------|
 * | request denied (browse, read, ..., rate)| Network Activity           | 4001      | 5 Refuse          | finding | 3 Medium |
 * | write or call allowed                  | Network Activity           | 4001      | 6 Traffic         | audit   | 1 Info   |
 * | login refused (password, certificate,  | Authentication             | 3002      | 1 Logon (failure) | finding | 3 Medium |
 * |   anonymous, untrusted client cert)    |                            |           |                   |         |          |
 */
import { FloodGate } from "../../agent/core/flood";
import type { EventClass, EventDraft, EventSink, SeverityId } from "../../agent/core/events";
import type { CertificateSeen } from "./events";

export interface FrontActor {
  user: string;
  role?: string;
  address?: string;
}

export interface FrontOp {
  service: "browse" | "read" | "subscribe" | "write" | "call";
  /** The node asked for; absent for a refusal of a whole request (a rate). */
  node_id?: string;
  /** The OPC UA service of a refused request (Read, Browse, CreateMonitoredItems, ...). */
  request?: string;
  path?: string;
  value?: unknown;
}

export class FrontEvents {
  private readonly flood: FloodGate;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    sink: EventSink,
    private readonly limits: { interval_ms: number; per_key: number },
    private readonly now: () => number = Date.now,
  ) {
    this.flood = new FloodGate(sink, { ...limits, max_keys: 256 }, now);
  }

  start(): void {
    this.timer ??= setInterval(() => this.flood.flush(), this.limits.interval_ms);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.flood.flush();
  }

  denied(a: FrontActor, op: FrontOp, rule: string, reason: string, status: string): void {
    this.flood.emit(
      `deny|${a.user}|${op.service}|${rule}`,
      this.draft("finding", 3, 4001, 5, `OPC UA request denied: ${reason}`, {
        action_id: 2,
        disposition_id: 2,
        ...actor(a),
        unmapped: { opcua: { front: true, ...op, value: clip(op.value), rule, reason, status, ...(a.role ? { role: a.role } : {}) } },
      }),
    );
  }

  allowed(a: FrontActor, op: FrontOp, rule: string, status: string): void {
    const what = op.service === "write" ? `wrote ${JSON.stringify(clip(op.value))} to` : "called";
    this.flood.emit(
      `ok|${a.user}|${op.service}|${op.node_id}`,
      this.draft("audit", 1, 4001, 6, `OPC UA ${op.service} by ${a.user}: ${what} ${op.path ?? op.node_id ?? ""} (${status})`, {
        action_id: 1,
        disposition_id: 1,
        ...actor(a),
        unmapped: { opcua: { front: true, ...op, value: clip(op.value), rule, status, ...(a.role ? { role: a.role } : {}) } },
      }),
    );
  }

  /** `cause` (a limit's name, say) keeps refusals of different causes from one address apart in the flood bounds. */
  loginFailed(a: FrontActor, method: "password" | "certificate" | "anonymous" | "client_certificate" | "channel" | "token", reason: string, cert?: CertificateSeen, cause = ""): void {
    this.flood.emit(
      `login|${a.address ?? ""}|${a.user}|${method}|${cause}`,
      this.draft("finding", 3, 3002, 1, `OPC UA login refused for ${a.user}: ${reason}`, {
        status: "Failure",
        status_detail: reason,
        auth_protocol: "OPC UA",
        ...actor(a),
        unmapped: { opcua: { front: true, method, reason, ...(cert ? { certificate: cert } : {}) } },
      }),
    );
  }

  private draft(cls: EventClass, severity: SeverityId, class_uid: number, activity_id: number, message: string, attrs: Record<string, unknown>): EventDraft {
    return { class: cls, severity, time: this.now(), ocsf: { class_uid, activity_id, message, ...attrs } };
  }
}

function actor(a: FrontActor): Record<string, unknown> {
  return { actor: { user: { name: a.user } }, ...(a.address ? { src_endpoint: { ip: a.address } } : {}) };
}

/** Values in events are short and JSON-safe. */
function clip(v: unknown): unknown {
  if (v === undefined || v === null || typeof v === "number" || typeof v === "boolean") return v ?? null;
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "string") return v.slice(0, 64);
  if (Array.isArray(v)) return v.slice(0, 8).map(clip);
  return String(v).slice(0, 64);
}
