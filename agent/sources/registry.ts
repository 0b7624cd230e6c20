/**
 * The one table of sources (agent/sinks/registry.ts is its counterpart for sinks). The runtime walks it: a source whose config section is present is
 * loaded (its module imported only then), started, stopped and reloaded through the Source
 * contract (agent/core/component.ts); one whose section is absent answers its control commands
 * with "not configured". Adding a protocol is a row here, not a change to the runtime.
 */
import type { Logger } from "pino";
import type { ControlRegistry } from "../core/control";
import type { ComponentEntry, Source } from "../core/component";
import type { EventSink } from "../core/events";
import type { ReadingSink } from "../core/readings";
import type { Config } from "../config/schema";
import type { CommandService } from "../soc-commands/service";
import type { PolicyFile } from "../../protocols/modbus/policy/schema";
import { FORWARDED } from "../../protocols/opcua/process-protocol";
import type { SharedWindows } from "./windows";

/** What a source is built with. */
export interface SourceContext {
  config: Config;
  events: EventSink;
  /** Where readings go (the detection engine), when points are configured. */
  readings: ReadingSink | undefined;
  control: ControlRegistry;
  log: Logger;
  /** Signed SOC commands, when configured: a source with a write gate puts it behind them. */
  commands: CommandService | undefined;
  /** The write windows every source shares (agent/sources/windows.ts). */
  windows: SharedWindows;
}

/** A running source; the optional parts are what SOC commands steer (firmware-hooks/commands.ts). */
export interface RunningSource extends Source<Config> {
  /** Closes every write window it holds; how many were open. */
  closeWriteWindows?(by: string): number;
  /** The decision point a pushed policy file would give. */
  policyFor?(f: PolicyFile): ReturnType<CommandService["wrap"]>;
}

/** A source is on when its section is present; its `statusField` shows null when it is not. */
export interface SourceEntry extends ComponentEntry<"modbus" | "opcua", SourceContext, RunningSource> {
  /** Control commands it serves; answered with CONFIG_INCOMPLETE when the section is absent. */
  control: readonly string[];
  /**
   * What `gatewarden reload` takes from its config without a restart: `keys` of its section,
   * and whether its points (`points.<id>.source.<section>`) may come, go and change.
   */
  reloadable: { keys: readonly string[]; points: boolean };
}

export const SOURCES: readonly SourceEntry[] = [
  {
    section: "modbus",
    control: ["modbus.status", "modbus.reload_tls", "window.open", "window.list", "window.close"],
    // The policy (inline or its file) and the tap and poll points; TLS files are re-read too (same paths).
    reloadable: { keys: ["policy", "policy_file"], points: true },
    create: async (ctx) => (await import("./modbus")).modbusSource(ctx),
  },
  {
    section: "opcua",
    control: FORWARDED,
    statusField: "opcua",
    // Its points are read by the OPC UA client's own subscriptions or polls, which a reload does not rebuild.
    reloadable: { keys: [], points: false },
    create: async (ctx) => (await import("./opcua")).opcuaSource(ctx),
  },
];
