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

/**
 * Lines written together at most `maxDelayMs` after the first of them (or at `maxBytes`), in
 * order. Each write to a pipe or terminal is a system call that copies the text: once per
 * event-loop turn it still took 40 % of a busy commissioning proxy's CPU time. Bounded: past the
 * size the pending lines are written at once, so a slow reader slows the writer instead of
 * growing memory.
 */
export function lineBatcher(write: (s: string) => void, maxBytes = 64 * 1024, maxDelayMs = 100): { push(line: string): void; flush(): void } {
  let pending: string[] = [];
  let bytes = 0;
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (!pending.length) return;
    const text = pending.join("\n") + "\n";
    pending = [];
    bytes = 0;
    write(text);
  };
  return {
    push(line) {
      pending.push(line);
      bytes += line.length + 1;
      if (bytes >= maxBytes) flush();
      else timer ??= setTimeout(flush, maxDelayMs);
    },
    flush,
  };
}
