import pino, { type Logger } from "pino";

/**
 * The root logger: JSON lines to stdout (pino, no transports). Secrets are redacted by key
 * name wherever they appear; components log through `root.child({ component })`.
 */
export function createLogger(level: string, dest: NodeJS.WritableStream | number = 1): Logger {
  const stream = typeof dest === "number" ? pino.destination({ fd: dest, sync: true }) : dest;
  return pino(
    {
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: ["password", "*.password", "secret", "*.secret", "secret_key", "*.secret_key", "private_key", "*.private_key"], censor: "[redacted]" },
      formatters: { level: (label) => ({ level: label }) },
    },
    stream,
  );
}
