/**
 * What the agent gives the update hooks, the engine-less updater and the integrity measurement
 * (agent/commands/update.ts, agent/commands/integrity.ts, agent/integrity-monitor.ts): the
 * config file with the parts of it they read (agent/config/schema.ts composes the whole), and
 * how an audit event is recorded (agent/audit.ts: through the running daemon, or straight into
 * its outbox). firmware-hooks/ imports nothing of the agent but agent/core/.
 */
import { OcsfClass, type EventDraft, type SeverityId } from "../agent/core/events";
import type { UpdateConfig } from "./config";
import type { IntegrityConfig } from "./integrity";

/** The config the hooks read. */
export interface GatewayConfig {
  device: { id: string; key: string };
  buffer: { path: string };
  control: { socket: string };
  upstream: { ca?: string | undefined; soc_public_key?: string | undefined };
  detection: { site?: string | undefined };
  modbus?: { policy_file?: string | undefined; listeners: readonly { name: string; listen: string }[] } | undefined;
  update?: UpdateConfig | undefined;
  integrity?: IntegrityConfig | undefined;
}

/** A config file as loaded: its path and what it says. */
export interface ConfigFile {
  file: string;
  config: GatewayConfig;
}

/** Where an audit event went: the running daemon's chain or, with none running, the outbox. */
export interface Recorded {
  boot: number;
  seq: number;
  hash: string;
  via: "daemon" | "outbox";
}

export interface HookSite extends ConfigFile {
  /** Records a signed event in the gateway's chain. */
  audit(draft: EventDraft): Promise<Recorded>;
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
