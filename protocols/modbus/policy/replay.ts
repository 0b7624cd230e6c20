/**
 * `policy replay`: what a candidate policy would have decided on recorded traffic. Time comes
 * from each record (rate limits replay deterministically); write windows are assumed open or
 * closed for the whole replay.
 */
import { decideFailClosed } from "../../policy";
import { recordIdentity, type DecisionRecord } from "./decision-record";
import { parseRequest } from "../codec/pdu";
import { ModbusPolicy } from "./engine";
import type { PolicyFile } from "./schema";

export interface ReplayReport {
  total: number;
  replayed: number;
  /** Records without a re-decidable request (malformed frames). */
  skipped: number;
  allowed: number;
  denied: number;
  /** Requests recorded as allowed that the candidate would deny. */
  newly_denied: number;
  /** Requests recorded as denied that the candidate would allow. */
  newly_allowed: number;
  by_rule: Record<string, number>;
  /** The first denials (at most `examples`), for review. */
  denials: Array<{ ts: number; identity: string; unit: number; function: string; addresses?: string; rule: string; reason: string; recorded_allow: boolean }>;
}

export function replayPolicy(file: PolicyFile, records: readonly DecisionRecord[], opts: { windows?: "open" | "closed"; examples?: number } = {}): ReplayReport {
  const open = opts.windows === "open";
  const pol = new ModbusPolicy(file, { isOpen: () => open });
  const rep: ReplayReport = { total: records.length, replayed: 0, skipped: 0, allowed: 0, denied: 0, newly_denied: 0, newly_allowed: 0, by_rule: {}, denials: [] };
  const max = opts.examples ?? 50;
  for (const r of records) {
    const p = r.request ? parseRequest(Buffer.from(r.request, "hex")) : undefined;
    if (!p || !p.ok) {
      rep.skipped++;
      continue;
    }
    rep.replayed++;
    const d = decideFailClosed(pol, { identity: recordIdentity(r), unit: r.unit, req: p.req, now: r.ts });
    if (d.allow) {
      rep.allowed++;
      if (!r.allow) rep.newly_allowed++;
      continue;
    }
    rep.denied++;
    if (r.allow) rep.newly_denied++;
    rep.by_rule[d.rule] = (rep.by_rule[d.rule] ?? 0) + 1;
    if (rep.denials.length < max)
      rep.denials.push({ ts: r.ts, identity: r.identity, unit: r.unit, function: r.function, ...(r.addresses ? { addresses: r.addresses } : {}), rule: d.rule, reason: d.reason, recorded_allow: r.allow });
  }
  return rep;
}
