import { connect } from "node:net";
import { DaemonError, type ErrorCode, ErrorCodes } from "./errors";
import type { ControlResponse } from "./control-protocol";

/** One request, one answer. Throws CONTROL_UNAVAILABLE when no daemon listens. */
export async function controlCall(path: string, cmd: string, args: Record<string, unknown> = {}, timeoutMs = 5000): Promise<unknown> {
  let result: unknown;
  await controlStream(path, cmd, args, () => {}, { timeoutMs, onResult: (r) => (result = r) });
  return result;
}

/**
 * A request whose handler pushes events (`events.tail`); resolves when the daemon answers or
 * `signal` aborts. `onEvent` gets each pushed event.
 */
export function controlStream(
  path: string,
  cmd: string,
  args: Record<string, unknown>,
  onEvent: (e: unknown) => void,
  opts: { timeoutMs?: number; signal?: AbortSignal; onResult?: (r: unknown) => void } = {},
): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let buf = "";
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve();
    };
    const timer = opts.timeoutMs ? setTimeout(() => finish(new DaemonError("CONTROL_UNAVAILABLE", `no answer from the daemon on ${path} within ${opts.timeoutMs} ms`)), opts.timeoutMs) : undefined;
    opts.signal?.addEventListener("abort", () => finish());
    sock.on("error", (e: NodeJS.ErrnoException) =>
      finish(new DaemonError("CONTROL_UNAVAILABLE", `cannot reach the daemon on ${path} (${e.code ?? e.message}); is \`gatewarden run\` running with this config?`)),
    );
    sock.on("connect", () => sock.write(JSON.stringify({ id: 1, cmd, args }) + "\n"));
    sock.setEncoding("utf8");
    sock.on("data", (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const msg = parseLine(line);
        if (msg === undefined) {
          finish(new DaemonError("CONTROL_UNAVAILABLE", `the socket ${path} answered something that is not the daemon's control protocol (is control.socket another service's socket?)`));
          return;
        }
        if ("event" in msg) {
          onEvent(msg.event);
          continue;
        }
        if (msg.ok) {
          opts.onResult?.(msg.result);
          finish();
        } else {
          const code = (Object.hasOwn(ErrorCodes, msg.error.code) ? msg.error.code : "CONTROL_BAD_REQUEST") as ErrorCode;
          finish(new DaemonError(code, msg.error.message));
        }
      }
    });
    sock.on("close", () => finish());
  });
}

/** One line of the daemon's answer, or undefined when it is not the control protocol's shape. */
function parseLine(line: string): ControlResponse | { id: number; event: unknown } | undefined {
  let msg: unknown;
  try {
    msg = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof msg !== "object" || msg === null || Array.isArray(msg)) return undefined;
  const m = msg as Record<string, unknown>;
  if ("event" in m) return m as { id: number; event: unknown };
  if (m.ok === true) return m as ControlResponse;
  const err = m.error as Record<string, unknown> | null | undefined;
  if (m.ok === false && typeof err === "object" && err !== null && typeof err.code === "string" && typeof err.message === "string") return m as ControlResponse;
  return undefined;
}
