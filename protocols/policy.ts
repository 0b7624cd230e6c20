/**
 * The one enforcement interface every protocol proxy uses (aedes-style: structural checks
 * first, then this decision point, then side effects). Deny by default; fail closed.
 */
import { describeError } from "../agent/core/errors";

export type Decision = { allow: true; rule: string } | { allow: false; rule: string; reason: string };

export interface PolicyDecisionPoint<R> {
  /**
   * Pure and synchronous; may update rate counters. Throwing means deny (see
   * `decideFailClosed`). Keeps no reference to `req`: callers reuse the object.
   */
  decide(req: R): Decision;
}

/** Ask `pdp`; any exception becomes a denial under rule `policy-error`. */
export function decideFailClosed<R>(pdp: PolicyDecisionPoint<R>, req: R): Decision {
  try {
    const d = pdp.decide(req);
    if (d && typeof d === "object" && d.allow === true && typeof d.rule === "string") return d;
    if (d && typeof d === "object" && d.allow === false) return d;
    return { allow: false, rule: "policy-error", reason: "decision point returned no decision" };
  } catch (e) {
    return { allow: false, rule: "policy-error", reason: describeError(e) };
  }
}

/** The decision point used when nothing is configured. */
export const DENY_ALL: PolicyDecisionPoint<unknown> = {
  decide: () => ({ allow: false, rule: "default-deny", reason: "no policy is configured" }),
};
