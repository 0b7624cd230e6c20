// Stand-alone entry for the Modbus commands until the daemon's CLI registers them.
// Bundle: npx esbuild protocols/modbus/_cli-main.ts --bundle --platform=node --format=cjs --outfile=/tmp/mb.cjs --external:better-sqlite3 --external:serialport --external:@serialport/*
import { Command } from "commander";
import { describeError, isDaemonError } from "../../agent/errors";
import { registerModbusCommands } from "./cli";

const program = new Command("gatewarden").option("--socket <path>", "daemon control socket", "/run/gatewarden/control.sock");
registerModbusCommands(program, { resolveSocket: async (o) => String(o.socket) });
program.parseAsync(process.argv).catch((e: unknown) => {
  process.stderr.write(`error[${isDaemonError(e) ? e.code : "INTERNAL"}]: ${isDaemonError(e) ? e.message : describeError(e)}\n`);
  process.exit(isDaemonError(e, "USAGE") ? 2 : 1);
});
