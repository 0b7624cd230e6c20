import { z } from "zod";
import { DEVICE_ID } from "../keys/identity";
import { MAX_BATCH_PLAINTEXT } from "../events/seal";
import { brokerUrlProblem, URL_CREDENTIALS } from "../mqtt-connection";
import { modbusConfigSchema } from "../../protocols/modbus/config";
import { pointsSchema } from "./points";
import { opcuaConfigSchema } from "../../protocols/opcua/config";
import { detectionSchema } from "../detection/start";
import { updateSchema } from "../../firmware-hooks/config";
import { integritySchema } from "../../firmware-hooks/integrity";
import { tamperSchema } from "../../firmware-hooks/tamper";
import { commandsSchema } from "../../firmware-hooks/commands";
import { postureSchema } from "../posture";
import { MAX_SOCKET_PATH_BYTES } from "../paths";

/**
 * The daemon's config schema. Each section's schema sits here or beside its component; the
 * TypeScript type and defaults come from it. Objects are strict: unknown keys are errors.
 * Relative paths are resolved against the config file's directory.
 */

const UNITS: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3 };

/** A byte size: an integer, or a string such as "256MiB", "1GB", "512kB". */
export const byteSize = z.union([
  z.number().int().positive(),
  z.string().transform((s, ctx) => {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?\s*$/i.exec(s);
    if (!m) {
      ctx.addIssue({ code: "custom", message: `"${s}" is not a byte size (e.g. 268435456, "256MiB", "1GB")` });
      return z.NEVER;
    }
    return Math.floor(Number(m[1]) * (UNITS[(m[2] ?? "b").toLowerCase()] ?? 1));
  }),
]);

const int = (min: number, max: number) => z.number().int().min(min).max(max);

export const deviceSchema = z.strictObject({
  id: z.string().regex(DEVICE_ID, "letters, digits, '.', '_' or '-', at most 64, starting with a letter or digit"),
  key: z.string().min(1).default("keys/device.key"),
});

export const upstreamSchema = z.strictObject({
  url: z
    .string()
    .refine((u) => !URL_CREDENTIALS.test(u), "must not hold a user name or password: set upstream.username, and put the password in a file (0600) named by upstream.password_file")
    .superRefine((u, ctx) => {
      const problem = brokerUrlProblem(u);
      if (problem) ctx.addIssue({ code: "custom", message: problem });
    })
    .optional(),
  ca: z.string().min(1).optional(),
  cert: z.string().min(1).optional(),
  key: z.string().min(1).optional(),
  soc_public_key: z.string().min(1).optional(),
  topic_prefix: z.string().regex(/^[^#+\s]+$/, "no wildcards or spaces").default("gatewarden/v1"),
  /** MQTT 5 (default) reports broker rejections per message; 4 (3.1.1) for brokers without 5. */
  protocol_version: z.union([z.literal(4), z.literal(5)]).default(5),
  client_id: z.string().min(1).max(128).optional(),
  username: z.string().min(1).optional(),
  /** File holding the broker password (0600); passwords never sit in the config. */
  password_file: z.string().min(1).optional(),
  keepalive_s: int(5, 3600).default(30),
  connect_timeout_ms: int(500, 120_000).default(10_000),
  max_inflight: int(1, 256).default(16),
  max_batch_events: int(1, 10_000).default(256),
  /** Bounds each batch's (uncompressed) events; the SOC receiver refuses more than MAX_BATCH_PLAINTEXT. */
  max_message_bytes: byteSize.pipe(z.number().int().min(1024).max(MAX_BATCH_PLAINTEXT, "at most 16 MiB: the SOC receiver refuses larger batches")).default(256 * 1024),
  reconnect_min_ms: int(50, 600_000).default(500),
  reconnect_max_ms: int(100, 3_600_000).default(30_000),
  /** Keep it below the SOC receiver's --gap-timeout-ms (5 min) so a retried batch is not a gap. */
  parked_retry_ms: int(1000, 86_400_000).default(120_000),
  /** A time without the broker at least this long is a signed `upstream_outage` event once it is reachable again. */
  outage_report_ms: int(1000, 86_400_000).default(60_000),
  /**
   * soc: outbox rows are freed only when the SOC receiver acknowledged them end to end (signed,
   * after its output is durable); the broker's PUBACK only moves the in-flight window. broker:
   * rows are freed on PUBACK (deployments without a Gatewarden receiver).
   */
  ack: z.enum(["soc", "broker"]).default("soc"),
  /** Rows the broker acknowledged but the SOC did not are sent again after this long without SOC progress. */
  soc_ack_timeout_ms: int(500, 86_400_000).default(30_000),
});

export const bufferSchema = z.strictObject({
  path: z.string().min(1).default("data/outbox.db"),
  max_bytes: byteSize.pipe(z.number().int().min(1024 ** 2, "at least 1 MiB")).default(256 * 1024 ** 2),
  flush_ms: int(1, 5000).default(20),
  /** Telemetry waits up to this long for a commit (at most 256 rows of it) while nothing else is pending. */
  low_flush_ms: int(1, 60_000).default(30_000),
  max_pending: int(1, 1_000_000).default(10_000),
  /** How long the start waits for a command holding the outbox to end before it refuses (OUTBOX_LOCKED). */
  lock_wait_ms: int(0, 120_000).default(30_000),
});

export const heartbeatSchema = z.strictObject({
  interval_ms: int(100, 86_400_000).default(60_000),
  /** The event loop held up this long (ms) or longer is a `loop_stall` event (agent/loop-stall.ts). */
  stall_report_ms: int(500, 60_000).default(2000),
});

export const controlSchema = z.strictObject({
  socket: z
    .string()
    .min(1)
    .refine((p) => Buffer.byteLength(p) <= MAX_SOCKET_PATH_BYTES, `at most ${MAX_SOCKET_PATH_BYTES} bytes: a Unix socket's path cannot be longer`)
    .default("run/gatewarden.sock"),
});

export const logSchema = z.strictObject({
  level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
});

/** Synthetic events for demos and end-to-end checks; off unless set. Marked `simulated: true`. */
export const simulateSchema = z.strictObject({
  events_per_s: z.number().min(0).max(100_000).default(0),
});

export const configSchema = z.strictObject({
  device: deviceSchema,
  upstream: upstreamSchema.prefault({}),
  buffer: bufferSchema.prefault({}),
  heartbeat: heartbeatSchema.prefault({}),
  control: controlSchema.prefault({}),
  log: logSchema.prefault({}),
  simulate: simulateSchema.prefault({}),
  /** The Modbus security proxy (protocols/modbus/config.ts); absent: no proxy. */
  modbus: modbusConfigSchema.optional(),
  /** OPC UA servers read for points (protocols/opcua/config.ts); absent: no OPC UA client. */
  opcua: opcuaConfigSchema.optional(),
  /** What each register or node means (agent/config/points.ts); read by the tap and the detectors. */
  points: pointsSchema.optional(),
  /** Detection engine options, site file and state (agent/detection/start.ts); used when points exist. */
  detection: detectionSchema.prefault({}),
  /** Signed updates (firmware-hooks/config.ts); absent: every update is refused. */
  update: updateSchema.optional(),
  /** Self-integrity measurement (firmware-hooks/integrity.ts); absent: nothing is measured. */
  integrity: integritySchema.optional(),
  /** Tamper inputs (cabinet door...) and maintenance windows (firmware-hooks/tamper.ts). */
  tamper: tamperSchema.optional(),
  /** Signed SOC commands over MQTT (firmware-hooks/commands.ts); absent: none is accepted. */
  commands: commandsSchema.optional(),
  /** Declared listeners and posture caching (agent/posture.ts); absent: no undeclared-listener findings. */
  posture: postureSchema.optional(),
}).superRefine((c, ctx) => {
  // References between sections: a point's device must be a proxy upstream or an OPC UA server,
  // a group's members points.
  const upstreams = new Set((c.modbus?.upstreams ?? []).map((u) => u.name));
  const servers = new Set((c.opcua?.servers ?? []).map((s) => s.name));
  for (const [id, p] of Object.entries(c.points ?? {})) {
    if ("opcua" in p.source) {
      if (!servers.has(p.source.opcua.server)) {
        ctx.addIssue({ code: "custom", path: ["points", id, "source", "opcua", "server"], message: c.opcua ? `no opcua server named ${p.source.opcua.server}` : "opcua points need an opcua section with this server" });
      }
      // OPC UA has no passive tap here: a point without an interval would never get a reading.
      if (p.poll_interval_ms === undefined) ctx.addIssue({ code: "custom", path: ["points", id, "poll_interval_ms"], message: "OPC UA points are read by polling: set poll_interval_ms" });
    } else if (!upstreams.has(p.source.modbus.device)) {
      ctx.addIssue({ code: "custom", path: ["points", id, "source", "modbus", "device"], message: c.modbus ? `no modbus upstream named ${p.source.modbus.device}` : "modbus points need a modbus section with this upstream" });
    }
  }
  for (const [name, members] of Object.entries(c.detection.groups)) {
    const seen = new Set<string>();
    members.forEach((m, i) => {
      if (!c.points?.[m]) ctx.addIssue({ code: "custom", path: ["detection", "groups", name, i], message: `no point named ${m}` });
      if (seen.has(m)) ctx.addIssue({ code: "custom", path: ["detection", "groups", name, i], message: `${m} is listed twice` });
      seen.add(m);
    });
  }
});

export type Config = z.output<typeof configSchema>;
