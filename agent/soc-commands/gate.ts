import { DIAG_STATE_CHANGING } from "../../protocols/modbus/codec/function-codes";
import type { PeerIdentity } from "../../protocols/modbus/policy/identity";
import { isWrite, type ModbusPolicyRequest } from "../../protocols/modbus/policy/engine";
import type { Decision, PolicyDecisionPoint } from "../../protocols/policy";
import type { CommandStore } from "../../firmware-hooks/commands";

/**
 * What SOC commands change in the proxy, in front of its decision point: `isolate` denies
 * every request, `read-only` every write (and state-changing diagnostics), a blocked identity
 * (source address, certificate subject or fingerprint) is denied everything; a policy pushed
 * by the SOC replaces the configured one. Otherwise the policy decides, as before.
 */
export class CommandGate implements PolicyDecisionPoint<ModbusPolicyRequest> {
  pushed: PolicyDecisionPoint<ModbusPolicyRequest> | undefined;

  constructor(
    private readonly store: CommandStore,
    private readonly inner: PolicyDecisionPoint<ModbusPolicyRequest>,
  ) {}

  decide(r: ModbusPolicyRequest): Decision {
    const s = this.store.state;
    if (s.mode === "isolate") return { allow: false, rule: "soc:isolate", reason: "the SOC isolated this gateway's proxy" };
    if (s.blocked.length && blocked(s.blocked, r.identity)) return { allow: false, rule: "soc:block", reason: "the SOC blocked this identity" };
    if (s.mode === "read-only" && (isWrite(r.req) || (r.req.fc === 8 && DIAG_STATE_CHANGING.includes(r.req.sub)))) return { allow: false, rule: "soc:read-only", reason: "the SOC put the proxy in read-only mode" };
    return (this.pushed ?? this.inner).decide(r);
  }
}

function blocked(list: readonly string[], id: PeerIdentity): boolean {
  return list.some((b) => b === id.address || (id.subject !== undefined && b === id.subject) || (id.fingerprint !== undefined && b.toUpperCase() === id.fingerprint));
}
