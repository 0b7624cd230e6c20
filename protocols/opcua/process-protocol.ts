/**
 * Messages between the daemon's core and its OPC UA process (agent/opcua-process.ts starts it,
 * agent/opcua-child.ts runs in it) over the IPC channel `fork` opens: a pipe
 * inherited by the child alone, so nothing else on the host can speak on it.
 *
 * core -> child: `init` (once), `call` (a control command), `windows` (the open write windows), `stop`.
 * child -> core: `ready` / `failed` (the answer to init), `batch` (event drafts to sign and
 * record, readings for the detectors, and what the child had to drop), `reply`, `alive`.
 */
import type { EventDraft } from "../../agent/core/events";
import type { Reading } from "../../agent/core/readings";
import type { OpcuaConfig } from "./config";
import type { OpcuaPolledPoint } from "./poller";
import type { WindowSpan } from "./front-policy";

/** The argument that makes the bundle run as the OPC UA process instead of the CLI. */
export const OPCUA_PROCESS_ARG = "__opcua-process";

/** Drafts and readings the child queues while the core is not taking them; past it they are counted as dropped. */
export const MAX_QUEUED = 10_000;
/** Batches written to the channel and not yet flushed; the child queues (bounded) behind them. */
export const MAX_UNFLUSHED = 4;
/** How often the child says it is alive (with its memory). */
export const ALIVE_MS = 2000;

export type ToChild =
  | { t: "init"; config: OpcuaConfig; deviceId: string; points: OpcuaPolledPoint[]; logLevel: string }
  | { t: "call"; id: number; cmd: string; args: Record<string, unknown> }
  /** The write windows open now (after init and at every change): the front's write_window decisions. */
  | { t: "windows"; open: WindowSpan[] }
  | { t: "stop" };

export type ToCore =
  | { t: "ready" }
  | { t: "failed"; code: string; message: string }
  | { t: "batch"; events: EventDraft[]; readings: Reading[]; dropped?: { events: number; readings: number } }
  | { t: "reply"; id: number; ok: true; value: unknown }
  | { t: "reply"; id: number; ok: false; code: string; message: string }
  | { t: "alive"; rss: number; heap_used: number };

/** The control commands the core forwards to the child. */
export const FORWARDED = ["opcua.status", "opcua.trust", "opcua.pki.list", "opcua.pki.show", "opcua.pki.trust", "opcua.pki.reject", "opcua.pki.renew"] as const;

/** The OPC UA process as the core sees it (`gatewarden status`, `opcua status`). */
export interface OpcuaProcessStatus {
  state: "starting" | "running" | "restarting" | "stopped";
  pid: number | null;
  restarts: number;
  rss_mb: number | null;
  max_rss_mb: number;
  last_exit: { at: string; reason: string } | null;
  /** Drafts and readings the child could not hand over, and drafts the core refused. */
  dropped: { events: number; readings: number; refused: number };
}

/** The OPC UA process in one line (`status` and `opcua status`). */
export function formatOpcuaProcess(p: OpcuaProcessStatus): string {
  const exit = p.last_exit ? `; last exit ${p.last_exit.at}: ${p.last_exit.reason}` : "";
  const dropped = p.dropped.events + p.dropped.readings + p.dropped.refused > 0 ? `; dropped ${p.dropped.events} events, ${p.dropped.readings} readings, refused ${p.dropped.refused}` : "";
  return `process ${p.state}, pid ${p.pid ?? "-"}, ${p.restarts} restarts, RSS ${p.rss_mb ?? "-"} MB of ${p.max_rss_mb} MB${exit}${dropped}`;
}

