import type { LoadedConfig } from "./config/load";
import { controlCall } from "./core/control-client";
import type { ControlRegistry } from "./core/control";
import { DaemonError, isDaemonError } from "./core/errors";
import type { Recorder } from "./events/recorder";
import { OutboxLocked } from "./outbox/lock";
import type { EventDraft, SeverityId } from "./core/events";
import type { HookSite, Recorded } from "../firmware-hooks/site";

/**
 * Signed events from commands that run beside the daemon (update hooks, integrity accept):
 * through the running daemon's control socket (`audit.record`), or, when no daemon answers,
 * straight into the outbox as a short boot of their own (boot event, the event, shutdown
 * event), so the chain stays one chain and the SOC sees it once the daemon forwards again.
 */

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

export function registerAuditControl(control: ControlRegistry, recorder: Recorder): void {
  control.handle("audit.record", async (args) => {
    const e = await recorder.recordAndWait(auditDraft(args));
    return { boot: e.boot, seq: e.seq, hash: e.hash };
  });
}

export async function recordAudit(loaded: LoadedConfig, draft: EventDraft, onWait: (message: string) => void = (m) => process.stderr.write(`${m}\n`)): Promise<Recorded> {
  const c = loaded.config;
  const deadline = Date.now() + c.buffer.lock_wait_ms;
  for (let said = false; ; said = true) {
    try {
      const r = (await controlCall(c.control.socket, "audit.record", draft as unknown as Record<string, unknown>, 15_000)) as Omit<Recorded, "via">;
      return { ...r, via: "daemon" };
    } catch (e) {
      if (!isDaemonError(e, "CONTROL_UNAVAILABLE")) throw e;
    }
    try {
      return await recordOffline(loaded, draft);
    } catch (e) {
      // No daemon answers but the outbox is held: a daemon starting (it holds the outbox before
      // its control socket listens) or stopping, or a command for a moment. Wait for either, as
      // long as a daemon's start waits for a holder, instead of losing the record.
      if (!isDaemonError(e, "OUTBOX_LOCKED") || Date.now() >= deadline) throw e;
      if (!said) onWait(`${e.cause instanceof OutboxLocked ? e.cause.message : e.message}; waiting up to ${Math.round(c.buffer.lock_wait_ms / 1000)} s (buffer.lock_wait_ms) for it or the daemon's control socket to record the audit event`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

async function recordOffline(loaded: LoadedConfig, draft: EventDraft): Promise<Recorded> {
  const c = loaded.config;
  const [{ openOffline }, { Recorder }, { signingKeyAtStart }, { VERSION }, pino] = await Promise.all([
    import("./outbox/offline"),
    import("./events/recorder"),
    import("./keys/rotation"),
    import("./version"),
    import("pino"),
  ]);
  const held = openOffline(c.buffer.path, c.buffer.max_bytes, "gatewarden (an audit record written offline)");
  const outbox = held.outbox;
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
    held.close();
  }
}

/** The config file for the update hooks, with audit events recorded by `recordAudit`. */
export function hookSite(loaded: LoadedConfig): HookSite {
  return { file: loaded.file, config: loaded.config, audit: (draft) => recordAudit(loaded, draft) };
}
