import { Command } from "commander";
import { socketFromConfig, type CliDeps } from "./commands/_deps";
import { printError } from "./commands/_output";
import { loadConfig } from "./config/load";
import { locateConfig } from "./config/locate";
import { DaemonError } from "./core/errors";
import { VERSION } from "./version";

/** A command group: the top-level commands it adds, and how its file (agent/commands/) is loaded and registered. */
export interface CommandGroup {
  names: readonly string[];
  register(program: Command, deps: CliDeps): Promise<void>;
}

/**
 * Every command group, in the order `--help` lists them. A command loads only its own group's
 * file (`gatewarden run` does not load the SOC receiver, the demo or the update hooks); no
 * command, `help` or an unknown one loads them all.
 */
export const COMMAND_GROUPS: readonly CommandGroup[] = [
  { names: ["init"], register: async (p) => (await import("./commands/init")).registerInit(p) },
  { names: ["config"], register: async (p) => (await import("./commands/config")).registerConfig(p) },
  { names: ["run", "status", "reload", "outbox", "events"], register: async (p) => (await import("./commands/daemon")).registerDaemon(p) },
  { names: ["keys"], register: async (p) => (await import("./commands/keys")).registerKeys(p) },
  { names: ["decommission"], register: async (p) => (await import("./commands/decommission")).registerDecommission(p) },
  {
    names: ["soc"],
    // `soc command-key` and `soc command` join the group soc.ts makes.
    register: async (p) => {
      (await import("./commands/soc")).registerSoc(p);
      (await import("./commands/soc-command")).registerSocCommandCommands(p);
    },
  },
  { names: ["demo"], register: async (p) => (await import("./commands/demo")).registerDemo(p) },
  { names: ["sim"], register: async (p) => (await import("./commands/sim")).registerSim(p) },
  { names: ["doctor"], register: async (p) => (await import("./commands/doctor")).registerDoctor(p) },
  { names: ["detect"], register: async (p) => (await import("./commands/detect")).registerDetect(p) },
  { names: ["maintenance"], register: async (p, deps) => (await import("./commands/maintenance")).registerMaintenance(p, deps) },
  { names: ["modbus"], register: async (p, deps) => (await import("./commands/modbus")).registerModbus(p, deps) },
  { names: ["policy"], register: async (p, deps) => (await import("./commands/policy")).registerPolicy(p, deps) },
  { names: ["window"], register: async (p, deps) => (await import("./commands/window")).registerWindow(p, deps) },
  { names: ["release"], register: async (p) => (await import("./commands/release")).registerReleaseCommands(p) },
  { names: ["update"], register: async (p) => void (await import("./commands/update")).registerUpdateCommands(p) },
  { names: ["integrity"], register: async (p) => (await import("./commands/integrity")).registerIntegrityCommands(p) },
  { names: ["posture"], register: async (p) => (await import("./commands/posture")).registerPostureCommand(p) },
  {
    names: ["opcua"],
    register: async (p, deps) =>
      (await import("./commands/opcua")).registerOpcuaCommands(p, {
        ...deps,
        front: (opts) => {
          const file = locateConfig(typeof opts.config === "string" ? opts.config : undefined);
          const front = loadConfig(file).config.opcua?.front;
          if (!front) throw new DaemonError("CONFIG_INCOMPLETE", `${file} has no opcua.front section: the OPC UA front and its users are configured there`);
          return front;
        },
      }),
  },
];

/** The command an argument list names (its first operand), or undefined. */
export function commandNamed(argv: readonly string[]): string | undefined {
  return argv.slice(2).find((a) => !a.startsWith("-"));
}

/**
 * The `gatewarden` command line: every command has --help; reporting commands take --json.
 * With `argv`, only the groups adding the command it names are loaded (all when it names none
 * of them).
 */
export async function buildProgram(argv?: readonly string[]): Promise<Command> {
  const program = new Command("gatewarden")
    .description("Edge security agent for OT gateways: signed, store-and-forward security events to the SOC")
    .version(VERSION)
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({ outputError: (str, write) => write(str.replace(/^error: /, "error[USAGE]: ")) })
    .exitOverride((err) => {
      process.exit(err.exitCode === 0 ? 0 : 2);
    });
  const deps: CliDeps = { resolveSocket: socketFromConfig };
  const name = argv && commandNamed(argv);
  const named = COMMAND_GROUPS.filter((g) => name !== undefined && g.names.includes(name));
  for (const g of named.length ? named : COMMAND_GROUPS) await g.register(program, deps);
  return program;
}

/**
 * Runs the command line. Every failure of every command ends here and is printed one way:
 * `error[CODE]: message` on stderr, and with --json also `{"error": {...}}` on stdout.
 */
export async function runCli(argv: string[]): Promise<void> {
  const program = await buildProgram(argv);
  let json = false;
  program.hook("preAction", (_program, command) => {
    json = command.opts().json === true;
    // An empty value names nothing: `--dir ""` wrote into the current directory, `--out ""` to stdout.
    for (const o of command.options) {
      if (command.getOptionValue(o.attributeName()) === "") throw new DaemonError("USAGE", `${o.long ?? o.flags} was given an empty value`);
    }
  });
  try {
    await program.parseAsync(argv);
  } catch (e) {
    printError(e, json);
  }
}
