import type { Logger } from "pino";
import { FloodGate } from "../core/flood";
import { OcsfClass, type EventSink, type SeverityId } from "../core/events";
import type { ControlServer, ControlSocketChange } from "./server";

/** How often the socket file is looked at, and the flood bounds of its events (a process re-creating it in a loop). */
const EVERY_MS = 2000;
const FLOOD = { interval_ms: 60_000, per_key: 3, max_keys: 8 };

const SEVERITY: Record<ControlSocketChange["what"], SeverityId> = { deleted: 3, permissions: 4, replaced: 4, replaced_by_listener: 5 };

/**
 * Watches the daemon's control socket file (`ControlServer.check`) and records each change as a
 * signed event (`error_type: control_socket_changed`): once per episode while it cannot be put
 * right, and at most three a minute per kind, the rest counted. Returns the stop function.
 */
export function watchControlSocket(server: ControlServer, sink: EventSink, log: Logger): () => void {
  const gate = new FloodGate(sink, FLOOD);
  let failing: string | undefined;
  const tick = async () => {
    const ch = await server.check();
    if (!ch) return;
    if (!ch.restored) {
      if (failing === ch.what) return;
      failing = ch.what;
    } else failing = undefined;
    log.error({ what: ch.what, restored: ch.restored }, ch.message);
    const { message, ...detail } = ch;
    gate.emit(`${ch.what}:${ch.restored}`, {
      class: ch.what === "replaced_by_listener" ? "finding" : "system",
      severity: SEVERITY[ch.what],
      ocsf: {
        class_uid: ch.what === "replaced_by_listener" ? OcsfClass.DetectionFinding : OcsfClass.ApplicationLifecycle,
        activity_id: ch.what === "replaced_by_listener" ? 1 : 99,
        message: `The daemon's control socket changed under it: ${message}`,
        ...(ch.what === "replaced_by_listener" ? { finding_info: { uid: `control-socket-${Date.now()}`, title: "Another process listened on the daemon's control socket", types: ["Impersonation"] } } : {}),
        unmapped: { error_type: "control_socket_changed", stage: "control", control_socket: { path: server.path, ...detail } },
      },
    });
  };
  const timer = setInterval(() => void tick(), EVERY_MS);
  const flush = setInterval(() => gate.flush(), FLOOD.interval_ms);
  timer.unref();
  flush.unref();
  return () => {
    clearInterval(timer);
    clearInterval(flush);
    gate.flush();
  };
}
