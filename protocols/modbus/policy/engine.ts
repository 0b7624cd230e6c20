/**
 * The Modbus decision point: identity -> role -> unit, function code, FC 8 sub-function,
 * address ranges per table (reads and writes separately; FC 23 is both), value bounds per
 * register or coil, write window, write rate. Every clause must allow; the first that does
 * not names the rule in the denial. Nothing matches: deny.
 */
import type { Decision, PolicyDecisionPoint } from "../../policy";
import { DIAG_READ_ONLY, PRESETS, WRITE_FUNCTION_CODES } from "../codec/function-codes";
import { AddressSet, identityKey, normaliseFingerprint, type PeerIdentity } from "./identity";
import type { ModbusRequest } from "../codec/pdu";
import type { PolicyFile, RoleConfig } from "./schema";
import { parseRange, RangeSet } from "./ranges";
import { RateLimiter } from "./rate-limiter";

export interface ModbusPolicyRequest {
  identity: PeerIdentity;
  /** Unit id as addressed by the client. */
  unit: number;
  req: ModbusRequest;
  /** Wall time in ms. */
  now: number;
}

/** What the decision point asks about write windows (see window-store.ts). */
export interface WindowOracle {
  isOpen(role: string, now: number): boolean;
}

export type Access = { mode: "read" | "write"; table: "coil" | "discrete_input" | "input" | "holding"; address: number; quantity: number; values?: readonly number[] } | { mode: "read" | "write"; table: "file"; file: number; address: number; quantity: number; values?: readonly number[] };

/** The data a request touches; empty for functions without addresses (7, 8, 11, 12, 17, 43). */
export function accesses(req: ModbusRequest): Access[] {
  switch (req.fc) {
    case 1:
      return [{ mode: "read", table: "coil", address: req.address, quantity: req.quantity }];
    case 2:
      return [{ mode: "read", table: "discrete_input", address: req.address, quantity: req.quantity }];
    case 3:
      return [{ mode: "read", table: "holding", address: req.address, quantity: req.quantity }];
    case 4:
      return [{ mode: "read", table: "input", address: req.address, quantity: req.quantity }];
    case 5:
      return [{ mode: "write", table: "coil", address: req.address, quantity: 1, values: [req.value] }];
    case 6:
      return [{ mode: "write", table: "holding", address: req.address, quantity: 1, values: [req.value] }];
    case 15:
      return [{ mode: "write", table: "coil", address: req.address, quantity: req.values.length, values: req.values }];
    case 16:
      return [{ mode: "write", table: "holding", address: req.address, quantity: req.values.length, values: req.values }];
    case 22:
      return [{ mode: "write", table: "holding", address: req.address, quantity: 1 }];
    case 23:
      return [
        { mode: "read", table: "holding", address: req.readAddress, quantity: req.readQuantity },
        { mode: "write", table: "holding", address: req.writeAddress, quantity: req.values.length, values: req.values },
      ];
    case 24:
      return [{ mode: "read", table: "holding", address: req.address, quantity: 1 }];
    case 20:
      return req.records.map((r) => ({ mode: "read" as const, table: "file" as const, file: r.file, address: r.record, quantity: r.length }));
    case 21:
      return req.records.map((r) => ({ mode: "write" as const, table: "file" as const, file: r.file, address: r.record, quantity: r.data.length, values: r.data }));
    default:
      return [];
  }
}

const READ_TABLE: Record<number, "coil" | "discrete_input" | "holding" | "input"> = { 1: "coil", 2: "discrete_input", 3: "holding", 4: "input" };

export function isWrite(req: ModbusRequest): boolean {
  return WRITE_FUNCTION_CODES.includes(req.fc) || (req.fc === 8 && req.sub !== 0 && !DIAG_READ_ONLY.includes(req.sub));
}

interface ValueBound {
  path: string;
  table: "coil" | "holding";
  from: number;
  to: number;
  signed: boolean;
  min?: number;
  max?: number;
  allowed?: Set<number>;
}

interface CompiledRole {
  name: string;
  units: RangeSet;
  functions: Set<number>;
  diagnostics: Set<number>;
  read: Map<string, RangeSet>;
  write: Map<string, RangeSet>;
  values: ValueBound[];
  rate?: { max: number; interval_ms: number };
  windowRequired: boolean;
  /** `roles.<name>`, and the allow decisions naming the clause that allowed (made once, frozen). */
  base: string;
  allow: { functions: Decision } & Record<"read" | "write", Record<Access["table"], Decision>>;
}

const TABLES: readonly Access["table"][] = ["coil", "discrete_input", "input", "holding", "file"];
function allowDecisions(base: string): CompiledRole["allow"] {
  const ok = (rule: string): Decision => Object.freeze({ allow: true as const, rule });
  const by = (mode: "read" | "write") => Object.fromEntries(TABLES.map((t) => [t, ok(`${base}.${mode}.${t}`)])) as Record<Access["table"], Decision>;
  return { functions: ok(`${base}.functions`), read: by("read"), write: by("write") };
}

function compileRole(name: string, r: RoleConfig): CompiledRole {
  const functions = new Set<number>();
  for (const f of r.functions) for (const c of typeof f === "number" ? [f] : PRESETS[f]) functions.add(c);
  const tables = (t: Record<string, unknown>): Map<string, RangeSet> => {
    const m = new Map<string, RangeSet>();
    for (const [k, v] of Object.entries(t)) {
      if (!Array.isArray(v)) continue;
      if (k === "file") {
        const byFile = new Map<number, [number, number][]>();
        for (const e of v as { file: number; records: number | string }[]) {
          const l = byFile.get(e.file) ?? [];
          l.push(parseRange(e.records));
          byFile.set(e.file, l);
        }
        for (const [f, l] of byFile) m.set(`file:${f}`, new RangeSet(l));
      } else m.set(k, new RangeSet((v as (number | string)[]).map(parseRange)));
    }
    return m;
  };
  return {
    name,
    units: new RangeSet(r.units.map(parseRange)),
    functions,
    diagnostics: new Set(r.diagnostics ?? DIAG_READ_ONLY),
    read: tables(r.read),
    write: tables(r.write),
    values: r.values.map((v, i) => {
      const [from, to] = parseRange(v.address);
      return {
        path: `roles.${name}.values[${i}]`,
        table: v.table,
        from,
        to,
        signed: v.type === "int16",
        ...(v.min !== undefined ? { min: v.min } : {}),
        ...(v.max !== undefined ? { max: v.max } : {}),
        ...(v.allowed ? { allowed: new Set(v.allowed) } : {}),
      };
    }),
    ...(r.write_rate ? { rate: r.write_rate } : {}),
    windowRequired: r.write_window === "required",
    base: `roles.${name}`,
    allow: allowDecisions(`roles.${name}`),
  };
}

interface IdentityRule {
  path: string;
  role: string;
  name?: string;
  addresses?: AddressSet;
  certRole?: string;
  fingerprint?: string;
  subject?: string;
  transport?: "tcp" | "tls" | "any";
}

/**
 * Whose writes a rate counts: the role and the client as the transport identifies it, the
 * certificate (fingerprint) on Modbus/TCP Security, the source address on plain TCP. Every
 * connection of that client shares the count; a new connection does not bring a new budget.
 */
export function rateKey(role: string, id: PeerIdentity): string {
  return `${role}|${identityKey(id)}`;
}

const deny = (rule: string, reason: string): Decision => ({ allow: false, rule, reason });

export class ModbusPolicy implements PolicyDecisionPoint<ModbusPolicyRequest> {
  private readonly roles = new Map<string, CompiledRole>();
  private readonly identities: IdentityRule[];
  private readonly mapCertRoles: boolean;
  /** Write-rate buckets per identity, shared by all its connections (bounded, see rate-limiter.ts). */
  private readonly rates: RateLimiter;
  /** Identities are fixed per connection: resolve each once (address matching is not free),
   * with the key of its write-rate bucket, so a write allocates nothing for it. */
  private readonly resolved = new WeakMap<PeerIdentity, { role: string; rule: string; rateKey: string } | null>();

  constructor(
    readonly file: PolicyFile,
    private readonly windows?: WindowOracle,
    opts: { maxRateIdentities?: number } = {},
  ) {
    this.rates = new RateLimiter(opts.maxRateIdentities);
    for (const [name, r] of Object.entries(file.roles)) this.roles.set(name, compileRole(name, r));
    this.mapCertRoles = file.certificate_roles === "map_by_name";
    this.identities = file.identities.map((id, i) => ({
      path: `identities[${i}]`,
      role: id.role,
      ...(id.name ? { name: id.name } : {}),
      ...(id.match.address ? { addresses: new AddressSet(Array.isArray(id.match.address) ? id.match.address : [id.match.address]) } : {}),
      ...(id.match.role ? { certRole: id.match.role } : {}),
      ...(id.match.fingerprint ? { fingerprint: normaliseFingerprint(id.match.fingerprint) } : {}),
      ...(id.match.subject ? { subject: id.match.subject } : {}),
      ...(id.match.transport ? { transport: id.match.transport } : {}),
    }));
  }

  /** The role an identity acts in, or undefined (unknown client). */
  resolveRole(id: PeerIdentity): { role: string; rule: string } | undefined {
    if (id.roleError) return undefined;
    for (const r of this.identities) {
      // Address-only entries identify plain-TCP clients; entries naming certificate fields
      // identify TLS clients (an address there narrows further).
      const transport = r.transport ?? (r.certRole !== undefined || r.fingerprint !== undefined || r.subject !== undefined ? "tls" : "tcp");
      if (transport !== "any" && transport !== id.transport) continue;
      if (r.addresses && !r.addresses.has(id.address)) continue;
      if (r.certRole !== undefined && r.certRole !== id.role) continue;
      if (r.fingerprint !== undefined && (!id.fingerprint || normaliseFingerprint(id.fingerprint) !== r.fingerprint)) continue;
      if (r.subject !== undefined && r.subject !== id.subject) continue;
      return { role: r.role, rule: r.path };
    }
    if (this.mapCertRoles && id.transport === "tls" && id.role && this.roles.has(id.role)) return { role: id.role, rule: "certificate_roles" };
    return undefined;
  }

  roleNames(): string[] {
    return [...this.roles.keys()];
  }

  /** Whether a role has any function that writes (FC 5, 6, 15, 16, 21-23, or a state-changing FC 8). */
  canWrite(role: string): boolean {
    const r = this.roles.get(role);
    if (!r) return false;
    return WRITE_FUNCTION_CODES.some((fc) => r.functions.has(fc)) || (r.functions.has(8) && [...r.diagnostics].some((d) => d !== 0 && !DIAG_READ_ONLY.includes(d)));
  }

  decide(q: ModbusPolicyRequest): Decision {
    // Modbus/TCP Security: no role, several roles or a malformed role -> every request gets 01.
    if (q.identity.roleError) return deny("tls.role", q.identity.roleError);
    let resolved = this.resolved.get(q.identity);
    if (resolved === undefined) {
      const r = this.resolveRole(q.identity);
      resolved = r ? { ...r, rateKey: rateKey(r.role, q.identity) } : null;
      this.resolved.set(q.identity, resolved);
    }
    if (!resolved) return deny("identities", "no identity rule matches this client");
    const role = this.roles.get(resolved.role);
    if (!role) return deny("identities", `role ${resolved.role} is not defined`);
    const base = role.base;
    const req = q.req;
    if (!role.units.covers(q.unit, q.unit)) return deny(`${base}.units`, `unit ${q.unit} is not allowed`);
    if (!role.functions.has(req.fc)) return deny(`${base}.functions`, `function ${req.fc} is not allowed`);
    if (req.fc === 8 && !role.diagnostics.has(req.sub)) return deny(`${base}.diagnostics`, `diagnostics sub-function ${req.sub} is not allowed`);
    // The plain reads (FC 1-4, nearly all SCADA traffic): one range, checked without building
    // the access list; the same rule and message as the general path below.
    if (req.fc <= 4 && "quantity" in req) {
      const table = READ_TABLE[req.fc]!;
      const set = role.read.get(table);
      const last = req.address + req.quantity - 1;
      if (!set || !set.covers(req.address, last)) return deny(`${base}.read.${table}`, `read of ${table} ${req.address}-${last} is not allowed`);
      return role.allow.read[table];
    }
    const acc = accesses(req);
    let allow = role.allow.functions;
    for (const a of acc) {
      const key = a.table === "file" ? `file:${a.file}` : a.table;
      const set = (a.mode === "read" ? role.read : role.write).get(key);
      const last = a.address + a.quantity - 1;
      if (!set || !set.covers(a.address, last)) {
        const where = a.table === "file" ? `file ${a.file} records ${a.address}-${last}` : `${a.table} ${a.address}-${last}`;
        return deny(`${base}.${a.mode}.${a.table}`, `${a.mode} of ${where} is not allowed`);
      }
      allow = role.allow[a.mode][a.table];
    }
    const write = isWrite(req);
    if (write) {
      const v = this.checkValues(role, req);
      if (v) return v;
      if (role.windowRequired && !(this.windows?.isOpen(role.name, q.now) ?? false)) return deny(`${base}.write_window`, `no write window is open for role ${role.name}`);
      if (role.rate) {
        const r = this.rates.take(resolved.rateKey, role.rate.max, role.rate.interval_ms, q.now);
        if (r === "rate") return deny(`${base}.write_rate`, `more than ${role.rate.max} writes in ${role.rate.interval_ms} ms`);
        if (r === "full") return deny(`${base}.write_rate`, `write rates are being counted for ${this.rates.maxKeys} identities; none is idle`);
      }
    }
    return allow;
  }

  private checkValues(role: CompiledRole, req: ModbusRequest): Decision | undefined {
    if (role.values.length === 0) return undefined;
    const check = (table: "coil" | "holding", address: number, raw: number): Decision | undefined => {
      for (const b of role.values) {
        if (b.table !== table || address < b.from || address > b.to) continue;
        const v = b.signed && raw >= 0x8000 ? raw - 0x10000 : raw;
        if ((b.min !== undefined && v < b.min) || (b.max !== undefined && v > b.max) || (b.allowed && !b.allowed.has(v)))
          return { allow: false, rule: b.path, reason: `value ${v} for ${table} ${address} is outside its bounds` };
      }
      return undefined;
    };
    if (req.fc === 22) {
      // (current AND and_mask) OR (or_mask AND NOT and_mask): only checkable when and_mask is 0.
      const bounded = role.values.some((b) => b.table === "holding" && req.address >= b.from && req.address <= b.to);
      if (!bounded) return undefined;
      if (req.andMask !== 0) return { allow: false, rule: `roles.${role.name}.values`, reason: `mask write to value-bounded holding ${req.address} cannot be checked` };
      return check("holding", req.address, req.orMask);
    }
    for (const a of accesses(req)) {
      if (a.mode !== "write" || !a.values || a.table === "file") continue;
      for (let i = 0; i < a.values.length; i++) {
        const d = check(a.table as "coil" | "holding", a.address + i, a.values[i]!);
        if (d) return d;
      }
    }
    return undefined;
  }
}
