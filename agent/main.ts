import { buildProgram } from "./cli";
import { printError } from "./commands/_output";

buildProgram()
  .parseAsync(process.argv)
  .catch((e: unknown) => printError(e));
