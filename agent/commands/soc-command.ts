import type { Command as Cli } from "commander";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { report } from "./_output";
import type { MqttClient } from "mqtt";
import { DaemonError, describeError, pathUnusable } from "../core/errors";
import { brokerOptionsAuth, redactUrl } from "../mqtt-connection";
import { upstreamSchema } from "../config/schema";
import { parsePolicyText } from "../../protocols/modbus/policy/schema";
import { mqttVersion } from "./soc";
import { DEVICE_ID } from "../keys/identity";
import { loadEd25519PrivateKey } from "../core/keys";
import { commandTopic } from "../soc-commands/service";
import { MODES, newCommand, signCommand, type Action } from "../../firmware-hooks/commands";
import { addKeyInit } from "./release";
import { writeDurable } from "../../firmware-hooks/state";

/** CLI verbs -> command actions and the one argument each takes. */
const VERBS: Record<string, { action: Action; arg?: string }> = {
  "proxy-mode": { action: "proxy_mode", arg: "mode" },
  block: { action: "block_identity", arg: "identity" },
  unblock: { action: "unblock_identity", arg: "identity" },
  "close-windows": { action: "close_windows" },
  "push-policy": { action: "push_policy", arg: "policy" },
  posture: { action: "request_posture" },
  integrity: { action: "request_integrity" },
};

interface Opts {
  dir: string;
  broker?: string;
  ca?: string;
  cert?: string;
  key?: string;
  topicPrefix: string;
  validityS: string;
  mqttVersion: string;
  print?: boolean;
  json?: boolean;
}

export function registerSocCommandCommands(program: Cli): void {
  const soc = program.commands.find((c) => c.name() === "soc");
  if (!soc) throw new Error("the soc command group must be registered first");
  addKeyInit(soc.command("command-key").description("The SOC command signing key"), "command", "SOC command public key for the gateways' commands.soc_command_key");
  soc
    .command("command <DEVICE> <VERB> [ARG]")
    .description(`Send a signed command to one gateway: ${Object.entries(VERBS).map(([v, d]) => (d.arg ? `${v} ${d.arg === "policy" ? "FILE" : d.arg.toUpperCase()}` : v)).join(" | ")}`)
    .requiredOption("--dir <DIR>", "SOC state directory (command.key, command-counters.json)")
    .option("--broker <URL>", "mqtt://HOST:PORT or mqtts://HOST:PORT (required unless --print)")
    .option("--ca <FILE>", "CA for the broker's certificate")
    .option("--cert <FILE>", "client certificate (mTLS)")
    .option("--key <FILE>", "client key (0600)")
    .option("--topic-prefix <PREFIX>", "the gateways' upstream.topic_prefix", "gatewarden/v1")
    .option("--validity-s <S>", "seconds until the command expires", "300")
    .option("--mqtt-version <V>", "5, or 4 for MQTT 3.1.1 brokers", "5")
    .option("--print", "print the signed message instead of publishing it")
    .option("--json", "print the result as JSON")
    .action(
      async (device: string, verb: string, arg: string | undefined, opts: Opts) => {
        const v = VERBS[verb];
        if (!v) throw new DaemonError("USAGE", `unknown command ${verb} (${Object.keys(VERBS).join(", ")})`);
        if (!DEVICE_ID.test(device)) throw new DaemonError("USAGE", `${device} is not a device id`);
        if (v.arg && !arg) throw new DaemonError("USAGE", `${verb} needs ${v.arg === "policy" ? "a policy FILE" : `a ${v.arg}`}`);
        const validity = Number(opts.validityS);
        if (!Number.isInteger(validity) || validity < 1 || validity > 86_400) throw new DaemonError("USAGE", "--validity-s must be 1..86400");
        const prefixOk = upstreamSchema.shape.topic_prefix.safeParse(opts.topicPrefix);
        if (!prefixOk.success) throw new DaemonError("USAGE", `--topic-prefix ${JSON.stringify(opts.topicPrefix)} must be a topic prefix with no wildcards or spaces (the gateways' upstream.topic_prefix)`);
        if (v.action === "proxy_mode" && !(MODES as readonly string[]).includes(arg!)) throw new DaemonError("USAGE", `proxy-mode takes one of ${MODES.join(", ")}, not ${JSON.stringify(arg)}`);
        // Everything the broker connection needs is checked before a counter is used up.
        const protocolVersion = opts.print ? 5 : mqttVersion(opts.mqttVersion);
        let auth: ReturnType<typeof brokerOptionsAuth> | undefined;
        if (!opts.print) {
          if (!opts.broker) throw new DaemonError("USAGE", "--broker is required (or --print)");
          auth = brokerOptionsAuth({ broker: opts.broker, ca: opts.ca, cert: opts.cert, key: opts.key });
        }
        const dir = resolve(opts.dir);
        const key = loadEd25519PrivateKey(join(dir, "command.key"), "SOC command key");
        let value = arg;
        if (v.arg === "policy") {
          try {
            value = readFileSync(arg!, "utf8");
          } catch (e) {
            throw new DaemonError("INPUT_INVALID", `policy file ${arg} cannot be read (${(e as NodeJS.ErrnoException).code ?? "error"})`);
          }
          // The gateway would refuse it after verifying the signature: refuse it here, naming the file and key.
          parsePolicyText(value, arg);
        }
        // A counter above every earlier one for this device, persisted before the command leaves.
        const file = join(dir, "command-counters.json");
        const counters = readCounters(file);
        const counter = Math.max((counters[device] ?? 0) + 1, Date.now());
        try {
          writeDurable(file, JSON.stringify({ ...counters, [device]: counter }) + "\n");
        } catch (e) {
          throw e instanceof DaemonError ? e : pathUnusable(file, "command counter file", e as NodeJS.ErrnoException);
        }
        const cmd = newCommand({ device, counter, action: v.action, args: v.arg ? { [v.arg]: value } : {}, validityMs: validity * 1000 });
        const msg = signCommand(cmd, key);
        if (opts.print) {
          process.stdout.write(msg + "\n");
          return;
        }
        const mqtt = (await import("mqtt")).default;
        let client: MqttClient;
        try {
          client = await mqtt.connectAsync(opts.broker!, { protocolVersion, clean: true, reconnectPeriod: 0, connectTimeout: 10_000, ...auth });
        } catch (e) {
          throw brokerFailure(opts.broker!, "connecting", e);
        }
        const topic = commandTopic(opts.topicPrefix, device);
        try {
          await client.publishAsync(topic, msg, { qos: 1, retain: false });
        } catch (e) {
          throw brokerFailure(opts.broker!, `publishing on ${topic}`, e);
        } finally {
          await client.endAsync();
        }
        report(opts.json, { device, topic, action: cmd.action, counter: cmd.counter, expires: new Date(cmd.expires).toISOString() }, () => `sent ${cmd.action} to ${device} on ${topic} (counter ${cmd.counter}, expires ${new Date(cmd.expires).toISOString()})`);
      },
    );
}

/**
 * The counters sent so far, per device: {} when the file does not exist yet; INPUT_INVALID or
 * PATH_UNUSABLE naming it otherwise (it is never rewritten from what it could not read).
 */
function readCounters(file: string): Record<string, number> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw pathUnusable(file, "command counter file", e as NodeJS.ErrnoException);
  }
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    throw new DaemonError("INPUT_INVALID", `command counter file ${file} is not JSON (expected {"DEVICE": counter, ...}); restore it, or remove it only if every gateway's counter is older than now`);
  }
  if (typeof o !== "object" || o === null || Array.isArray(o)) throw new DaemonError("INPUT_INVALID", `command counter file ${file} is not a JSON object (expected {"DEVICE": counter, ...})`);
  for (const [device, n] of Object.entries(o)) {
    if (!Number.isSafeInteger(n) || (n as number) < 0) throw new DaemonError("INPUT_INVALID", `command counter file ${file}: the counter of ${JSON.stringify(device)} is ${JSON.stringify(n)}, not a whole number`);
  }
  return o as Record<string, number>;
}

const BROKER_WHY: Record<string, string> = {
  ECONNREFUSED: "nothing listens there",
  ENOTFOUND: "the host name does not resolve",
  ECONNRESET: "the connection was reset (a TLS listener given mqtt://, or a firewall?)",
};

/** BROKER_UNREACHABLE (connecting) or UPSTREAM_REJECTED (publishing) naming --broker and why the command did not reach it. */
function brokerFailure(broker: string, what: string, e: unknown): DaemonError {
  const code = (e as NodeJS.ErrnoException).code;
  const tls = /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY/.test(String(code ?? ""));
  const why = tls ? `the TLS handshake failed: ${(e as Error).message} (check --ca, --cert and --key)` : code && BROKER_WHY[code] ? `${BROKER_WHY[code]} (${code})` : describeError(e);
  return new DaemonError(what === "connecting" ? "BROKER_UNREACHABLE" : "UPSTREAM_REJECTED", `--broker ${redactUrl(broker)}: ${why}, while ${what}; the command was not sent`, { cause: e });
}
