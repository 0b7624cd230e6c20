import { Command } from "commander";
import { registerConfig } from "./commands/config";
import { registerDaemon } from "./commands/daemon";
import { registerDemo } from "./commands/demo";
import { registerInit } from "./commands/init";
import { registerKeys } from "./commands/keys";
import { registerSoc } from "./commands/soc";
import { registerSim } from "./commands/sim";
import { registerDoctor } from "./commands/doctor";
import { VERSION } from "./version";
import { registerModbusCommands } from "../protocols/modbus/cli";
import { registerDetectCommand } from "../detectors/cli";
import { registerMaintenanceCommand } from "../detectors/maintenance";
import { registerOpcuaCommands } from "../protocols/opcua/cli";
import { registerReleaseCommands, registerUpdateCommands } from "../firmware-hooks/cli";
import { registerIntegrityCommands } from "../firmware-hooks/integrity-cli";
import { registerPostureCommand } from "../firmware-hooks/posture-cli";
import { registerSocCommandCommands } from "../firmware-hooks/command-cli";
import { loadConfig } from "./config/load";
import { locateConfig } from "./config/locate";
import { DaemonError } from "./core/errors";

/** The `gatewarden` command line: every command has --help; reporting commands take --json. */
export function buildProgram(): Command {
  const program = new Command("gatewarden")
    .description("Edge security agent for OT gateways: signed, store-and-forward security events to the SOC")
    .version(VERSION)
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({ outputError: (str, write) => write(str.replace(/^error: /, "error[USAGE]: ")) })
    .exitOverride((err) => {
      process.exit(err.exitCode === 0 ? 0 : 2);
    });
  registerInit(program);
  registerConfig(program);
  registerDaemon(program);
  registerKeys(program);
  registerSoc(program);
  registerDemo(program);
  registerSim(program);
  registerDoctor(program);
  registerDetectCommand(program);
  registerMaintenanceCommand(program, {
    resolveSocket: async (opts) => loadConfig(locateConfig(typeof opts.config === "string" ? opts.config : undefined)).config.control.socket,
  });
  registerModbusCommands(program, {
    resolveSocket: async (opts) => loadConfig(locateConfig(typeof opts.config === "string" ? opts.config : undefined)).config.control.socket,
  });
  registerReleaseCommands(program);
  registerUpdateCommands(program);
  registerIntegrityCommands(program);
  registerPostureCommand(program);
  registerSocCommandCommands(program);
  registerOpcuaCommands(program, {
    resolveSocket: async (opts) => loadConfig(locateConfig(typeof opts.config === "string" ? opts.config : undefined)).config.control.socket,
    front: (opts) => {
      const file = locateConfig(typeof opts.config === "string" ? opts.config : undefined);
      const front = loadConfig(file).config.opcua?.front;
      if (!front) throw new DaemonError("CONFIG_INCOMPLETE", `${file} has no opcua.front section: the OPC UA front and its users are configured there`);
      return front;
    },
  });
  return program;
}
