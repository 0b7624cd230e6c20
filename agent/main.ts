import { runCli } from "./cli";

// Every command's action resolves when its work is done (`run` and `soc receive` when they
// are stopped); then the process exits, whatever handles a failed component left open.
void runCli(process.argv).finally(() => {
  process.stdout.write("", () => process.exit());
});
