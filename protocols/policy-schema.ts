/**
 * Schema pieces the Modbus policy (`modbus/policy/schema.ts`) and the OPC UA front's roles
 * (`opcua/front-config.ts`) share, so a bound, a window or a role reference reads and fails alike on both.
 */
import { z, type RefinementCtx } from "zod";

/** Bounds of a written value; outside them the write is denied. */
export const valueBounds = { min: z.number().optional(), max: z.number().optional() };

/** min above max would deny every write: a typo, never a policy. For `.refine(...boundsInOrder)`. */
export const boundsInOrder: [(v: { min?: number; max?: number }) => boolean, { message: string; path: string[] }] = [
  (v) => v.min === undefined || v.max === undefined || v.min <= v.max,
  { message: "min is above max: no value could be written", path: ["max"] },
];

/** `required`: writes only while `gatewarden window open --role ROLE` is in force. */
export const writeWindowSchema = z.enum(["required", "none"]).default("none");

/** Each entry of `list` (under the key `key`) names a role defined under `roles`. */
export function rolesDefined(ctx: RefinementCtx, key: string, list: readonly { role: string }[], roles: Record<string, unknown>): void {
  list.forEach((e, i) => {
    if (!(e.role in roles)) ctx.addIssue({ code: "custom", path: [key, i, "role"], message: `role ${e.role} is not defined under roles` });
  });
}
