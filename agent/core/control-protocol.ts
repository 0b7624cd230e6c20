/**
 * The daemon's local control protocol: newline-delimited JSON over a Unix socket that only
 * the daemon's user can open (socket mode 0600 inside a 0700 directory).
 *
 *   request:  {"id": 1, "cmd": "status", "args": {...}}
 *   response: {"id": 1, "ok": true, "result": ...} | {"id": 1, "ok": false, "error": {"code", "message"}}
 *   stream:   {"id": 1, "event": {...}} lines until the client closes (for streaming commands)
 *
 * Components register handlers by command name (`status`, `events.recent`, `window.open`, ...)
 * through `ControlRegistry` (agent/core/control.ts).
 */
export interface ControlRequest {
  id: number;
  cmd: string;
  args?: Record<string, unknown>;
}

export type ControlResponse =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: { code: string; message: string } };

export interface ControlStreamLine {
  id: number;
  event: unknown;
}

/** Longest request line accepted; longer ones are rejected and the connection closed. */
export const MAX_REQUEST_BYTES = 64 * 1024;
