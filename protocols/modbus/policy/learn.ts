/**
 * `policy learn`: propose the narrowest policy that allows the traffic recorded (decision
 * records with a `request`). One role per client: plain-TCP clients by source address, TLS
 * clients by certificate role (else fingerprint). Reads and writes get merged address ranges
 * per table, written registers get min/max value bounds seen. A proposal to review, not to
 * trust: it allows exactly what was seen, including anything an attacker did while recording.
 */
import { recordIdentity, requestsOf, type DecisionRecord } from "./decision-record";
import { parseRequest } from "../codec/pdu";
import { accesses } from "./engine";
import type { PolicyInput } from "./schema";

type Intervals = Array<[number, number]>;

function merge(iv: Intervals): Intervals {
  const s = [...iv].sort((a, b) => a[0] - b[0]);
  const out: Intervals = [];
  for (const [a, b] of s) {
    const last = out[out.length - 1];
    if (last && a <= last[1] + 1) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}
const fmt = (iv: Intervals): string[] => merge(iv).map(([a, b]) => (a === b ? String(a) : `${a}-${b}`));

interface Acc {
  match: { address?: string; role?: string; fingerprint?: string };
  units: Set<number>;
  fcs: Set<number>;
  diag: Set<number>;
  read: Map<string, Intervals>;
  write: Map<string, Intervals>;
  values: Map<string, { table: "coil" | "holding"; address: number; min: number; max: number }>;
}

export function learnPolicy(records: readonly DecisionRecord[], opts: { include?: "allowed" | "all" } = {}): { policy: PolicyInput; used: number } {
  const byKey = new Map<string, Acc>();
  let used = 0;
  for (const r of records) {
    if (!r.request) continue;
    if (opts.include === "allowed" && !r.allow) continue;
    const p = parseRequest(Buffer.from(r.request, "hex"));
    if (!p.ok) continue;
    const id = recordIdentity(r);
    if (id.roleError) continue;
    const match = id.transport === "tcp" ? { address: id.address } : id.role ? { role: id.role } : id.fingerprint ? { fingerprint: id.fingerprint } : undefined;
    if (!match) continue;
    const key = JSON.stringify(match);
    let a = byKey.get(key);
    if (!a) {
      a = { match, units: new Set(), fcs: new Set(), diag: new Set(), read: new Map(), write: new Map(), values: new Map() };
      byKey.set(key, a);
    }
    used += requestsOf(r);
    a.units.add(r.unit);
    a.fcs.add(p.req.fc);
    if (p.req.fc === 8) a.diag.add(p.req.sub);
    for (const x of accesses(p.req)) {
      const table = x.table === "file" ? `file:${x.file}` : x.table;
      const m = x.mode === "read" ? a.read : a.write;
      const l = m.get(table) ?? [];
      l.push([x.address, x.address + x.quantity - 1]);
      m.set(table, merge(l));
      if (x.mode === "write" && x.values && (x.table === "holding" || x.table === "coil")) {
        x.values.forEach((v, i) => {
          const k = `${x.table}:${x.address + i}`;
          const cur = a!.values.get(k);
          if (cur) {
            cur.min = Math.min(cur.min, v);
            cur.max = Math.max(cur.max, v);
          } else if (a!.values.size < 256) a!.values.set(k, { table: x.table as "coil" | "holding", address: x.address + i, min: v, max: v });
        });
      }
    }
  }
  const policy: PolicyInput = { identities: [], roles: {} };
  let n = 0;
  for (const a of byKey.values()) {
    const name = a.match.role ? a.match.role : a.match.address ? `client-${a.match.address.replace(/[^0-9a-zA-Z]+/g, "-")}` : `cert-${++n}`;
    policy.identities!.push({ match: a.match, role: name });
    const tables = (m: Map<string, Intervals>) => {
      const out: Record<string, unknown> = {};
      const files: { file: number; records: string }[] = [];
      for (const [t, iv] of m) {
        if (t.startsWith("file:")) for (const r of fmt(iv)) files.push({ file: Number(t.slice(5)), records: r });
        else out[t] = fmt(iv);
      }
      if (files.length) out.file = files;
      return out;
    };
    policy.roles![name] = {
      units: fmt([...a.units].map((u) => [u, u])),
      functions: [...a.fcs].sort((x, y) => x - y),
      ...(a.diag.size ? { diagnostics: [...a.diag].sort((x, y) => x - y) } : {}),
      read: tables(a.read) as never,
      write: tables(a.write) as never,
      values: [...a.values.values()].sort((x, y) => (x.table === y.table ? x.address - y.address : x.table < y.table ? -1 : 1)).map((v) => (v.table === "coil" ? { table: v.table, address: v.address, allowed: [...new Set([v.min, v.max])] } : { table: v.table, address: v.address, min: v.min, max: v.max })),
    };
  }
  return { policy, used };
}
