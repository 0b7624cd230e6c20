import type { Command as Cli } from "commander";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { report } from "./_output";
import { DaemonError } from "../core/errors";
import { brokerAuth, URL_CREDENTIALS } from "../mqtt-connection";
import { DEVICE_ID } from "../keys/identity";
import { loadEd25519PrivateKey } from "../core/keys";
import { commandTopic } from "../soc-commands/service";
import { newCommand, signCommand, type Action } from "../../firmware-hooks/commands";
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
        const dir = resolve(opts.dir);
        const key = loadEd25519PrivateKey(join(dir, "command.key"), "SOC command key");
        let value = arg;
        if (v.arg === "policy") {
          try {
            value = readFileSync(arg!, "utf8");
          } catch (e) {
            throw new DaemonError("INPUT_INVALID", `policy file ${arg} cannot be read (${(e as NodeJS.ErrnoException).code ?? "error"})`);
          }
        }
        // A counter above every earlier one for this device, persisted before the command leaves.
        const file = join(dir, "command-counters.json");
        const counters = existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as Record<string, number>) : {};
        const counter = Math.max((counters[device] ?? 0) + 1, Date.now());
        writeDurable(file, JSON.stringify({ ...counters, [device]: counter }) + "\n");
        const cmd = newCommand({ device, counter, action: v.action, args: v.arg ? { [v.arg]: value } : {}, validityMs: validity * 1000 });
        const msg = signCommand(cmd, key);
        if (opts.print) {
          process.stdout.write(msg + "\n");
          return;
        }
        if (!opts.broker) throw new DaemonError("USAGE", "--broker is required (or --print)");
        if (URL_CREDENTIALS.test(opts.broker)) throw new DaemonError("USAGE", "--broker must not hold a user name or password");
        const mqtt = (await import("mqtt")).default;
        const client = await mqtt.connectAsync(opts.broker, { protocolVersion: opts.mqttVersion === "4" ? 4 : 5, clean: true, reconnectPeriod: 0, connectTimeout: 10_000, ...brokerAuth({ ca: opts.ca, cert: opts.cert, key: opts.key }, "broker") });
        const topic = commandTopic(opts.topicPrefix, device);
        try {
          await client.publishAsync(topic, msg, { qos: 1, retain: false });
        } finally {
          await client.endAsync();
        }
        report(opts.json, { device, topic, action: cmd.action, counter: cmd.counter, expires: new Date(cmd.expires).toISOString() }, () => `sent ${cmd.action} to ${device} on ${topic} (counter ${cmd.counter}, expires ${new Date(cmd.expires).toISOString()})`);
      },
    );
}
