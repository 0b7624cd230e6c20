import type { MqttClient } from "mqtt";
import type { Logger } from "pino";
import type { LoadedConfig } from "../config/load";
import { describeError } from "../core/errors";
import { OcsfClass } from "../core/events";
import type { EventSink } from "../core/events";
import { brokerAuth, redactUrl } from "../mqtt-connection";
import { parsePolicyText, type PolicyFile } from "../../protocols/modbus/policy/schema";
import type { ModbusPolicyRequest } from "../../protocols/modbus/policy/engine";
import type { PolicyDecisionPoint } from "../../protocols/policy";
import { CommandGate } from "./gate";
import { admit, CommandRefused, CommandStore, loadCommandKey, MODES, type Command, type CommandsConfig, type ProxyMode } from "../../firmware-hooks/commands";

/** The per-device command topic. */
export const commandTopic = (prefix: string, device: string) => `${prefix}/${device}/commands`;

export interface CommandTargets {
  /** Closes every open write window; returns how many. */
  closeWindows: (by: string) => number;
  /** A decision point for a pushed policy (undefined: no Modbus proxy). */
  policyFor: (f: PolicyFile) => PolicyDecisionPoint<ModbusPolicyRequest> | undefined;
  posture: () => Promise<void>;
  integrity: () => unknown;
}

/**
 * The daemon side of signed SOC commands: one MQTT subscription (QoS 1) to the device's
 * command topic on the upstream broker, every message admitted or refused (commands.ts), every
 * outcome a signed event, and the proxy gate the accepted commands steer.
 */
export class CommandService {
  readonly store: CommandStore;
  gate: CommandGate | undefined;
  private client: MqttClient | undefined;
  private targets: CommandTargets | undefined;
  private readonly key;
  /** The subscription refusal last reported (undefined: subscribed, or not tried yet). */
  private subRefused: string | undefined;
  private chain = Promise.resolve();
  readonly counters = { accepted: 0, refused: 0, failed: 0 };

  constructor(
    private readonly loaded: LoadedConfig,
    private readonly config: CommandsConfig,
    private readonly sink: EventSink,
    private readonly log: Logger,
  ) {
    this.key = loadCommandKey(config.soc_command_key);
    this.store = new CommandStore(config.state_path);
  }

  /** The Modbus proxy's `wrapPdp` option; `svc` gives the proxy (a pushed policy shares its write windows). */
  wrapper(svc: () => { policyFor(f: PolicyFile): PolicyDecisionPoint<ModbusPolicyRequest> } | undefined): (base: PolicyDecisionPoint<ModbusPolicyRequest>) => PolicyDecisionPoint<ModbusPolicyRequest> {
    return (base) => this.wrap(base, (f) => {
      const s = svc();
      if (!s) throw new Error("the Modbus proxy is not running");
      return s.policyFor(f);
    });
  }

  /** For the Modbus proxy: its decision point behind the SOC's gate. */
  wrap(base: PolicyDecisionPoint<ModbusPolicyRequest>, policyFor: (f: PolicyFile) => PolicyDecisionPoint<ModbusPolicyRequest>): PolicyDecisionPoint<ModbusPolicyRequest> {
    this.gate = new CommandGate(this.store, base);
    if (this.store.state.policy) {
      try {
        this.gate.pushed = policyFor(parsePolicyText(this.store.state.policy, "the policy pushed by the SOC"));
      } catch (e) {
        this.log.error({ err: describeError(e) }, "The policy pushed by the SOC no longer loads; the configured policy applies.");
      }
    }
    return this.gate;
  }

  async start(targets: CommandTargets): Promise<void> {
    this.targets = targets;
    const u = this.loaded.config.upstream;
    const device = this.loaded.config.device.id;
    if (!u.url) {
      this.log.warn({}, "commands are configured but upstream.url is not: no SOC command can arrive.");
      return;
    }
    const mqtt = (await import("mqtt")).default;
    const topic = commandTopic(u.topic_prefix, device);
    this.client = mqtt.connect(u.url, {
      protocolVersion: u.protocol_version,
      clientId: `${u.client_id ?? `gatewarden-${device}`}-cmd`,
      clean: true,
      keepalive: u.keepalive_s,
      connectTimeout: u.connect_timeout_ms,
      reconnectPeriod: u.reconnect_max_ms,
      ...brokerAuth({ ca: u.ca, cert: u.cert, key: u.key, username: u.username, passwordFile: u.password_file }, "upstream"),
    });
    this.client.on("connect", () =>
      this.client?.subscribe(topic, { qos: 1 }, (err, granted) => {
        // A broker that refuses answers with a failure code in SUBACK (0x80, 0x87 not
        // authorized), not an error: either way no command can arrive.
        const refused = err?.message ?? (granted?.some((g) => g.qos >= 0x80) ? `SUBACK reason 0x${granted.map((g) => g.qos.toString(16)).join(",0x")}` : undefined);
        if (refused === undefined) {
          this.subRefused = undefined;
          return;
        }
        this.log.error({ err: refused, topic }, "Cannot subscribe to the command topic: no SOC command can arrive.");
        if (refused === this.subRefused) return; // the same refusal again after a reconnect: not news
        this.subRefused = refused;
        this.systemEvent(
          `The broker refused the subscription to SOC commands on ${topic} (${refused}): no command from the SOC can reach this gateway; the broker's ACL must let it read that topic`,
          { error_type: "commands_unsubscribed", stage: "receiving", topic, reason: refused },
        );
      }),
    );
    this.client.on("error", (e) => this.log.debug({ err: e.message, url: redactUrl(u.url!) }, "Command channel error."));
    // One at a time, in arrival order: the counter check and its persistence are sequential.
    this.client.on("message", (_t, payload, packet) => {
      this.chain = this.chain.then(() => this.handle(payload, packet.retain)).catch((e) => this.unhandled(e));
    });
  }

  /**
   * A message whose admission failed for the gateway's own reason (its counter or nonce could
   * not be saved): neither accepted nor refused, so said as such.
   */
  private unhandled(e: unknown): void {
    this.counters.failed++;
    const err = describeError(e);
    this.log.error({ err }, "A SOC command message could not be handled.");
    this.systemEvent(`A SOC command message could not be handled (${err}); it is not in effect`, { error_type: "command_failed", stage: "receiving", command: { outcome: "failed", error: err } });
  }

  /** Admits, applies and records one command message. Public for the tests' direct path. */
  async handle(payload: Buffer, retained: boolean): Promise<void> {
    let c: Command;
    try {
      c = admit(payload, { retained, device: this.loaded.config.device.id, key: this.key, store: this.store, maxValidityMs: this.config.max_validity_ms });
    } catch (e) {
      if (!(e instanceof CommandRefused)) throw e;
      this.refused(e.reason, e.message, e.command);
      return;
    }
    let effect: string;
    try {
      effect = await this.apply(c);
    } catch (e) {
      if (e instanceof ApplyFailed) this.failed(c, e);
      else this.refused("invalid_args", describeError(e), c);
      return;
    }
    this.counters.accepted++;
    this.sink.record({
      class: "audit",
      severity: 3,
      ocsf: {
        class_uid: OcsfClass.DeviceConfigStateChange,
        activity_id: 99,
        message: `SOC command ${c.action} (counter ${c.counter}) accepted: ${effect}`,
        unmapped: { command: { outcome: "accepted", action: c.action, args: c.action === "push_policy" ? { bytes: String(c.args.policy ?? "").length } : c.args, counter: c.counter, nonce: c.nonce, effect } },
      },
    });
  }

  private async apply(c: Command): Promise<string> {
    const s = this.store.state;
    const t = this.targets!;
    const str = (k: string) => {
      const v = c.args[k];
      if (typeof v !== "string" || !v || v.length > 4096 * 64) throw new Error(`args.${k} must be a non-empty string`);
      return v;
    };
    switch (c.action) {
      case "proxy_mode": {
        const mode = str("mode") as ProxyMode;
        if (!MODES.includes(mode)) throw new Error(`args.mode must be one of ${MODES.join(", ")}`);
        s.mode = mode;
        this.saveState();
        return `proxy mode ${mode}`;
      }
      case "block_identity": {
        const id = str("identity");
        if (!s.blocked.includes(id)) s.blocked = [...s.blocked, id].slice(-1024);
        this.saveState();
        return `identity ${id} blocked`;
      }
      case "unblock_identity": {
        const id = str("identity");
        s.blocked = s.blocked.filter((b) => b !== id);
        this.saveState();
        return `identity ${id} unblocked`;
      }
      case "close_windows":
        return `${acting(() => t.closeWindows("soc command"))} write windows closed`;
      case "push_policy": {
        const text = str("policy");
        const pdp = t.policyFor(parsePolicyText(text, "the pushed policy"));
        if (!pdp || !this.gate) throw new Error("no Modbus proxy runs here");
        this.gate.pushed = pdp;
        s.policy = text;
        this.saveState();
        return "pushed policy in force";
      }
      case "request_posture":
        await t.posture().catch((e: unknown) => {
          throw new ApplyFailed("act", e);
        });
        return "heartbeat with posture recorded";
      case "request_integrity": {
        const r = acting(() => t.integrity()) as { state?: string } | undefined;
        return `integrity ${r?.state ?? "not configured"}`;
      }
    }
  }

  /** The command state, fsynced; a failure is the gateway's, not the command's (ApplyFailed). */
  private saveState(): void {
    try {
      this.store.save();
    } catch (e) {
      throw new ApplyFailed("save", e);
    }
  }

  /** A command admitted whose effect the gateway could not carry out (or save): a signed event, never `invalid_args`. */
  private failed(c: Command, e: ApplyFailed): void {
    this.counters.failed++;
    const err = describeError(e.cause);
    this.log.error({ action: c.action, counter: c.counter, stage: e.stage, err }, "SOC command admitted but not carried out.");
    const what = e.stage === "save" ? "was applied but its state could not be saved: in effect until the daemon restarts, then lost" : "could not be carried out: not in effect";
    this.systemEvent(`SOC command ${c.action} (counter ${c.counter}) ${what} (${err})`, {
      error_type: "command_failed", stage: "processing", command: { outcome: "failed", failed: e.stage, action: c.action, counter: c.counter, nonce: c.nonce, error: err },
    });
  }

  /** A signed system event (severity 4) about the command channel. */
  private systemEvent(message: string, unmapped: Record<string, unknown>): void {
    this.sink.record({ class: "system", severity: 4, ocsf: { class_uid: OcsfClass.ApplicationLifecycle, activity_id: 99, message, unmapped } });
  }

  private refused(reason: string, detail: string, c?: Command): void {
    this.counters.refused++;
    this.log.warn({ reason, action: c?.action }, "SOC command refused.");
    this.sink.record({
      class: "finding",
      severity: 4,
      ocsf: {
        class_uid: OcsfClass.DeviceConfigStateChange,
        activity_id: 99,
        message: `SOC command refused (${reason}): ${detail}`,
        unmapped: { command: { outcome: "refused", reason, action: c?.action ?? null, counter: c?.counter ?? null, nonce: c?.nonce ?? null, device: c?.device ?? null } },
      },
    });
  }

  status(): Record<string, unknown> {
    const s = this.store.state;
    return { mode: s.mode, blocked: s.blocked, counter: s.counter, pushed_policy: s.policy !== null, ...this.counters };
  }

  async stop(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    if (c) await c.endAsync(true).catch(() => undefined);
  }
}

/** Why an admitted command has no (lasting) effect: the gateway's failure, not the command's. */
class ApplyFailed extends Error {
  constructor(
    readonly stage: "save" | "act",
    cause: unknown,
  ) {
    super(describeError(cause), { cause });
  }
}

function acting<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw new ApplyFailed("act", e);
  }
}
