/**
 * The front's decision point: identity -> role -> what the role may do on a node. Deny by
 * default. A role's node rules select nodes by node id, by browse path (the node and all
 * below it) or by namespace URI, and allow browse, read, subscribe and write (with bounds);
 * methods are callable only when on the role's allow-list. The folders above an allowed node
 * may be browsed, so a client can find it. The front's standard nodes (namespace 0: Server
 * object, types) may be browsed, read and subscribed to by every logged-in user, never
 * written or called.
 *
 * Compiled once per mirror (`bind`): each decision is a map lookup and, for a write, a bounds
 * check, the role's write window and write rate. `request` counts a user's service requests against the
 * role's request rate.
 */
import type { Decision, PolicyDecisionPoint } from "../policy";
import { RateLimiter } from "../modbus/policy/rate-limiter";
import type { FrontAction, FrontRole } from "./front-config";

/** A mirrored node as the policy sees it. */
export interface FrontNode {
  /** Node id on the upstream, `ns=N;...` (N = upstream namespace index) or `i=...`. */
  id: string;
  /** The same with the namespace URI: `nsu=URI;...`. */
  uriId: string;
  /** Browse names from the Objects folder, joined by "/". */
  path: string;
  namespace: string;
  kind: "object" | "variable" | "method";
}

export interface FrontRequest {
  user: string;
  role: string | undefined;
  /** undefined: a node that is not mirrored (the front's own standard nodes). */
  node: FrontNode | undefined;
  action: FrontAction;
  /** The value of a write. */
  value?: unknown;
  now: number;
}

export type FrontDecision = Decision & { status?: "BadUserAccessDenied" | "BadOutOfRange" | "BadTooManyOperations" };

const BIT: Record<FrontAction, number> = { browse: 1, read: 2, subscribe: 4, write: 8, call: 16 };

interface Grant {
  mask: number;
  rule: string;
  /** Bounds of the rules that allow writing here; a value is accepted when one of them takes it. */
  bounds: { min?: number; max?: number; rule: string }[];
}

const deny = (rule: string, reason: string, status: FrontDecision["status"] = "BadUserAccessDenied"): FrontDecision => ({ allow: false, rule, reason, status });

/** A write window as the front sees it: the daemon's core opens and closes them (`gatewarden window`). */
export interface WindowSpan {
  role: string;
  opened_at: number;
  expires_at: number;
}

/** The open write windows the core last sent; none until it has (fail closed). */
export class OpenWindows {
  private spans: WindowSpan[] = [];

  set(spans: readonly WindowSpan[]): void {
    this.spans = spans.slice(0, 256).map((w) => ({ role: w.role, opened_at: w.opened_at, expires_at: w.expires_at }));
  }

  isOpen(role: string, now: number): boolean {
    return this.spans.some((w) => w.role === role && now >= w.opened_at && now < w.expires_at);
  }
}

export class FrontPolicy implements PolicyDecisionPoint<FrontRequest> {
  private grants = new Map<string, Map<string, Grant>>();
  private readonly rate = new RateLimiter();

  constructor(
    private readonly roles: Record<string, FrontRole>,
    private readonly windows: Pick<OpenWindows, "isOpen"> = new OpenWindows(),
  ) {}

  /** Compiles the roles against the mirrored nodes. */
  bind(nodes: readonly FrontNode[]): void {
    const grants = new Map<string, Map<string, Grant>>();
    for (const [name, role] of Object.entries(this.roles)) {
      const g = new Map<string, Grant>();
      const get = (n: FrontNode): Grant => {
        let x = g.get(n.id);
        if (!x) g.set(n.id, (x = { mask: 0, rule: "", bounds: [] }));
        return x;
      };
      const ancestors = new Set<string>();
      role.nodes.forEach((r, i) => {
        const rule = `roles.${name}.nodes[${i}]`;
        let mask = 0;
        for (const a of r.allow) mask |= BIT[a];
        for (const n of nodes) {
          const hit = r.node_id !== undefined ? r.node_id === n.id || r.node_id === n.uriId : r.browse_path !== undefined ? n.path === r.browse_path || n.path.startsWith(`${r.browse_path}/`) : n.namespace === r.namespace;
          if (!hit) continue;
          const x = get(n);
          x.mask |= mask;
          x.rule ||= rule;
          if (r.allow.includes("write")) x.bounds.push({ ...(r.min !== undefined ? { min: r.min } : {}), ...(r.max !== undefined ? { max: r.max } : {}), rule });
          if (mask) ancestors.add(n.path);
        }
      });
      role.methods.forEach((m, i) => {
        for (const n of nodes) {
          if (n.kind !== "method" || (m !== n.id && m !== n.uriId && m !== n.path)) continue;
          const x = get(n);
          x.mask |= BIT.call | BIT.browse;
          x.rule ||= `roles.${name}.methods[${i}]`;
          ancestors.add(n.path);
        }
      });
      // The folders above what a role may use are browsable, so clients can navigate to it.
      const above = new Set<string>();
      for (const p of ancestors) for (let i = p.indexOf("/"); i > 0; i = p.indexOf("/", i + 1)) above.add(p.slice(0, i));
      for (const n of nodes) if (above.has(n.path)) get(n).mask |= BIT.browse;
      grants.set(name, g);
    }
    this.grants = grants;
  }

  /** What a role may do on a node, without bounds, rates or a record: for node-opcua's own gates and attributes. */
  may(role: string, node: FrontNode | undefined, action: FrontAction): boolean {
    if (!node) return action === "browse" || action === "read" || action === "subscribe";
    const x = this.grants.get(role)?.get(node.id);
    return x !== undefined && (x.mask & BIT[action]) !== 0;
  }

  decide(req: FrontRequest): FrontDecision {
    if (req.role === undefined) return deny("default-deny", `user ${req.user} has no role`);
    const g = this.grants.get(req.role);
    if (!g) return deny("default-deny", `role ${req.role} is not defined`);
    const n = req.node;
    if (!n) {
      if (req.action === "browse" || req.action === "read" || req.action === "subscribe") return { allow: true, rule: "standard-nodes" };
      return deny("standard-nodes", `the front's own nodes cannot be ${req.action === "call" ? "called" : "written"}`);
    }
    const x = g.get(n.id);
    if (!x || (x.mask & BIT[req.action]) === 0) {
      const what = req.action === "call" ? `method ${n.path} is not on the allow-list of role ${req.role}` : `role ${req.role} may not ${req.action} ${n.path}`;
      return deny("default-deny", what);
    }
    if (req.action === "write") {
      const v = req.value;
      const fits = x.bounds.find((b) => b.min === undefined && b.max === undefined) ?? (typeof v === "number" ? x.bounds.find((b) => (b.min === undefined || v >= b.min) && (b.max === undefined || v <= b.max)) : undefined);
      if (!fits) {
        const b = x.bounds[0]!;
        return deny(b.rule, `value ${describe(v)} for ${n.path} is outside its bounds ${b.min ?? "-inf"}..${b.max ?? "+inf"}`, "BadOutOfRange");
      }
    }
    if (req.action === "write" || req.action === "call") {
      if (this.roles[req.role]?.write_window === "required" && !this.windows.isOpen(req.role, req.now)) return deny(`roles.${req.role}.write_window`, `no write window is open for role ${req.role}`);
      const limit = this.roles[req.role]?.write_rate;
      if (limit) {
        const r = this.rate.take(`${req.role}|${req.user}`, limit.max, limit.interval_ms, req.now);
        if (r !== "ok") return deny(`roles.${req.role}.write_rate`, `user ${req.user} is over the write rate of role ${req.role} (${limit.max} per ${limit.interval_ms} ms)`, "BadTooManyOperations");
      }
    }
    return { allow: true, rule: x.rule };
  }

  /** One service request of a logged-in user against the role's `request_rate` (none: allowed). */
  request(user: string, role: string | undefined, service: string, now: number): FrontDecision {
    const limit = role === undefined ? undefined : this.roles[role]?.request_rate;
    if (!limit) return { allow: true, rule: "request_rate" };
    const r = this.rate.take(`request|${role}|${user}`, limit.max, limit.interval_ms, now);
    if (r === "ok") return { allow: true, rule: `roles.${role}.request_rate` };
    return deny(`roles.${role}.request_rate`, `user ${user} is over the request rate of role ${role} (${limit.max} per ${limit.interval_ms} ms); ${service} refused`, "BadTooManyOperations");
  }
}

function describe(v: unknown): string {
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  if (typeof v === "string") return JSON.stringify(v.slice(0, 64));
  return Array.isArray(v) ? "an array" : typeof v;
}
