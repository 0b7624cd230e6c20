/**
 * `gatewarden opcua status`: the running daemon's OPC UA servers (state, security, last error,
 * readings), the client certificate a server's administrator has to trust, and the server
 * certificates it refused. `gatewarden opcua trust THUMBPRINT`: trust one of those.
 */
import { osUser } from "../../agent/os-user";
import type { Command } from "commander";
import { controlCall } from "../../agent/control/client";
import type { CertificateSeen } from "./events";
import type { OpcuaStatus } from "./service";

export interface OpcuaCliDeps {
  resolveSocket: (opts: Record<string, unknown>) => Promise<string>;
  stdout?: (s: string) => void;
}

export function registerOpcuaCommands(program: Command, deps: OpcuaCliDeps): void {
  const out = deps.stdout ?? ((s: string) => void process.stdout.write(s));
  const opcua = program.command("opcua").description("OPC UA client: servers read for points");
  opcua
    .command("status")
    .description("Show the running daemon's OPC UA servers and the client certificate they must trust")
    .option("--config <FILE>", "config file (finds the daemon's control socket)")
    .option("--json", "print JSON")
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const st = (await controlCall(await deps.resolveSocket(cmd.optsWithGlobals()), "opcua.status", {})) as OpcuaStatus;
      if (o.json) return out(JSON.stringify(st) + "\n");
      const c = st.own_certificate;
      out(c ? `client certificate ${c.file}\n  SHA-1 thumbprint ${c.thumbprint}, ${c.subject}, valid until ${c.not_after}\n` : "client certificate: not made yet\n");
      for (const s of st.servers) {
        out(`server ${s.name} ${s.endpoint} (${s.security}): ${s.state}${s.last_error ? ` (${s.last_error})` : ""}; ${s.points} points, ${s.readings} readings, ${s.bad} bad\n`);
      }
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
}
