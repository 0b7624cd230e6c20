/**
 * `gatewarden opcua status`: the running daemon's OPC UA servers (state, security, last error,
 * readings), the client certificate a server's administrator has to trust, and the server
 * certificates it refused. `gatewarden opcua trust THUMBPRINT`: trust one of those.
 */
import { osUser } from "../core/os-user";
import type { Command } from "commander";
import { controlCall } from "../core/control-client";
import type { CertificateSeen } from "../../protocols/opcua/events";
import type { OpcuaStatus } from "../../protocols/opcua/service";
import { registerPkiCommands } from "./opcua-pki";
import { registerUsersCommands, type UsersCliDeps } from "./opcua-users";
import { formatOpcuaProcess, type OpcuaProcessStatus } from "../../protocols/opcua/process-protocol";

export interface OpcuaCliDeps {
  resolveSocket: (opts: Record<string, unknown>) => Promise<string>;
  /** The `opcua.front` section (for `opcua users`); fails when there is none. */
  front?: UsersCliDeps["front"];
  stdout?: (s: string) => void;
}

export function registerOpcuaCommands(program: Command, deps: OpcuaCliDeps): void {
  const out = deps.stdout ?? ((s: string) => void process.stdout.write(s));
  const opcua = program.command("opcua").description("OPC UA: servers read for points, the secure front, trust lists");
  opcua
    .command("status")
    .description("Show the running daemon's OPC UA servers and the client certificate they must trust")
    .option("--config <FILE>", "config file (finds the daemon's control socket)")
    .option("--json", "print JSON")
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const st = (await controlCall(await deps.resolveSocket(cmd.optsWithGlobals()), "opcua.status", {})) as OpcuaStatus & { process?: OpcuaProcessStatus };
      if (o.json) return out(JSON.stringify(st) + "\n");
      if (st.process) out(`opcua       ${formatOpcuaProcess(st.process)}\n`);
      const c = st.own_certificate;
      out(c ? `client certificate ${c.file}\n  SHA-1 thumbprint ${c.thumbprint}, ${c.subject}, valid until ${c.not_after}\n` : "client certificate: not made yet\n");
      if (c?.problem) out(`  this certificate is not the gateway's own kind (${c.problem}): gatewarden opcua pki renew\n`);
      for (const s of st.servers) {
        out(`server ${s.name} ${s.endpoint} (${s.security}): ${s.state}${s.last_error ? ` (${s.last_error})` : ""}; ${s.points} points${s.points ? ` by ${s.points_by}` : ""}${s.subscription_error ? ` (no subscription: ${s.subscription_error})` : ""}, ${s.readings} readings, ${s.bad} bad\n`);
      }
      const f = st.front;
      if (f) out(`front ${f.endpoint}: ${f.state}; ${f.mirrored_nodes} nodes${f.truncated ? " (truncated at max_nodes)" : ""}, ${f.channels} channels, ${f.sessions} sessions, ${f.connections.refused} connections refused before login; forwarded ${f.upstream.reads} reads, ${f.upstream.writes} writes, ${f.upstream.calls} calls, ${f.upstream.monitored} monitored nodes\n`);
      for (const r of st.rejected_certificates) {
        out(`refused server certificate ${r.thumbprint} ${r.subject}\n  check it against the device, then: gatewarden opcua trust ${r.thumbprint}\n`);
      }
    });

  opcua
    .command("trust")
    .description("Trust a server certificate the daemon refused, by its SHA-1 thumbprint (recorded as an audit event)")
    .argument("<thumbprint>", "SHA-1 thumbprint as `opcua status` shows it (colons allowed)")
    .option("--config <FILE>", "config file (finds the daemon's control socket)")
    .option("--json", "print JSON")
    .action(async (thumbprint: string, o: { json?: boolean }, cmd: Command) => {
      const c = (await controlCall(await deps.resolveSocket(cmd.optsWithGlobals()), "opcua.trust", { thumbprint, by: `cli:${osUser()}` })) as CertificateSeen;
      if (o.json) return out(JSON.stringify(c) + "\n");
      out(`trusted ${c.thumbprint} ${c.subject}; servers that were refused try again now\n`);
    });
  registerPkiCommands(opcua, deps);
  if (deps.front) registerUsersCommands(opcua, { front: deps.front, stdout: deps.stdout });
}
