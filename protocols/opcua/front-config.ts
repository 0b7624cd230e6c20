/**
 * The `opcua.front:` section: the secure front that re-exposes one configured upstream server
 * (`server`, an entry of `opcua.servers`) to SCADA and engineering clients.
 *
 * Endpoints are SignAndEncrypt only, with the modern policies only; there is no None endpoint
 * and no anonymous token. Users log in with a name and password (salted scrypt hashes in
 * `users_file`, managed by `gatewarden opcua users`) or an X.509 user certificate mapped by
 * thumbprint or subject (`certificate_users`). Their role decides, node by node, what they may
 * browse, read, subscribe to, write (within bounds) and call. Deny by default.
 *
 * ```yaml
 * opcua:
 *   servers: [{ name: plc, endpoint: "opc.tcp://10.20.0.7:4840", security_mode: None, allow_unsecured: true }]
 *   front:
 *     server: plc
 *     port: 4840
 *     roles:
 *       operator:
 *         nodes:
 *           - { browse_path: "Plant", allow: [browse, read, subscribe] }
 *           - { node_id: "nsu=urn:plc;s=Pump.Speed", allow: [write], min: 0, max: 1500 }
 *         methods: ["Plant/Pump/Start"]
 *         write_rate: { max: 10, interval_ms: 60000 }
 *         request_rate: { max: 600, interval_ms: 60000 }
 *         write_window: required                # writes and calls only inside `gatewarden window open`
 *     certificate_users:
 *       - { thumbprint: "9f3c...", role: engineer }
 * ```
 */
import { z } from "zod";
import { boundsInOrder, rolesDefined, valueBounds, writeWindowSchema } from "../policy-schema";
import { LEGACY_POLICIES, nodeIdSchema, SECURITY_POLICIES } from "./names";

const int = (min: number, max: number) => z.number().int().min(min).max(max);

export const FRONT_ACTIONS = ["browse", "read", "subscribe", "write"] as const;
export type FrontAction = (typeof FRONT_ACTIONS)[number] | "call";

/** A browse path: browse names from the Objects folder, joined by "/", e.g. `Plant/Tank1/Level`. */
const browsePath = z.string().regex(/^[^/]+(\/[^/]+)*$/, "browse names from the Objects folder joined by '/', e.g. Plant/Tank1/Level");

export const nodeRuleSchema = z
  .strictObject({
    node_id: nodeIdSchema.optional(),
    /** The node at this path and everything below it. */
    browse_path: browsePath.optional(),
    /** Every node whose namespace has this URI. */
    namespace: z.string().min(1).optional(),
    allow: z.array(z.enum(FRONT_ACTIONS)).min(1),
    /** Bounds of a written value (numbers only); outside: BadOutOfRange. */
    ...valueBounds,
  })
  .refine((r) => [r.node_id, r.browse_path, r.namespace].filter((x) => x !== undefined).length === 1, "a node rule needs exactly one of node_id, browse_path, namespace")
  .refine((r) => !r.allow.includes("subscribe") || r.allow.includes("read"), { message: "subscribe needs read: a monitored item reads the value it reports", path: ["allow"] })
  .refine((r) => (r.min === undefined && r.max === undefined) || r.allow.includes("write"), { message: "min and max bound writes: add write to allow", path: ["min"] })
  .refine(...boundsInOrder);

const rateSchema = z.strictObject({ max: int(1, 1_000_000), interval_ms: int(1, 86_400_000) });

export const frontRoleSchema = z.strictObject({
  nodes: z.array(nodeRuleSchema).default([]),
  /** Methods this role may call, by node id or browse path; nothing else is callable. */
  methods: z.array(z.union([nodeIdSchema, browsePath])).default([]),
  /** Writes and calls per user per interval; past it: BadTooManyOperations. */
  write_rate: rateSchema.optional(),
  /** Service requests (browse, read, write, call, subscription services; not Publish) per user per interval; past it: BadTooManyOperations. */
  request_rate: rateSchema.optional(),
  /** `required`: writes and calls only while `gatewarden window open --role ROLE` is in force (the Modbus window model). */
  write_window: writeWindowSchema,
});

/** Whether a role may write or call anything at all (a write window for one that cannot would allow nothing). */
export function frontRoleWrites(role: FrontRole): boolean {
  return role.methods.length > 0 || role.nodes.some((n) => n.allow.includes("write"));
}

const certificateUser = z
  .strictObject({
    /** SHA-1 thumbprint (hex, colons allowed) of the user certificate: that certificate only. */
    thumbprint: z.string().regex(/^([0-9a-fA-F]{2}:?){19}[0-9a-fA-F]{2}$/, "a SHA-1 thumbprint: 40 hex digits, colons allowed").optional(),
    /** Subject (e.g. `CN=eng1, O=Water`) of a certificate issued by a CA in the user trust list. */
    subject: z.string().min(1).optional(),
    role: z.string().min(1),
  })
  .refine((c) => (c.thumbprint === undefined) !== (c.subject === undefined), "a certificate user needs exactly one of thumbprint, subject");

export const frontLimitsSchema = z.strictObject({
  /** Largest message and chunk count a client may send, checked before reassembly. */
  max_message_bytes: int(8192, 16 * 1024 ** 2).default(1024 ** 2),
  max_chunk_count: int(1, 1024).default(32),
  /** Open TCP connections (secure channels, open or opening). */
  max_channels: int(1, 1000).default(32),
  /** Open TCP connections from one source address. */
  max_channels_per_address: int(1, 1000).default(8),
  /** Connections and OpenSecureChannel requests per source address (a token bucket), before any login. */
  pre_auth_rate: rateSchema.default({ max: 30, interval_ms: 10_000 }),
  max_sessions: int(1, 1000).default(16),
  max_subscriptions: int(1, 10_000).default(64),
  max_monitored_items: int(1, 100_000).default(5000),
  /** Publish requests queued per session. */
  max_publish_requests: int(1, 100).default(10),
  /** A connection must have its secure channel open (Hello, OpenSecureChannel answered) this long after it was accepted, or the front closes it. */
  handshake_timeout_ms: int(100, 120_000).default(10_000),
  /** A connection with an open secure channel must have an activated session (a logged-in user) this long after the channel opened or its last session closed, or the front closes it. */
  login_timeout_ms: int(1000, 120_000).default(15_000),
});

export const frontSchema = z
  .strictObject({
    /** The upstream (an `opcua.servers` entry) whose address space is re-exposed. */
    server: z.string().min(1),
    host: z.string().min(1).default("0.0.0.0"),
    port: int(0, 65535).default(4840),
    /** Modern policies only: the legacy ones (names.ts) are never offered to clients. */
    security_policies: z
      .array(
        z.enum(SECURITY_POLICIES, {
          error: (iss) => ((LEGACY_POLICIES as readonly unknown[]).includes(iss.input) ? `${String(iss.input)} is deprecated (SHA-1) and never offered on the front; use ${SECURITY_POLICIES.join(", ")}` : `must be one of ${SECURITY_POLICIES.join(", ")}`),
        }),
      )
      .min(1)
      .default([...SECURITY_POLICIES]),
    /** Upstream nodes mirrored with everything below them (default: the Objects folder). */
    roots: z.array(nodeIdSchema).min(1).default(["i=85"]),
    /** Mirrored nodes at most; past it the mirror stops and says so. */
    max_nodes: int(1, 50_000).default(5000),
    users_file: z.string().min(1).default("data/opcua-users.json"),
    certificate_users: z.array(certificateUser).default([]),
    roles: z.record(z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "letters, digits, '_', '.' or '-', at most 64"), frontRoleSchema).default({}),
    limits: frontLimitsSchema.prefault({}),
    /** Event flood bounds, as for the Modbus proxy. */
    events: z.strictObject({ interval_ms: int(100, 3_600_000).default(10_000), per_key: int(1, 1000).default(3) }).prefault({}),
  })
  .superRefine((f, ctx) => rolesDefined(ctx, "certificate_users", f.certificate_users, f.roles));

export type FrontConfig = z.output<typeof frontSchema>;
export type FrontRole = z.output<typeof frontRoleSchema>;
export type NodeRule = z.output<typeof nodeRuleSchema>;
