import { Command } from "commander";
import { registerConfig } from "./commands/config";
import { registerDaemon } from "./commands/daemon";
import { registerDemo } from "./commands/demo";
import { registerDetect } from "./commands/detect";
import { registerDoctor } from "./commands/doctor";
import { registerInit } from "./commands/init";
import { registerIntegrityCommands } from "./commands/integrity";
import { registerKeys } from "./commands/keys";
import { registerDecommission } from "./commands/decommission";
import { registerMaintenance } from "./commands/maintenance";
import { registerModbus } from "./commands/modbus";
import { registerOpcuaCommands } from "./commands/opcua";
import { registerPolicy } from "./commands/policy";
import { registerPostureCommand } from "./commands/posture";
import { registerReleaseCommands } from "./commands/release";
import { registerSim } from "./commands/sim";
import { registerSoc } from "./commands/soc";
import { registerSocCommandCommands } from "./commands/soc-command";
import { registerUpdateCommands } from "./commands/update";
import { registerWindow } from "./commands/window";
import { socketFromConfig, type CliDeps } from "./commands/_deps";
import { printError } from "./commands/_output";
import { loadConfig } from "./config/load";
import { locateConfig } from "./config/locate";
import { DaemonError } from "./core/errors";
import { VERSION } from "./version";

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
  const deps: CliDeps = { resolveSocket: socketFromConfig };
  registerInit(program);
  registerConfig(program);
  registerDaemon(program);
  registerKeys(program);
  registerDecommission(program);
  registerSoc(program);
  registerDemo(program);
  registerSim(program);
  registerDoctor(program);
  registerDetect(program);
  registerMaintenance(program, deps);
  registerModbus(program, deps);
  registerPolicy(program, deps);
  registerWindow(program, deps);
  registerReleaseCommands(program);
  registerUpdateCommands(program);
  registerIntegrityCommands(program);
  registerPostureCommand(program);
  registerSocCommandCommands(program);
  registerOpcuaCommands(program, {
    ...deps,
    front: (opts) => {
      const file = locateConfig(typeof opts.config === "string" ? opts.config : undefined);
      const front = loadConfig(file).config.opcua?.front;
      if (!front) throw new DaemonError("CONFIG_INCOMPLETE", `${file} has no opcua.front section: the OPC UA front and its users are configured there`);
      return front;
    },
  });
  return program;
}

/**
 * Runs the command line. Every failure of every command ends here and is printed one way:
 * `error[CODE]: message` on stderr, and with --json also `{"error": {...}}` on stdout.
 */
export async function runCli(argv: string[]): Promise<void> {
  const program = buildProgram();
  let json = false;
  program.hook("preAction", (_program, command) => {
    json = command.opts().json === true;
  });
  try {
    await program.parseAsync(argv);
  } catch (e) {
    printError(e, json);
  }
}
