/**
 * `policy replay`: what a candidate policy would have decided on recorded traffic. Time comes
 * from each record (rate limits replay deterministically); write windows are assumed open or
 * closed for the whole replay. A record with a `count` (repeats of an allowed read) is decided
 * once and counts as that many requests: a read's decision depends on no state or time.
 */
import { decideFailClosed } from "../../policy";
import { recordIdentity, requestsOf, type DecisionRecord } from "./decision-record";
import { parseRequest } from "../codec/pdu";
import { ModbusPolicy } from "./engine";
import type { PolicyFile } from "./schema";

/** Figures count requests (a record with `count` N is N of them). */
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
  const rep: ReplayReport = { total: 0, replayed: 0, skipped: 0, allowed: 0, denied: 0, newly_denied: 0, newly_allowed: 0, by_rule: {}, denials: [] };
  const max = opts.examples ?? 50;
  for (const r of records) {
    const n = requestsOf(r);
    rep.total += n;
    const p = r.request ? parseRequest(Buffer.from(r.request, "hex")) : undefined;
    if (!p || !p.ok) {
      rep.skipped += n;
      continue;
    }
    rep.replayed += n;
    const d = decideFailClosed(pol, { identity: recordIdentity(r), unit: r.unit, req: p.req, now: r.ts });
    if (d.allow) {
      rep.allowed += n;
      if (!r.allow) rep.newly_allowed += n;
      continue;
    }
    rep.denied += n;
    if (r.allow) rep.newly_denied += n;
    rep.by_rule[d.rule] = (rep.by_rule[d.rule] ?? 0) + n;
    if (rep.denials.length < max)
      rep.denials.push({ ts: r.ts, identity: r.identity, unit: r.unit, function: r.function, ...(r.addresses ? { addresses: r.addresses } : {}), rule: d.rule, reason: d.reason, recorded_allow: r.allow });
  }
  return rep;
}
