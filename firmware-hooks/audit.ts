import type { LoadedConfig } from "../agent/config/load";
import { controlCall } from "../agent/control/client";
import type { ControlServer } from "../agent/control/server";
import { DaemonError, isDaemonError } from "../agent/core/errors";
import { OcsfClass } from "../agent/core/events";
import type { Recorder } from "../agent/events/recorder";
import type { EventDraft, SeverityId } from "../agent/core/events";

/**
 * Signed events from commands that run beside the daemon (update hooks, integrity accept):
 * through the running daemon's control socket (`audit.record`), or, when no daemon answers,
 * straight into the outbox as a short boot of their own (boot event, the event, shutdown
 * event), so the chain stays one chain and the SOC sees it once the daemon forwards again.
 */
export interface Recorded {
  boot: number;
  seq: number;
  hash: string;
  via: "daemon" | "outbox";
}

/** What a control client may ask the daemon to record: audit records and findings only. */
export function auditDraft(args: Record<string, unknown>): EventDraft {
  const cls = args.class;
  const sev = args.severity;
  const ocsf = args.ocsf as Record<string, unknown> | undefined;
  if (cls !== "audit" && cls !== "finding") throw new DaemonError("CONTROL_BAD_REQUEST", "audit.record: class must be audit or finding");
  if (!Number.isInteger(sev) || (sev as number) < 1 || (sev as number) > 5) throw new DaemonError("CONTROL_BAD_REQUEST", "audit.record: severity must be 1..5");
  if (!ocsf || typeof ocsf !== "object" || !Number.isInteger(ocsf.class_uid) || !Number.isInteger(ocsf.activity_id) || typeof ocsf.message !== "string")
    throw new DaemonError("CONTROL_BAD_REQUEST", "audit.record: ocsf needs class_uid, activity_id and message");
  return { class: cls, severity: sev as SeverityId, ocsf: ocsf as EventDraft["ocsf"] };
}

export function registerAuditControl(control: ControlServer, recorder: Recorder): void {
  control.handle("audit.record", async (args) => {
    const e = await recorder.recordAndWait(auditDraft(args));
    return { boot: e.boot, seq: e.seq, hash: e.hash };
  });
}

export async function recordAudit(loaded: LoadedConfig, draft: EventDraft): Promise<Recorded> {
  const c = loaded.config;
  try {
    const r = (await controlCall(c.control.socket, "audit.record", draft as unknown as Record<string, unknown>, 15_000)) as Omit<Recorded, "via">;
    return { ...r, via: "daemon" };
  } catch (e) {
    if (!isDaemonError(e, "CONTROL_UNAVAILABLE")) throw e;
  }
  return recordOffline(loaded, draft);
}

async function recordOffline(loaded: LoadedConfig, draft: EventDraft): Promise<Recorded> {
  const c = loaded.config;
  const [{ Outbox }, { Recorder }, { signingKeyAtStart }, { VERSION }, pino] = await Promise.all([
    import("../agent/outbox/store"),
    import("../agent/events/recorder"),
    import("../agent/keys/rotation"),
    import("../agent/version"),
    import("pino"),
  ]);
  const outbox = new Outbox(c.buffer.path, c.buffer.max_bytes);
  try {
    const log = pino.default({ level: "silent" });
    // The key that signs this outbox's chain now: an announced rotation a crash left unfinished is promoted first.
    const rec = new Recorder({ outbox, key: signingKeyAtStart(c.device.key, outbox, log).key, device: c.device.id, version: VERSION, flushMs: 1, maxPending: 16, log });
    rec.start({ config_file: loaded.file, mode: "offline-record" });
    const env = await new Promise<{ boot: number; seq: number; hash: string }>((resolve) => {
      void rec.recordAndWait(draft).then(resolve);
      rec.flush();
    });
    rec.close("offline record done");
    return { boot: env.boot, seq: env.seq, hash: env.hash, via: "outbox" };
  } finally {
    outbox.close();
  }
}

/** An update step as an OCSF Application Lifecycle event (6002, activity 8 Update). */
export function updateDraft(o: { stage: string; engine: string; ok: boolean; message: string; severity?: SeverityId; detail?: Record<string, unknown> }): EventDraft {
  return {
    class: o.ok ? "audit" : "finding",
    severity: o.severity ?? (o.ok ? 2 : 4),
    ocsf: {
      class_uid: OcsfClass.ApplicationLifecycle,
      activity_id: 8, // Update
      status_id: o.ok ? 1 : 2,
      message: o.message,
      app: { name: "Gatewarden" },
      unmapped: { update: { engine: o.engine, stage: o.stage, outcome: o.ok ? "ok" : "refused", ...o.detail } },
    },
  };
}
