/**
 * What command groups that talk to the daemon or print line streams are given: where the
 * control socket is, and (for tests) where output goes and how the command is stopped.
 */
import type { Command } from "commander";
import { loadConfig } from "../config/load";
import { locateConfig } from "../config/locate";

/** Dependencies of a command group; tests give their own. */
export interface CliDeps {
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

/** The control socket of the config `--config` names (or the one found in the usual places). */
export async function socketFromConfig(opts: Record<string, unknown>): Promise<string> {
  return loadConfig(locateConfig(typeof opts.config === "string" ? opts.config : undefined)).config.control.socket;
}

/** A command group, created once even when several files add subcommands to it. */
export const group = (program: Command, name: string, description: string): Command => program.commands.find((c) => c.name() === name) ?? program.command(name).description(description);
