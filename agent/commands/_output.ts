import { DaemonError, describeError } from "../core/errors";

/** Prints a result: JSON with --json, otherwise the human text. */
export function report(json: boolean | undefined, data: unknown, human: () => string): void {
  process.stdout.write(json ? JSON.stringify(data, null, 2) + "\n" : human() + "\n");
}

/**
 * Prints an error as `error[CODE]: message` on stderr (and as JSON on stdout with --json) and
 * sets the exit code: 2 for usage errors, 1 otherwise. Never prints secrets: messages name
 * paths and keys, not values of secret files.
 */
export function printError(e: unknown, json = false): void {
  const code = e instanceof DaemonError ? e.code : "INTERNAL";
  const message = e instanceof DaemonError ? e.message : describeError(e);
  const issues = (e as { issues?: unknown }).issues;
  if (json) process.stdout.write(JSON.stringify({ error: { code, message, ...(issues ? { issues } : {}) } }, null, 2) + "\n");
  process.stderr.write(`error[${code}]: ${message}\n`);
  process.exitCode = code === "USAGE" ? 2 : 1;
}
