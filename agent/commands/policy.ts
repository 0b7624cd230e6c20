/**
 * `gatewarden policy`:
 *   policy test    allow/deny and the rule for a described request
 *   policy learn   propose a policy from recorded decisions (JSON lines of `modbus proxy`)
 *   policy replay  what a candidate policy would have blocked in recorded traffic
 */
import { isIP } from "node:net";
import type { Command } from "commander";
import { stringify as stringifyYaml } from "yaml";
import { DaemonError, isDaemonError } from "../core/errors";
import { writeFileAtomic } from "../core/secret-files";
import { decideFailClosed } from "../../protocols/policy";
import { describeAccesses, readRecordsFile } from "../../protocols/modbus/policy/decision-record";
import type { PeerIdentity } from "../../protocols/modbus/policy/identity";
import { encodeRequest } from "../../protocols/modbus/codec/pdu";
import { ModbusPolicy } from "../../protocols/modbus/policy/engine";
import { learnPolicy } from "../../protocols/modbus/policy/learn";
import { parsePolicy, readPolicyFile } from "../../protocols/modbus/policy/schema";
import { replayPolicy } from "../../protocols/modbus/policy/replay";
import { describeRequest, intArg } from "../../protocols/modbus/requests";
import { group, type CliDeps } from "./_deps";

export function registerPolicy(program: Command, deps: CliDeps): void {
  const out = deps.stdout ?? ((s: string) => void process.stdout.write(s));
  const err = deps.stderr ?? ((s: string) => void process.stderr.write(s));

  const policy = group(program, "policy", "Modbus policy tools");
  policy
    .command("test")
    .description("Say whether a policy allows a described request, and by which rule (exit status 0 allow, 1 deny)")
    .requiredOption("--policy <file>", "policy file (YAML)")
    .option("--from <ip>", "source address of a plain Modbus TCP client")
    .option("--role <role>", "certificate role of a Modbus/TCP Security client")
    .option("--fingerprint <sha256>", "certificate SHA-256 fingerprint")
    .option("--subject <dn>", "certificate subject, e.g. CN=eng1,O=Water")
    .option("--unit <n>", "unit id", (v) => intArg("--unit", 255)(v), 1)
    .option("--function <fc>", "function code", (v) => intArg("--function", 255)(v))
    .option("--address <n>", "start address", (v) => intArg("--address", 0xffff)(v))
    .option("--quantity <n>", "quantity to read", (v) => intArg("--quantity", 2000)(v))
    .option("--values <list>", "comma-separated values to write")
    .option("--sub <n>", "FC 8 sub-function", (v) => intArg("--sub", 0xffff)(v))
    .option("--pdu <hex>", "the request PDU in hex instead of the flags above")
    .option("--window", "assume a write window is open")
    .option("--json", "print JSON")
    .action((o: { policy: string; from?: string; role?: string; fingerprint?: string; subject?: string; unit: number; function?: number; address?: number; quantity?: number; values?: string; sub?: number; pdu?: string; window?: boolean; json?: boolean }) => {
      const file = readPolicyFile(o.policy);
      const tls = o.role !== undefined || o.fingerprint !== undefined || o.subject !== undefined;
      if (!tls && !o.from) throw new DaemonError("USAGE", "say who asks: --from IP, or --role/--fingerprint/--subject");
      if (o.from !== undefined && isIP(o.from) === 0) throw new DaemonError("USAGE", `--from ${JSON.stringify(o.from)} is not an IPv4 or IPv6 address`);
      const identity: PeerIdentity = {
        transport: tls ? "tls" : "tcp",
        address: o.from ?? "0.0.0.0",
        ...(o.role ? { role: o.role } : {}),
        ...(o.fingerprint ? { fingerprint: o.fingerprint } : {}),
        ...(o.subject ? { subject: o.subject } : {}),
      };
      const req = describeRequest(o);
      const pol = new ModbusPolicy(file, { isOpen: () => o.window === true });
      const d = decideFailClosed(pol, { identity, unit: o.unit, req, now: Date.now() });
      const res = { allow: d.allow, rule: d.rule, ...(d.allow ? {} : { reason: d.reason }), unit: o.unit, function: req.fc, addresses: describeAccesses(req) ?? null, request: encodeRequest(req).toString("hex") };
      if (o.json) out(JSON.stringify(res) + "\n");
      else out(`${d.allow ? "allow" : "deny"} by ${d.rule}${d.allow ? "" : `: ${d.reason}`}\n`);
      // Scripts test the answer by the exit status: 0 allow, 1 deny.
      if (!d.allow) (deps.setExitCode ?? ((c: number) => void (process.exitCode = c)))(1);
    });

  policy
    .command("learn")
    .description("Propose a policy from recorded traffic (JSON lines as printed by `modbus proxy`); review it before use")
    .requiredOption("--input <file>", "recorded decisions, JSON lines ('-' for stdin)")
    .option("--include-denied", "also learn from requests that were denied when recorded (by default only allowed ones are: a proposal must not allow what the recording policy blocked)")
    .option("--out <file>", "write the proposal here instead of stdout")
    .option("--json", "print JSON instead of YAML")
    .action((o: { input: string; includeDenied?: boolean; out?: string; json?: boolean }) => {
      const input = readRecordsFile(o.input);
      err(input.warning);
      const { policy: p, used } = learnPolicy(input.records, { include: o.includeDenied ? "all" : "allowed" });
      parsePolicy(p, "learned policy");
      const skipped = input.skipped ? ` (${input.skipped} input line${input.skipped === 1 ? "" : "s"} skipped: not decision records)` : "";
      const text = o.json ? JSON.stringify(p, null, 2) + "\n" : `# Proposed by \`gatewarden policy learn\` from ${used} recorded requests${skipped}.\n# It allows exactly what was seen: review every line before use.\n` + stringifyYaml(p);
      if (o.out) {
        // Whole or not at all (a daemon may take it at reload); a path it cannot write names --out.
        try {
          writeFileAtomic(o.out, text, 0o644);
        } catch (e) {
          throw isDaemonError(e, "PATH_UNUSABLE") ? new DaemonError("PATH_UNUSABLE", `--out: ${e.message}`, { cause: e }) : e;
        }
        err(`Wrote ${o.out} (${Object.keys(p.roles ?? {}).length} roles from ${used} requests). A daemon whose modbus.policy_file this is takes it at \`gatewarden reload\`.\n`);
      } else out(text);
    });

  policy
    .command("replay")
    .description("Say what a candidate policy would have blocked in recorded traffic")
    .requiredOption("--policy <file>", "candidate policy file (YAML)")
    .requiredOption("--input <file>", "recorded decisions, JSON lines ('-' for stdin)")
    .option("--window <state>", "write windows during the replay: open | closed", "closed")
    .option("--json", "print JSON")
    .action((o: { policy: string; input: string; window: string; json?: boolean }) => {
      if (o.window !== "open" && o.window !== "closed") throw new DaemonError("USAGE", "--window must be open or closed");
      const input = readRecordsFile(o.input);
      err(input.warning);
      const rep = { ...replayPolicy(readPolicyFile(o.policy), input.records, { windows: o.window }), lines_skipped: input.skipped };
      if (o.json) return out(JSON.stringify(rep) + "\n");
      out(`${rep.replayed} requests replayed (${rep.skipped} malformed skipped): ${rep.allowed} allowed, ${rep.denied} denied; ${rep.newly_denied} allowed then would now be denied, ${rep.newly_allowed} denied then would now be allowed.\n`);
      for (const [rule, n] of Object.entries(rep.by_rule).sort((a, b) => b[1] - a[1])) out(`  ${n}\t${rule}\n`);
      for (const d of rep.denials.slice(0, 20)) out(`  deny ${d.identity} unit ${d.unit} ${d.function} ${d.addresses ?? ""} by ${d.rule}: ${d.reason}\n`);
    });
}
