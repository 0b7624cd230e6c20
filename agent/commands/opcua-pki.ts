import type { Command } from "commander";
import { controlCall } from "../core/control-client";
import { osUser } from "../core/os-user";
import type { PkiEntry } from "../../protocols/opcua/pki";
import type { OpcuaStatus } from "../../protocols/opcua/service";
import type { OpcuaCliDeps } from "./opcua";

/** `gatewarden opcua pki list|show|trust|reject`: the trust lists of the running daemon. */
export function registerPkiCommands(opcua: Command, deps: OpcuaCliDeps): void {
  const out = deps.stdout ?? ((s: string) => void process.stdout.write(s));
  const pki = opcua.command("pki").description("OPC UA trust lists: upstream servers, front clients, front users");
  const call = async (cmd: Command, name: string, args: Record<string, unknown>) => controlCall(await deps.resolveSocket(cmd.optsWithGlobals()), name, args);
  const line = (e: PkiEntry) => `${e.list}\t${e.state}\t${e.thumbprint}\t${e.subject}\tvalid until ${e.not_after}\n`;
  pki
    .command("list")
    .description("List the certificates of every trust list, trusted and rejected, with SHA-1 and SHA-256 thumbprints")
    .option("--config <FILE>", "config file (finds the daemon's control socket)")
    .option("--json", "print JSON")
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const list = (await call(cmd, "opcua.pki.list", {})) as PkiEntry[];
      if (o.json) return out(JSON.stringify(list) + "\n");
      if (!list.length) return out("no certificates in the OPC UA trust lists\n");
      out("list\tstate\tSHA-1 thumbprint\tsubject\tvalidity\n");
      for (const e of list) out(line(e));
    });
  pki
    .command("show")
    .description("Show one certificate by SHA-1 or SHA-256 thumbprint")
    .argument("<thumbprint>", "SHA-1 or SHA-256 thumbprint (colons allowed)")
    .option("--config <FILE>", "config file (finds the daemon's control socket)")
    .option("--json", "print JSON")
    .action(async (thumbprint: string, o: { json?: boolean }, cmd: Command) => {
      const found = (await call(cmd, "opcua.pki.show", { thumbprint })) as PkiEntry[];
      if (o.json) return out(JSON.stringify(found) + "\n");
      for (const e of found) out(`${e.list} (${e.state}): ${e.subject}\n  issuer ${e.issuer}\n  valid ${e.not_before} to ${e.not_after}\n  SHA-1 ${e.thumbprint}\n  SHA-256 ${e.sha256}\n  file ${e.file}\n`);
    });
  pki
    .command("renew")
    .description("Make a new application certificate (urn:gatewarden:<device-id>, at most two years), recorded as a signed audit event")
    .option("--config <FILE>", "config file (finds the daemon's control socket)")
    .option("--json", "print JSON")
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const c = (await call(cmd, "opcua.pki.renew", { by: `cli:${osUser()}` })) as NonNullable<OpcuaStatus["own_certificate"]>;
      if (o.json) return out(JSON.stringify(c) + "\n");
      out(`application certificate ${c.file}\n  SHA-1 ${c.thumbprint}, ${c.subject}, ${c.application_uri}, valid until ${c.not_after}\n  servers that trusted the old one must trust this one\n`);
    });
  for (const verb of ["trust", "reject"] as const) {
    pki
      .command(verb)
      .description(verb === "trust" ? "Trust a certificate (a refused client, server or user certificate), recorded as a signed audit event" : "Move a trusted certificate to the rejected list, recorded as a signed audit event")
      .argument("<thumbprint>", "SHA-1 or SHA-256 thumbprint (colons allowed)")
      .option("--config <FILE>", "config file (finds the daemon's control socket)")
      .option("--json", "print JSON")
      .action(async (thumbprint: string, o: { json?: boolean }, cmd: Command) => {
        const e = (await call(cmd, `opcua.pki.${verb}`, { thumbprint, by: `cli:${osUser()}` })) as PkiEntry;
        if (o.json) return out(JSON.stringify(e) + "\n");
        out(`${e.list}: ${e.thumbprint} ${e.subject} is ${e.state}\n`);
      });
  }
}
