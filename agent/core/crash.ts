import type { Logger } from "pino";
import { DaemonError, describeError } from "./errors";

/** Exit code after an error nothing handled (EX_SOFTWARE): systemd restarts the service. */
export const CRASH_EXIT_CODE = 70;

/**
 * An error nothing handled (an uncaught exception, an unhandled rejection) ends the process, as
 * by default, but recorded first: `record` gets the error as `Name: message` and writes it
 * where the next run (or the SOC) sees it, synchronously; then the process exits with code 70.
 */
export function exitOnUncaught(log: Logger, message: string, record: (what: string) => void): void {
  const crash = (e: unknown): void => {
    const what = e instanceof Error && !(e instanceof DaemonError) ? `${e.name}: ${describeError(e)}` : describeError(e);
    log.error({ err: what, stack: e instanceof Error ? e.stack : undefined }, message);
    record(what);
    process.exit(CRASH_EXIT_CODE);
  };
  process.on("uncaughtException", crash);
  process.on("unhandledRejection", crash);
}
