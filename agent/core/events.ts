/**
 * What every component hands to the event spine. The recorder (agent/events/recorder.ts)
 * turns a draft into a signed, hash-chained envelope and commits it to the outbox.
 */

/**
 * Eviction and durability class, lowest rank first. When the outbox is full, telemetry goes
 * before heartbeats, heartbeats before audit records, audit before findings, and `system`
 * records (boot, shutdown, loss, quarantine) only when nothing else is left.
 * `audit`, `finding` and `system` are committed with an fsync (durable across power loss).
 */
export const EVENT_CLASSES = ["telemetry", "heartbeat", "audit", "finding", "system"] as const;
export type EventClass = (typeof EVENT_CLASSES)[number];
export const CLASS_RANK: Record<EventClass, number> = { telemetry: 0, heartbeat: 1, audit: 2, finding: 3, system: 4 };
export const DURABLE_RANK = CLASS_RANK.audit;

/** OCSF severity_id: 0 Unknown, 1 Informational, 2 Low, 3 Medium, 4 High, 5 Critical, 6 Fatal. */
export type SeverityId = 0 | 1 | 2 | 3 | 4 | 5 | 6;

/**
 * The OCSF-shaped body. `class_uid` and `activity_id` are required; `category_uid`,
 * `type_uid`, `severity_id`, `time` and `metadata` are filled in by the recorder.
 * Everything else is class-specific OCSF attributes (`message`, `finding_info`,
 * `src_endpoint`, `actor`, `unmapped`, ...). JSON-safe values only.
 */
export interface OcsfDraft {
  class_uid: number;
  activity_id: number;
  message: string;
  [attr: string]: unknown;
}

export interface EventDraft {
  class: EventClass;
  severity: SeverityId;
  ocsf: OcsfDraft;
  /** Wall time in ms of what happened; defaults to the time of recording. */
  time?: number;
}

/**
 * Where components send events. `record` never throws and never blocks on I/O: it queues
 * the draft for the next batched commit (bounded; past the bound it commits inline).
 * A malformed draft is not dropped silently: it is recorded as an `EVENT_INVALID` system event.
 */
export interface EventSink {
  record(draft: EventDraft): void;
}

/** The OCSF classes Gatewarden emits (the recorder adds category, type, time and metadata). */
export const OcsfClass = {
  DetectionFinding: 2004,
  Authentication: 3002,
  AuthorizeSession: 3003,
  NetworkActivity: 4001,
  DeviceInventoryInfo: 5001,
  DeviceConfigStateChange: 5019,
  ApplicationLifecycle: 6002,
} as const;
