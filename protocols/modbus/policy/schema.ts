/**
 * The policy file (YAML or JSON). Deny by default: a request is allowed only when its
 * identity maps to a role and every clause below allows it. Unknown keys are errors.
 *
 * ```yaml
 * identities:                      # first match wins; a TLS role with the same name as a
 *   - match: { address: 10.1.0.10/32 }    #   role below is used when no entry matches.
 *     role: scada                          # address-only: plain TCP clients; entries with
 *   - match: { fingerprint: "AB:CD:..." }  #   role/fingerprint/subject: TLS clients only
 *     role: engineering                    # or subject: "CN=eng1,O=Water", or role: operator
 * roles:
 *   scada:
 *     units: [1, "10-12"]
 *     functions: [read-only]        # presets read-only | read-write | programming, or codes
 *     read: { holding: ["0-199"], input: ["0-99"], coil: ["0-31"] }
 *   engineering:
 *     units: [1]
 *     functions: [read-write]
 *     read: { holding: ["0-199"] }
 *     write: { holding: ["100-109"], coil: ["0-3"] }
 *     values:
 *       - { table: holding, address: "100-101", min: 0, max: 5000 }
 *       - { table: coil, address: 3, allowed: [0] }
 *     write_rate: { max: 10, interval_ms: 60000 }
 *     write_window: required         # writes only while `gatewarden window open` is in force
 * ```
 */
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { z } from "zod";
import { parseYamlFile } from "../../../agent/core/issues";
import { DaemonError } from "../../../agent/core/errors";
import { boundsInOrder, rolesDefined, valueBounds, writeWindowSchema } from "../../policy-schema";
import { PRESETS } from "../codec/function-codes";
import { rangeSchema } from "./ranges";

const rangeString = rangeSchema(0xffff, "range");
const unitRange = rangeSchema(255, "unit range");
const fileRange = z.strictObject({ file: z.number().int().min(1).max(0xffff), records: rangeString });

const tables = z.strictObject({
  coil: z.array(rangeString).optional(),
  discrete_input: z.array(rangeString).optional(),
  input: z.array(rangeString).optional(),
  holding: z.array(rangeString).optional(),
  file: z.array(fileRange).optional(),
});
const writeTables = z.strictObject({
  coil: z.array(rangeString).optional(),
  holding: z.array(rangeString).optional(),
  file: z.array(fileRange).optional(),
});

const valueRule = z
  .strictObject({
    table: z.enum(["coil", "holding"]),
    address: rangeString,
    type: z.enum(["uint16", "int16"]).default("uint16"),
    ...valueBounds,
    allowed: z.array(z.number()).min(1).optional(),
  })
  .refine((v) => v.min !== undefined || v.max !== undefined || v.allowed !== undefined, "a value rule needs min, max or allowed")
  .refine(...boundsInOrder);

/** An IPv4 or IPv6 address, or a CIDR block of one (`10.1.0.0/24`, `fd00::/64`). */
const addressOrCidr = z.string().refine((s) => {
  const [ip, bits, extra] = s.split("/");
  const v = isIP(ip ?? "");
  if (!v || extra !== undefined) return false;
  if (bits === undefined) return true;
  return /^\d{1,3}$/.test(bits) && Number(bits) <= (v === 4 ? 32 : 128);
}, "expected an IP address or CIDR block, e.g. 10.1.0.10 or 10.1.0.0/24");

export const roleSchema = z.strictObject({
  units: z.array(unitRange).min(1),
  functions: z.array(z.union([z.enum(Object.keys(PRESETS) as [keyof typeof PRESETS, ...(keyof typeof PRESETS)[]]), z.number().int().min(1).max(127)])).min(1),
  /** FC 8 sub-functions allowed when FC 8 is; default: those that do not change state. */
  diagnostics: z.array(z.number().int().min(0).max(0xffff)).optional(),
  read: tables.default({}),
  write: writeTables.default({}),
  values: z.array(valueRule).default([]),
  write_rate: z.strictObject({ max: z.number().int().min(1), interval_ms: z.number().int().min(1) }).optional(),
  write_window: writeWindowSchema,
});

const identitySchema = z.strictObject({
  match: z
    .strictObject({
      address: z.union([addressOrCidr, z.array(addressOrCidr).min(1)]).optional(),
      role: z.string().min(1).optional(),
      fingerprint: z.string().min(1).optional(),
      subject: z.string().min(1).optional(),
      /** Which clients the entry can match; by default address-only entries match plain TCP
       * clients and entries with certificate fields match TLS clients. */
      transport: z.enum(["tcp", "tls", "any"]).optional(),
    })
    .refine((m) => m.address !== undefined || m.role !== undefined || m.fingerprint !== undefined || m.subject !== undefined, "match needs at least one of address, role, fingerprint, subject"),
  role: z.string().min(1),
  name: z.string().min(1).optional(),
});

export const policySchema = z
  .strictObject({
    version: z.literal(1).default(1),
    identities: z.array(identitySchema).default([]),
    /** When no identity entry matches, use a certificate role of the same name as a role here. */
    certificate_roles: z.enum(["map_by_name", "ignore"]).default("map_by_name"),
    roles: z.record(z.string().min(1), roleSchema).default({}),
  })
  .superRefine((p, ctx) => rolesDefined(ctx, "identities", p.identities, p.roles));

export type PolicyFile = z.output<typeof policySchema>;
export type PolicyInput = z.input<typeof policySchema>;
export type RoleConfig = z.output<typeof roleSchema>;

/** Dotted key path of a zod issue, e.g. `roles.scada.read.holding[2]`. */
export function keyPath(path: readonly PropertyKey[]): string {
  let s = "";
  for (const p of path) s += typeof p === "number" ? `[${p}]` : s ? `.${String(p)}` : String(p);
  return s || "(root)";
}

export function zodMessage(err: z.ZodError, prefix = ""): string {
  return err.issues.map((i) => `${prefix}${keyPath(i.path)}: ${i.message}`).join("; ");
}

/** Validate a parsed policy object; throws POLICY_INVALID naming the key path. */
export function parsePolicy(obj: unknown, source = "policy"): PolicyFile {
  const r = policySchema.safeParse(obj ?? {});
  if (!r.success) throw new DaemonError("POLICY_INVALID", `${source}: ${zodMessage(r.error)}`);
  return r.data;
}

/** Parse policy text (YAML, of which JSON is a subset); POLICY_INVALID names file, line and key. */
export function parsePolicyText(text: string, source = "policy"): PolicyFile {
  return parseYamlFile(text, source, policySchema, "POLICY_INVALID");
}

/** Read and validate a policy file (the daemon at start and reload, `config validate`, the CLI). */
export function readPolicyFile(path: string): PolicyFile {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new DaemonError("POLICY_INVALID", `policy file ${path} cannot be read (${(e as NodeJS.ErrnoException).code ?? "error"})`, { cause: e });
  }
  return parsePolicyText(text, path);
}
