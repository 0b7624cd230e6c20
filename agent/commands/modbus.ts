/**
 * `gatewarden modbus`:
 *   modbus proxy       commissioning mode: one proxy in the foreground, its decisions as JSON lines
 *   modbus status      the running daemon's listeners, upstreams and windows (control socket)
 *   modbus reload-tls  load the Modbus/TCP Security files again now (control socket)
 */
import type { Command } from "commander";
import { controlCall } from "../core/control-client";
import { DaemonError } from "../core/errors";
import { hostPortProblem } from "../core/host-port";
import type { EventDraft } from "../core/events";
import { modbusConfigSchema } from "../../protocols/modbus/config";
import type { PresetName } from "../../protocols/modbus/codec/function-codes";
import { parsePolicy, readPolicyFile, zodMessage } from "../../protocols/modbus/policy/schema";
import { intArg, parseUpstreamUrl, presetPolicy } from "../../protocols/modbus/requests";
import { ModbusProxyService } from "../../protocols/modbus/service";
import { DecisionLines } from "../../protocols/modbus/policy/decision-lines";
import type { WriteWindow } from "../../protocols/modbus/policy/window-store";
import { group, type CliDeps } from "./_deps";

export function registerModbus(program: Command, deps: CliDeps): void {
  const out = deps.stdout ?? ((s: string) => void process.stdout.write(s));
  const err = deps.stderr ?? ((s: string) => void process.stderr.write(s));

  const modbus = group(program, "modbus", "Modbus security proxy");
  modbus
    .command("proxy")
    .description("Run one Modbus proxy in the foreground and print its decisions as JSON lines (commissioning mode): every denial, write and exception on its own line, identical allowed reads within 100 ms on one line with a count. Without --preset or --policy it denies everything.")
    .requiredOption("--listen <host:port>", "address to listen on, e.g. 0.0.0.0:502")
    .requiredOption("--upstream <url>", "tcp://HOST:PORT | rtu-tcp://HOST:PORT | rtu:DEVICE?baud=N&parity=even")
    .option("--preset <name>", "allow any client this preset on every unit and address: read-only | read-write")
    .option("--policy <file>", "policy file (YAML)")
    .option("--timeout-ms <n>", "upstream response timeout", (v) => intArg("--timeout-ms", 600_000)(v), 1000)
    .option("--events", "also print security events as JSON lines on stderr")
    .option("--tls-cert <file>", "serve Modbus/TCP Security: server certificate (with --tls-key and --tls-ca)")
    .option("--tls-key <file>", "server private key")
    .option("--tls-ca <file>", "CA that signs client certificates")
    .option("--upstream-connections <n>", "connections to a tcp:// upstream (upstreams[].connections; default 1)", (v) => intArg("--upstream-connections", 16)(v))
    .option("--max-in-flight <n>", "requests in flight per upstream connection (upstreams[].max_in_flight; default 1)", (v) => intArg("--max-in-flight", 256)(v))
    .option("--max-requests-per-s <n>", "requests per second per client identity (limits.max_requests_per_s; default 1000, 0: off)", (v) => intArg("--max-requests-per-s", 1_000_000)(v))
    .action(async (o: { listen: string; upstream: string; preset?: string; policy?: string; timeoutMs: number; events?: boolean; tlsCert?: string; tlsKey?: string; tlsCa?: string; upstreamConnections?: number; maxInFlight?: number; maxRequestsPerS?: number }) => {
      const tlsFlags = [o.tlsCert, o.tlsKey, o.tlsCa].filter(Boolean).length;
      if (tlsFlags && tlsFlags < 3) throw new DaemonError("USAGE", "--tls-cert, --tls-key and --tls-ca go together");
      if (o.preset && o.policy) throw new DaemonError("USAGE", "give --preset or --policy, not both");
      if (o.preset && !(o.preset === "read-only" || o.preset === "read-write")) throw new DaemonError("USAGE", "--preset must be read-only or read-write");
      const listenProblem = hostPortProblem(o.listen, { listen: true });
      if (listenProblem) throw new DaemonError("USAGE", `--listen ${o.listen}: ${listenProblem}`);
      const concurrency = { ...(o.upstreamConnections ? { connections: o.upstreamConnections } : {}), ...(o.maxInFlight ? { max_in_flight: o.maxInFlight } : {}) };
      const parsedUpstream = parseUpstreamUrl(o.upstream);
      if (Object.keys(concurrency).length && parsedUpstream.type !== "tcp") throw new DaemonError("USAGE", "--upstream-connections and --max-in-flight apply to a tcp:// upstream only (a serial bus has one request on the line)");
      const upstream = { ...parsedUpstream, ...concurrency, timeout_ms: o.timeoutMs };
      const policy = o.policy ? readPolicyFile(o.policy) : o.preset ? parsePolicy(presetPolicy(o.preset as PresetName)) : undefined;
      const parsed = modbusConfigSchema.safeParse({
        listeners: [tlsFlags ? { name: "cli", type: "tls", listen: o.listen, tls: { cert_file: o.tlsCert, key_file: o.tlsKey, ca_file: o.tlsCa } } : { name: "cli", type: "tcp", listen: o.listen }],
        upstreams: [upstream],
        routes: [{ unit: "0-255", upstream: upstream.name }],
        ...(policy ? { policy } : {}),
        ...(o.maxRequestsPerS !== undefined ? { limits: { max_requests_per_s: o.maxRequestsPerS } } : {}),
      });
      if (!parsed.success) throw new DaemonError("USAGE", zodMessage(parsed.error));
      const events = { record: (d: EventDraft) => (o.events ? err(JSON.stringify(d) + "\n") : undefined) };
      // One write per 100 ms or 64 KiB, repeats of an allowed read counted on one line: see
      // decision-lines.ts for what printing each decision at once cost.
      const decisions = new DecisionLines(out);
      const service = new ModbusProxyService({ config: parsed.data, events, decisions });
      const bound = await service.start();
      const b = bound[0]!;
      err(`Listening on ${b.address}:${b.port}, forwarding to ${o.upstream}${policy ? "" : " (no --preset or --policy: denying everything)"}.\n`);
      deps.onListening?.(b.port);
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        if (deps.signal) deps.signal.addEventListener("abort", stop, { once: true });
        else {
          process.once("SIGINT", stop);
          process.once("SIGTERM", stop);
        }
      });
      await service.stop();
      decisions.flush();
    });

  modbus
    .command("status")
    .description("Show the running daemon's Modbus listeners, upstreams and open write windows")
    .option("--config <FILE>", "config file (finds the daemon's control socket)")
    .option("--json", "print JSON")
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const st = (await controlCall(await deps.resolveSocket(cmd.optsWithGlobals()), "modbus.status", {})) as {
        listeners: Array<{ name: string; type: string; address?: string; port?: number; connections: number; requests: number; denied: number; malformed: number }>;
        upstreams: Array<{ name: string; type: string; target: string; state: string; in_flight: number; queued: number; dead_units?: number[] }>;
        windows: WriteWindow[];
      };
      if (o.json) return out(JSON.stringify(st) + "\n");
      for (const l of st.listeners) out(`listener ${l.name} (${l.type}) ${l.address ?? "?"}:${l.port ?? "?"}: ${l.connections} connections, ${l.requests} requests, ${l.denied} denied, ${l.malformed} malformed\n`);
      for (const u of st.upstreams) out(`upstream ${u.name} (${u.type}) ${u.target}: ${u.state}, ${u.in_flight} in flight, ${u.queued} queued${u.dead_units?.length ? `, backed-off units ${u.dead_units.join(",")}` : ""}\n`);
      out(st.windows.length ? `${st.windows.length} write window(s) open\n` : "No write window is open.\n");
    });

  modbus
    .command("reload-tls")
    .description("Load the Modbus/TCP Security listeners' certificate, key, CA and CRL files again now (changes are also picked up by themselves)")
    .option("--config <FILE>", "config file (finds the daemon's control socket)")
    .option("--json", "print JSON")
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const rs = (await controlCall(await deps.resolveSocket(cmd.optsWithGlobals()), "modbus.reload_tls", {})) as Array<{ listener: string; ok: boolean; reason?: string }>;
      if (o.json) out(JSON.stringify(rs) + "\n");
      else if (!rs.length) out("No Modbus/TCP Security listener is configured.\n");
      else for (const r of rs) out(r.ok ? `listener ${r.listener}: reloaded; new connections use the new material\n` : `listener ${r.listener}: not reloaded, current material kept: ${r.reason}\n`);
      if (rs.some((r) => !r.ok)) throw new DaemonError("TLS_SETUP", `TLS material of ${rs.filter((r) => !r.ok).map((r) => r.listener).join(", ")} not reloaded`);
    });
}
