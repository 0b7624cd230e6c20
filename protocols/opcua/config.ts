/**
 * The `opcua:` section of the daemon config: OPC UA servers whose variables the daemon reads
 * for its points. Checked at load without loading the OPC UA stack (it is imported only when
 * this section exists).
 *
 * Security by default: SignAndEncrypt with Basic256Sha256. `Sign` is allowed; `None` only with
 * `allow_unsecured: true`, for a device beside the gateway that offers nothing else. The
 * deprecated Basic128Rsa15 and Basic256 policies only with `allow_legacy_policy: true` (names.ts). The server's certificate is
 * trusted only when configured (`server_certificate`) or placed in the PKI's trusted folder:
 * an unknown one is refused, saved under `<pki_dir>/rejected/` and reported with its thumbprint.
 */
import { z } from "zod";
import { urlPortCheck } from "../../agent/core/host-port";

export { LEGACY_POLICIES, NODE_ID, nodeIdSchema, SECURITY_POLICIES } from "./names";
import { LEGACY_POLICIES, SECURITY_POLICIES } from "./names";
import { frontSchema } from "./front-config";

const int = (min: number, max: number) => z.number().int().min(min).max(max);

const passwordUser = z.strictObject({ username: z.string().min(1).max(256), password_file: z.string().min(1) });
const certificateUser = z.strictObject({ certificate_file: z.string().min(1), key_file: z.string().min(1) });
type OpcuaUser = z.output<typeof passwordUser> | z.output<typeof certificateUser>;

/**
 * `{ username, password_file }` or `{ certificate_file, key_file }`, told apart by their keys,
 * so that an error names the field that is wrong (a plain union would only say "invalid").
 */
const userSchema = z.unknown().transform((v, ctx): OpcuaUser => {
  const certificate = typeof v === "object" && v !== null && ("certificate_file" in v || "key_file" in v);
  const r = (certificate ? certificateUser : passwordUser).safeParse(v);
  if (r.success) return r.data;
  for (const issue of r.error.issues) ctx.addIssue({ ...issue } as Parameters<typeof ctx.addIssue>[0]);
  return z.NEVER;
});

export const opcuaServerSchema = z
  .strictObject({
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "letters, digits, '_', '.' or '-', at most 64"),
    endpoint: z
      .string()
      .regex(/^opc\.tcp:\/\/[^/\s:]+(:\d{1,5})?(\/\S*)?$/, "must be opc.tcp://HOST[:PORT][/PATH]")
      .superRefine(urlPortCheck(/^opc\.tcp:\/\/[^/\s:]+:(\d+)/)),
    security_mode: z.enum(["SignAndEncrypt", "Sign", "None"]).default("SignAndEncrypt"),
    security_policy: z.enum([...SECURITY_POLICIES, ...LEGACY_POLICIES], { error: () => `must be one of ${SECURITY_POLICIES.join(", ")} (or, with allow_legacy_policy: true, ${LEGACY_POLICIES.join(", ")})` }).default("Basic256Sha256"),
    /** Required to accept security_mode None: nothing on the link is signed or encrypted. */
    allow_unsecured: z.boolean().default(false),
    /** Required to use Basic256 or Basic128Rsa15 (SHA-1): reported as a posture finding. */
    allow_legacy_policy: z.boolean().default(false),
    /** The server's certificate (PEM or DER) to trust. */
    server_certificate: z.string().min(1).optional(),
    /**
     * Who the session acts as: a user name with its password in a file (0600), or an X.509
     * user certificate with its RSA key in a file (0600). Absent: anonymous.
     */
    user: userSchema.optional(),
    request_timeout_ms: int(100, 120_000).default(5000),
    /** Connection, secure channel and session must be open within this, or the attempt is dropped. */
    connect_timeout_ms: int(500, 300_000).default(15_000),
    /**
     * How this server's points are read: `subscription` (monitored items, sampling interval =
     * the point's interval), `poll` (Read requests), or `auto`: a subscription, polling in a
     * session in which the server does not create one.
     */
    points_mode: z.enum(["auto", "subscription", "poll"]).default("auto"),
    /** Nodes per Read request (and monitored items per create request); a server may lower it (OperationLimits). */
    max_nodes_per_read: int(1, 10_000).default(500),
    reconnect_min_ms: int(100, 600_000).default(1000),
    reconnect_max_ms: int(1000, 3_600_000).default(60_000),
  })
  .refine((s) => s.security_mode !== "None" || s.allow_unsecured, {
    message: "security_mode None sends everything in clear and unauthenticated: set allow_unsecured: true to accept that",
    path: ["security_mode"],
  })
  .superRefine((s, ctx) => {
    if (!(LEGACY_POLICIES as readonly string[]).includes(s.security_policy) || s.allow_legacy_policy) return;
    ctx.addIssue({ code: "custom", path: ["security_policy"], message: `${s.security_policy} is deprecated (SHA-1) and refused; use ${SECURITY_POLICIES.join(", ")}, or set allow_legacy_policy: true for a device that offers nothing newer (reported as a posture finding)` });
  })
  .refine((s) => s.reconnect_min_ms <= s.reconnect_max_ms, { message: "reconnect_min_ms must not exceed reconnect_max_ms", path: ["reconnect_min_ms"] });

export const opcuaConfigSchema = z
  .strictObject({
    /** The client's certificate store: own certificate and key (made on first start), trusted, rejected. */
    pki_dir: z.string().min(1).default("data/opcua-pki"),
    /** Bounds on what a server may send, checked before anything is decoded. */
    max_message_bytes: int(64 * 1024, 64 * 1024 ** 2).default(4 * 1024 ** 2),
    max_chunk_count: int(1, 4096).default(64),
    servers: z.array(opcuaServerSchema).min(1).max(64),
    /** The gateway's own application certificate (own-cert.ts): URI urn:gatewarden:<device-id>. */
    certificate: z
      .strictObject({
        /** X.500 subject, `/CN=.../O=...`; default `/CN=Gatewarden <device-id>/O=Gatewarden`. */
        subject: z.string().regex(/^(\/[A-Za-z]{1,16}=[^/]{1,128}){1,12}$/, "an X.500 subject such as /CN=Gatewarden cab-17/O=Water Utility").optional(),
        validity_days: int(1, 730).default(730),
      })
      .prefault({}),
    /** The OPC UA process (agent/opcua-process.ts): its memory ceiling and restart back-off. */
    process: z
      .strictObject({
        /** RSS above this (sampled every 2 s) kills the process; it is restarted with back-off. */
        max_rss_mb: int(64, 4096).default(320),
        /** No message from it this long (it says it is alive every 2 s): it is stuck, and killed. */
        unresponsive_ms: int(5000, 600_000).default(60_000),
        restart_min_ms: int(100, 600_000).default(1000),
        restart_max_ms: int(1000, 3_600_000).default(60_000),
      })
      .refine((p) => p.restart_min_ms <= p.restart_max_ms, { message: "restart_min_ms must not exceed restart_max_ms", path: ["restart_min_ms"] })
      .prefault({}),
    /** The secure front re-exposing one of the servers (front-config.ts); absent: no front. */
    front: frontSchema.optional(),
  })
  .superRefine((c, ctx) => {
    const seen = new Set<string>();
    c.servers.forEach((s, i) => {
      if (seen.has(s.name)) ctx.addIssue({ code: "custom", path: ["servers", i, "name"], message: `server name ${s.name} is used twice` });
      seen.add(s.name);
    });
    if (c.front && !seen.has(c.front.server)) ctx.addIssue({ code: "custom", path: ["front", "server"], message: `no opcua server named ${c.front.server}` });
  });

export type OpcuaConfig = z.output<typeof opcuaConfigSchema>;
export type OpcuaServerConfig = z.output<typeof opcuaServerSchema>;
