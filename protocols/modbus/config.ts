/**
 * The `modbus:` section of the daemon config. Checked once at load, no I/O (the policy file
 * named by `policy_file` is read when the service starts). snake_case, units in names.
 *
 * ```yaml
 * modbus:
 *   listeners:
 *     - { name: plain, type: tcp, listen: "0.0.0.0:502" }
 *     - name: secure
 *       type: tls
 *       listen: "0.0.0.0:802"
 *       tls: { cert_file: /etc/gatewarden/mbs.crt, key_file: /etc/gatewarden/mbs.key, ca_file: /etc/gatewarden/ca.crt }
 *   upstreams:
 *     - { name: plc1, type: tcp, target: "10.0.0.20:502" }
 *     - { name: bus1, type: rtu, device: /dev/ttyUSB0, baud: 19200, parity: even }
 *     - { name: dsrv, type: rtu_tcp, target: "10.0.0.30:4001" }
 *   routes:
 *     - { unit: 1, upstream: plc1 }
 *     - { listener: secure, unit: "10-19", upstream: bus1 }
 *     - { unit: 20, upstream: dsrv, remote_unit: 1 }
 *   policy_file: /etc/gatewarden/modbus-policy.yaml   # or `policy:` inline
 * ```
 */
import { z } from "zod";
import { hostPortProblem } from "../../agent/core/host-port";
import { parseRange, rangeSchema } from "./policy/ranges";
import { policySchema } from "./policy/schema";

/** HOST:PORT with a port from 1 to 65535 (0 too for a listener: any free port). */
const hostPort = (o: { listen: boolean }) =>
  z.string().superRefine((s, ctx) => {
    const problem = hostPortProblem(s, o);
    if (problem) ctx.addIssue({ code: "custom", message: problem });
  });

const tlsSchema = z.strictObject({
  cert_file: z.string().min(1),
  key_file: z.string().min(1),
  ca_file: z.string().min(1),
  /** Certificate revocation list (PEM) of the CA; revoked client certificates are refused (and,
   * when a new one is loaded, their open connections closed). */
  crl_file: z.string().min(1).optional(),
  min_version: z.enum(["TLSv1.2", "TLSv1.3"]).default("TLSv1.2"),
  handshake_timeout_ms: z.number().int().min(100).default(10_000),
  /** How often the files are checked for changes; changed files are reloaded for new
   * connections, and open ones whose client certificate they revoke or no longer trust are
   * closed. 0: never. */
  reload_check_ms: z
    .number()
    .int()
    .min(0)
    .refine((v) => v === 0 || v >= 100, "0 (off) or at least 100")
    .default(10_000),
});

export const listenerSchema = z.discriminatedUnion("type", [
  z.strictObject({ name: z.string().min(1), type: z.literal("tcp"), listen: hostPort({ listen: true }).default("0.0.0.0:502") }),
  z.strictObject({ name: z.string().min(1), type: z.literal("tls"), listen: hostPort({ listen: true }).default("0.0.0.0:802"), tls: tlsSchema }),
]);

const backoff = z.strictObject({ min_ms: z.number().int().min(1).default(500), max_ms: z.number().int().min(1).default(30_000) });

/**
 * Serial broadcast (unit 0): off unless set. With it on, a client's write to unit 0 (routed
 * here, and allowed by a policy role whose units include 0) goes out as a broadcast and is
 * answered after `turnaround_ms` (see upstream/rtu-bus.ts).
 */
/**
 * After a response timeout the line is held quiet this long (default half of timeout_ms) and
 * what is heard meanwhile is dropped: RTU has no transaction ids, so a slave's late answer must
 * not be taken for the answer to the next request (see upstream/rtu-bus.ts).
 */
const lateAnswerKeys = { late_answer_ms: z.number().int().min(0).max(60_000).optional() };

const broadcastKeys = {
  broadcast: z.boolean().default(false),
  /** Bus turnaround delay after a broadcast (Modbus over Serial Line §2.4.1: typically 100-200 ms). */
  turnaround_ms: z.number().int().min(1).max(10_000).default(200),
};

export const upstreamSchema = z.discriminatedUnion("type", [
  z.strictObject({
    name: z.string().min(1),
    type: z.literal("tcp"),
    target: hostPort({ listen: false }),
    connections: z.number().int().min(1).max(16).default(1),
    /** Transactions in flight per connection; many devices handle only 1. */
    max_in_flight: z.number().int().min(1).max(256).default(1),
    max_queue: z.number().int().min(1).default(256),
    timeout_ms: z.number().int().min(1).default(1000),
    connect_timeout_ms: z.number().int().min(1).default(3000),
    reconnect: backoff.default({ min_ms: 500, max_ms: 30_000 }),
  }),
  z.strictObject({
    name: z.string().min(1),
    type: z.literal("rtu"),
    device: z.string().min(1),
    baud: z.number().int().min(300).max(921_600).default(19_200),
    parity: z.enum(["none", "even", "odd"]).default("even"),
    data_bits: z.union([z.literal(7), z.literal(8)]).default(8),
    stop_bits: z.union([z.literal(1), z.literal(2)]).default(1),
    timeout_ms: z.number().int().min(1).default(500),
    ...broadcastKeys,
    ...lateAnswerKeys,
    dead_after: z.number().int().min(1).default(3),
    dead_backoff: backoff.default({ min_ms: 2000, max_ms: 60_000 }),
    max_queue: z.number().int().min(1).default(64),
    reconnect: backoff.default({ min_ms: 1000, max_ms: 30_000 }),
  }),
  z.strictObject({
    name: z.string().min(1),
    type: z.literal("rtu_tcp"),
    target: hostPort({ listen: false }),
    baud: z.number().int().min(300).max(921_600).default(19_200),
    timeout_ms: z.number().int().min(1).default(1000),
    ...broadcastKeys,
    ...lateAnswerKeys,
    dead_after: z.number().int().min(1).default(3),
    dead_backoff: backoff.default({ min_ms: 2000, max_ms: 60_000 }),
    max_queue: z.number().int().min(1).default(64),
    connect_timeout_ms: z.number().int().min(1).default(3000),
    reconnect: backoff.default({ min_ms: 1000, max_ms: 30_000 }),
  }),
]);

const unitRange = rangeSchema(255, "unit range");

export const routeSchema = z.strictObject({
  /** Listener name; omitted means every listener. */
  listener: z.string().min(1).optional(),
  unit: unitRange,
  upstream: z.string().min(1),
  /** Unit id on the upstream; omitted means the same as the client's. Only for a single unit. */
  remote_unit: z.number().int().min(0).max(255).optional(),
});

export const limitsSchema = z.strictObject({
  max_connections: z.number().int().min(1).default(64),
  max_connections_per_identity: z.number().int().min(1).default(8),
  /** Connections of clients no identity rule matches (all of them, per listener); never more
   * than half of max_connections, so known clients always keep the rest. */
  max_unknown_connections: z.number().int().min(0).default(16),
  idle_timeout_ms: z.number().int().min(100).default(300_000),
  /** An unknown client's connection that sends nothing for this long is closed. */
  unknown_idle_timeout_ms: z.number().int().min(100).default(3_000),
  /** A started frame must be complete within this time (slow-loris). */
  frame_timeout_ms: z.number().int().min(10).default(5_000),
  max_outstanding: z.number().int().min(1).max(256).default(16),
  /** Requests per second per client identity (certificate on TLS, source address on plain
   * TCP), shared by all its connections (bursts of one second's worth); 0: unlimited. Past it
   * the proxy stops reading that client's connections, so a flood costs it no CPU. Counted
   * for at most 4096 identities; idle ones are forgotten, and while all are busy a new
   * identity's requests wait. */
  max_requests_per_s: z.number().int().min(0).default(1000),
  max_buffered_bytes: z.number().int().min(260).default(8192),
});

export const modbusConfigSchema = z
  .strictObject({
    listeners: z.array(listenerSchema).default([]),
    upstreams: z.array(upstreamSchema).default([]),
    routes: z.array(routeSchema).default([]),
    policy: policySchema.optional(),
    policy_file: z.string().min(1).optional(),
    limits: limitsSchema.default(limitsSchema.parse({})),
    events: z
      .strictObject({
        interval_ms: z.number().int().min(100).default(10_000),
        per_key: z.number().int().min(1).default(3),
        max_keys: z.number().int().min(1).default(256),
        scan_threshold: z.number().int().min(2).default(20),
        storm_threshold: z.number().int().min(2).default(200),
      })
      .default({ interval_ms: 10_000, per_key: 3, max_keys: 256, scan_threshold: 20, storm_threshold: 200 }),
    windows: z
      .strictObject({
        max_minutes: z.number().int().min(1).max(24 * 60).default(240),
        /** Most windows open at once; opening one more fails. */
        max_open: z.number().int().min(1).max(256).default(16),
        /** SQLite file keeping open windows across restarts (the daemon; relative to the config file). */
        state_path: z.string().min(1).default("data/modbus.db"),
      })
      .default({ max_minutes: 240, max_open: 16, state_path: "data/modbus.db" }),
  })
  .superRefine((c, ctx) => {
    if (c.policy && c.policy_file) ctx.addIssue({ code: "custom", path: ["policy_file"], message: "give either policy or policy_file, not both" });
    const names = (l: { name: string }[], key: string) => {
      const seen = new Set<string>();
      l.forEach((x, i) => {
        if (seen.has(x.name)) ctx.addIssue({ code: "custom", path: [key, i, "name"], message: `duplicate name ${x.name}` });
        seen.add(x.name);
      });
      return seen;
    };
    const ls = names(c.listeners, "listeners");
    const us = names(c.upstreams, "upstreams");
    c.routes.forEach((r, i) => {
      if (!us.has(r.upstream)) ctx.addIssue({ code: "custom", path: ["routes", i, "upstream"], message: `no upstream named ${r.upstream}` });
      // A broadcast must be what the client asked for (unit 0, which the policy then checks),
      // never what a route turns another unit into.
      const up = c.upstreams.find((u) => u.name === r.upstream);
      if (r.remote_unit === 0 && up && up.type !== "tcp" && r.unit !== 0 && r.unit !== "0")
        ctx.addIssue({ code: "custom", path: ["routes", i, "remote_unit"], message: "remote_unit 0 is the serial broadcast address; route unit 0 to reach it" });
      if (r.listener && !ls.has(r.listener)) ctx.addIssue({ code: "custom", path: ["routes", i, "listener"], message: `no listener named ${r.listener}` });
      if (typeof r.unit === "string") {
        const [a, b] = parseRange(r.unit);
        if (b !== a && r.remote_unit !== undefined) ctx.addIssue({ code: "custom", path: ["routes", i, "remote_unit"], message: "remote_unit needs a single unit" });
      }
    });
  });

export type ModbusConfig = z.output<typeof modbusConfigSchema>;
export type ModbusConfigInput = z.input<typeof modbusConfigSchema>;
export type ListenerConfig = z.output<typeof listenerSchema>;
export type UpstreamConfig = z.output<typeof upstreamSchema>;
export type LimitsConfig = z.output<typeof limitsSchema>;

