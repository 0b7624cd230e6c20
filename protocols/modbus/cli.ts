/**
 * CLI commands of the Modbus proxy:
 *   modbus proxy   commissioning mode: one proxy in the foreground, one JSON line per decision
 *   modbus status  the running daemon's listeners, upstreams and windows (control socket)
 *   modbus reload-tls  load the Modbus/TCP Security files again now (control socket)
 *   policy test    allow/deny and the rule for a described request
 *   policy learn   propose a policy from recorded decisions (JSON lines of `modbus proxy`)
 *   policy replay  what a candidate policy would have blocked in recorded traffic
 *   window open|list|close   write windows on the running daemon (control socket)
 */
import { readFileSync, writeFileSync } from "node:fs";
import type { Command } from "commander";
import { stringify as stringifyYaml } from "yaml";
import { controlCall } from "../../agent/control/client";
import { DaemonError } from "../../agent/core/errors";
import { osUser } from "../../agent/core/os-user";
import type { EventDraft } from "../../agent/core/events";
import { decideFailClosed } from "../policy";
import { modbusConfigSchema, type UpstreamConfig } from "./config";
import { describeAccesses, parseRecords, type DecisionRecord } from "./decision-record";
import { PRESETS, type PresetName } from "./function-codes";
import type { PeerIdentity } from "./identity";
import { encodeRequest, parseRequest, type ModbusRequest } from "./pdu";
import { ModbusPolicy } from "./policy-engine";
import { learnPolicy } from "./policy-learn";
import { parsePolicy, readPolicyFile, zodMessage, type PolicyInput } from "./policy-schema";
import { replayPolicy } from "./policy-replay";
import { ModbusProxyService } from "./service";
import type { WriteWindow } from "./window-store";

export interface ModbusCliDeps {
  /**
   * The daemon's control socket path. Gets the command's options merged with the program's
   * (`--config <FILE>` is on every command that talks to the daemon, as `opts.config`).
   */
  resolveSocket: (opts: Record<string, unknown>) => Promise<string>;
  stdout?: (s: string) => void;
  stderr?: (s: string) => void;
  /** Stops `modbus proxy` (tests); SIGINT/SIGTERM otherwise. */
  signal?: AbortSignal;
  /** Sets the process exit status (`policy test` answers deny with 1); tests capture it. */
  setExitCode?: (code: number) => void;
  /** Called once `modbus proxy` listens (tests). */
  onListening?: (port: number) => void;
}

const group = (program: Command, name: string, description: string): Command => program.commands.find((c) => c.name() === name) ?? program.command(name).description(description);

/** A policy letting any client use a preset on every unit and address. */
export function presetPolicy(preset: PresetName): PolicyInput {
  const all = ["0-65535"];
  const writes = PRESETS[preset].some((f) => [5, 6, 15, 16, 21, 22, 23].includes(f));
  return {
    identities: [{ match: { address: ["0.0.0.0/0", "::/0"], transport: "any" }, role: preset }],
    roles: {
      [preset]: {
        units: ["0-255"],
        functions: [preset],
        read: { coil: all, discrete_input: all, input: all, holding: all, file: [{ file: 1, records: "0-9999" }] },
        ...(writes ? { write: { coil: all, holding: all } } : {}),
      },
    },
  };
}

/** `tcp://HOST:PORT`, `rtu-tcp://HOST:PORT`, `rtu:DEVICE?baud=N&parity=even`. */
export function parseUpstreamUrl(url: string): UpstreamConfig {
  const raw = (() => {
    let m = /^tcp:\/\/([^/]+:\d+)\/?$/.exec(url);
    if (m) return { name: "upstream", type: "tcp", target: m[1] };
    m = /^rtu-tcp:\/\/([^/?]+:\d+)\/?(?:\?(.*))?$/.exec(url);
    if (m) return { name: "upstream", type: "rtu_tcp", target: m[1], ...query(m[2]) };
    m = /^rtu:([^?]+)(?:\?(.*))?$/.exec(url);
    if (m) return { name: "upstream", type: "rtu", device: m[1], ...query(m[2]) };
    throw new DaemonError("USAGE", `--upstream ${url}: expected tcp://HOST:PORT, rtu-tcp://HOST:PORT or rtu:DEVICE?baud=N`);
  })();
  const r = modbusConfigSchema.shape.upstreams.unwrap().element.safeParse(raw);
  if (!r.success) throw new DaemonError("USAGE", `--upstream ${url}: ${zodMessage(r.error)}`);
  return r.data;
}

function query(q: string | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of new URLSearchParams(q ?? "")) {
    const key = k === "baud" ? "baud" : k.replace(/-/g, "_");
    out[key] = /^\d+$/.test(v) ? Number(v) : v;
  }
  return out;
}

function readRecordsFile(path: string): DecisionRecord[] {
  let text: string;
  try {
    text = path === "-" ? readFileSync(0, "utf8") : readFileSync(path, "utf8");
  } catch (e) {
    throw new DaemonError("INPUT_INVALID", `cannot read ${path} (${(e as Error).message})`, { cause: e });
  }
  return parseRecords(text).records;
}

const int = (name: string, max: number) => (v: string): number => {
  const n = Number(v);
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(v) || !Number.isInteger(n) || n < 0 || n > max) throw new DaemonError("USAGE", `${name} must be an integer in 0..${max}`);
  return n;
};

/** Build a request from `policy test` flags. */
export function describeRequest(o: { function?: number; pdu?: string; address?: number; quantity?: number; values?: string; sub?: number }): ModbusRequest {
  let pdu: Buffer;
  if (o.pdu) pdu = Buffer.from(o.pdu.replace(/\s+/g, ""), "hex");
  else {
    if (o.function === undefined) throw new DaemonError("USAGE", "give --function (with --address/--quantity/--values) or --pdu");
    const fc = o.function;
    const a = o.address ?? 0;
    const values = o.values ? o.values.split(",").map((v) => int("--values", 0xffff)(v.trim())) : [];
    const q = o.quantity ?? (values.length || 1);
    const req = ((): ModbusRequest => {
      switch (fc) {
        case 1:
        case 2:
        case 3:
        case 4:
          return { fc, address: a, quantity: q };
        case 5:
          return { fc, address: a, value: values[0] ? 1 : 0 };
        case 6:
          return { fc, address: a, value: values[0] ?? 0 };
        case 15:
          return { fc, address: a, values: values.map((v) => (v ? 1 : 0)) };
        case 16:
          return { fc, address: a, values };
        case 8:
          return { fc, sub: o.sub ?? 0, data: [0, 0] };
        case 7:
        case 11:
        case 12:
        case 17:
          return { fc };
        case 24:
          return { fc, address: a };
        case 43:
          return { fc, meiType: 14, readCode: 1, objectId: 0 };
        default:
          throw new DaemonError("USAGE", `describe function ${fc} with --pdu HEX`);
      }
    })();
    pdu = encodeRequest(req);
  }
  const p = parseRequest(pdu);
  if (!p.ok) throw new DaemonError("MODBUS_FRAME", `the described request is not valid Modbus: ${p.reason}`);
  return p.req;
}

export function registerModbusCommands(program: Command, deps: ModbusCliDeps): void {
  const out = deps.stdout ?? ((s: string) => void process.stdout.write(s));
  const err = deps.stderr ?? ((s: string) => void process.stderr.write(s));

  const modbus = group(program, "modbus", "Modbus security proxy");
  modbus
    .command("proxy")
    .description("Run one Modbus proxy in the foreground and print every decision as a JSON line (commissioning mode). Without --preset or --policy it denies everything.")
    .requiredOption("--listen <host:port>", "address to listen on, e.g. 0.0.0.0:502")
    .requiredOption("--upstream <url>", "tcp://HOST:PORT | rtu-tcp://HOST:PORT | rtu:DEVICE?baud=N&parity=even")
    .option("--preset <name>", "allow any client this preset on every unit and address: read-only | read-write")
    .option("--policy <file>", "policy file (YAML)")
    .option("--timeout-ms <n>", "upstream response timeout", (v) => int("--timeout-ms", 600_000)(v), 1000)
    .option("--events", "also print security events as JSON lines on stderr")
    .option("--tls-cert <file>", "serve Modbus/TCP Security: server certificate (with --tls-key and --tls-ca)")
    .option("--tls-key <file>", "server private key")
    .option("--tls-ca <file>", "CA that signs client certificates")
    .option("--upstream-connections <n>", "connections to a tcp:// upstream (upstreams[].connections; default 1)", (v) => int("--upstream-connections", 16)(v))
    .option("--max-in-flight <n>", "requests in flight per upstream connection (upstreams[].max_in_flight; default 1)", (v) => int("--max-in-flight", 256)(v))
    .option("--max-requests-per-s <n>", "requests per second per client identity (limits.max_requests_per_s; default 1000, 0: off)", (v) => int("--max-requests-per-s", 1_000_000)(v))
    .action(async (o: { listen: string; upstream: string; preset?: string; policy?: string; timeoutMs: number; events?: boolean; tlsCert?: string; tlsKey?: string; tlsCa?: string; upstreamConnections?: number; maxInFlight?: number; maxRequestsPerS?: number }) => {
      const tlsFlags = [o.tlsCert, o.tlsKey, o.tlsCa].filter(Boolean).length;
      if (tlsFlags && tlsFlags < 3) throw new DaemonError("USAGE", "--tls-cert, --tls-key and --tls-ca go together");
      if (o.preset && o.policy) throw new DaemonError("USAGE", "give --preset or --policy, not both");
      if (o.preset && !(o.preset === "read-only" || o.preset === "read-write")) throw new DaemonError("USAGE", "--preset must be read-only or read-write");
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
      // One write per event-loop turn, not one per decision: stdout to a pipe or terminal is a
      // synchronous system call each time, which cost the proxy most of its throughput.
      const decisions = lineBatcher(out);
      const service = new ModbusProxyService({ config: parsed.data, events, onDecision: (r) => decisions.push(JSON.stringify(r)) });
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

  const policy = group(program, "policy", "Modbus policy tools");
  policy
    .command("test")
    .description("Say whether a policy allows a described request, and by which rule (exit status 0 allow, 1 deny)")
    .requiredOption("--policy <file>", "policy file (YAML)")
    .option("--from <ip>", "source address of a plain Modbus TCP client")
    .option("--role <role>", "certificate role of a Modbus/TCP Security client")
    .option("--fingerprint <sha256>", "certificate SHA-256 fingerprint")
    .option("--subject <dn>", "certificate subject, e.g. CN=eng1,O=Water")
    .option("--unit <n>", "unit id", (v) => int("--unit", 255)(v), 1)
    .option("--function <fc>", "function code", (v) => int("--function", 255)(v))
    .option("--address <n>", "start address", (v) => int("--address", 0xffff)(v))
    .option("--quantity <n>", "quantity to read", (v) => int("--quantity", 2000)(v))
    .option("--values <list>", "comma-separated values to write")
    .option("--sub <n>", "FC 8 sub-function", (v) => int("--sub", 0xffff)(v))
    .option("--pdu <hex>", "the request PDU in hex instead of the flags above")
    .option("--window", "assume a write window is open")
    .option("--json", "print JSON")
    .action((o: { policy: string; from?: string; role?: string; fingerprint?: string; subject?: string; unit: number; function?: number; address?: number; quantity?: number; values?: string; sub?: number; pdu?: string; window?: boolean; json?: boolean }) => {
      const file = readPolicyFile(o.policy);
      const tls = o.role !== undefined || o.fingerprint !== undefined || o.subject !== undefined;
      if (!tls && !o.from) throw new DaemonError("USAGE", "say who asks: --from IP, or --role/--fingerprint/--subject");
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
      const records = readRecordsFile(o.input);
      const { policy: p, used } = learnPolicy(records, { include: o.includeDenied ? "all" : "allowed" });
      parsePolicy(p, "learned policy");
      const text = o.json ? JSON.stringify(p, null, 2) + "\n" : `# Proposed by \`gatewarden policy learn\` from ${used} recorded requests.\n# It allows exactly what was seen: review every line before use.\n` + stringifyYaml(p);
      if (o.out) {
        writeFileSync(o.out, text);
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
      const rep = replayPolicy(readPolicyFile(o.policy), readRecordsFile(o.input), { windows: o.window });
      if (o.json) return out(JSON.stringify(rep) + "\n");
      out(`${rep.replayed} requests replayed (${rep.skipped} malformed skipped): ${rep.allowed} allowed, ${rep.denied} denied; ${rep.newly_denied} allowed then would now be denied, ${rep.newly_allowed} denied then would now be allowed.\n`);
      for (const [rule, n] of Object.entries(rep.by_rule).sort((a, b) => b[1] - a[1])) out(`  ${n}\t${rule}\n`);
      for (const d of rep.denials.slice(0, 20)) out(`  deny ${d.identity} unit ${d.unit} ${d.function} ${d.addresses ?? ""} by ${d.rule}: ${d.reason}\n`);
    });

  const window = group(program, "window", "Time-boxed write windows on the running daemon");
  const sock = async (cmd: Command) => deps.resolveSocket(cmd.optsWithGlobals());
  const printWindows = (ws: WriteWindow[], json?: boolean) => {
    if (json) return out(JSON.stringify(ws) + "\n");
    if (!ws.length) return out("No write window is open.\n");
    for (const w of ws) out(`${w.id}  role ${w.role}  until ${new Date(w.expires_at).toISOString()}  by ${w.opened_by}: ${w.reason}\n`);
  };
  window
    .command("open")
    .description("Open a write window for a role; it closes by itself after --minutes")
    .requiredOption("--role <role>", "policy role whose writes the window allows")
    .requiredOption("--minutes <n>", "how long, in minutes", (v) => int("--minutes", 24 * 60)(v))
    .requiredOption("--reason <text>", "why (recorded in the audit event)")
    .option("--config <FILE>", "config file (finds the daemon's control socket)")
    .option("--json", "print JSON")
    .action(async (o: { role: string; minutes: number; reason: string; json?: boolean }, cmd: Command) => {
      const by = osUser();
      const w = (await controlCall(await sock(cmd), "window.open", { role: o.role, minutes: o.minutes, reason: o.reason, by })) as WriteWindow;
      if (o.json) out(JSON.stringify(w) + "\n");
      else out(`Opened write window ${w.id} for role ${w.role} until ${new Date(w.expires_at).toISOString()}.\n`);
    });
  window
    .command("list")
    .description("List open write windows")
    .option("--config <FILE>", "config file (finds the daemon's control socket)")
    .option("--json", "print JSON")
    .action(async (o: { json?: boolean }, cmd: Command) => printWindows((await controlCall(await sock(cmd), "window.list", {})) as WriteWindow[], o.json));
  window
    .command("close")
    .description("Close write windows now: one by --id, all of a --role, or --all")
    .option("--id <id>", "window id")
    .option("--role <role>", "every window of this role")
    .option("--all", "every open window")
    .option("--config <FILE>", "config file (finds the daemon's control socket)")
    .option("--json", "print JSON")
    .action(async (o: { id?: string; role?: string; all?: boolean; json?: boolean }, cmd: Command) => {
      if (!o.id && !o.role && !o.all) throw new DaemonError("USAGE", "give --id, --role or --all");
      const by = osUser();
      const closed = (await controlCall(await sock(cmd), "window.close", { ...(o.id ? { id: o.id } : {}), ...(o.role ? { role: o.role } : {}), ...(o.all ? { all: true } : {}), by })) as WriteWindow[];
      if (o.json) out(JSON.stringify(closed) + "\n");
      else out(closed.length ? `Closed ${closed.length} write window(s).\n` : "No matching write window was open.\n");
    });
}

/**
 * Lines written together once per event-loop turn (or at 256 KiB), in order. Bounded: past
 * the size the pending lines are written at once, so a slow reader slows the writer instead of
 * growing memory.
 */
export function lineBatcher(write: (s: string) => void, maxBytes = 256 * 1024): { push(line: string): void; flush(): void } {
  let pending: string[] = [];
  let bytes = 0;
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (!pending.length) return;
    const text = pending.join("\n") + "\n";
    pending = [];
    bytes = 0;
    write(text);
  };
  return {
    push(line) {
      pending.push(line);
      bytes += line.length + 1;
      if (bytes >= maxBytes) flush();
      else if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    },
    flush,
  };
}
