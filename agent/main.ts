import { buildProgram } from "./cli";
import { printError } from "./commands/_output";

// Every command's action resolves when its work is done (`run` and `soc receive` when they
// are stopped); then the process exits, whatever handles a failed component left open.
buildProgram()
  .parseAsync(process.argv)
  .catch((e: unknown) => printError(e))
  .finally(() => {
    process.stdout.write("", () => process.exit());
  });
