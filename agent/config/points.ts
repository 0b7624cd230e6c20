/**
 * The `points` section of the daemon config: what each register or OPC UA node means, composed
 * from each protocol's point source (protocols/modbus/points.ts, protocols/opcua/points.ts) and
 * the signal kinds of detectors/kinds.ts. Checked once at load (no I/O); the TS type comes from
 * the schema.
 */
import { z } from "zod";
import { decodeRegisters, modbusSourceSchema, registerCount } from "../../protocols/modbus/points";
import { opcuaSourceSchema } from "../../protocols/opcua/points";
import { POINT_KINDS } from "../../detectors/kinds";

export const pointSchema = z
  .strictObject({
    source: z.union([z.strictObject({ modbus: modbusSourceSchema }), z.strictObject({ opcua: opcuaSourceSchema })]),
    /** Engineering unit after scale and offset, e.g. `m`, `L/s`, `kWh`. */
    unit: z.string().min(1),
    kind: z.enum(POINT_KINDS),
    /** Poll the point this often through the proxy's upstreams; unset: passive tap only. */
    poll_interval_ms: z.number().int().min(10).max(86_400_000).optional(),
    range: z.strictObject({ min: z.number().finite(), max: z.number().finite() }),
    /** Physical limit on change, units per second (rate of change, counters). */
    max_rate_per_s: z.number().positive().optional(),
    /** Counters: the value after which the register wraps to 0. */
    rollover_at: z.number().positive().optional(),
    /** Overrides the per-kind tolerance of the stuck detector. */
    stuck_tolerance: z.number().min(0).optional(),
  })
  .refine((p) => p.range.min < p.range.max, { message: "range.min must be below range.max", path: ["range"] })
  .refine((p) => !("modbus" in p.source) || registerCount(p.source.modbus.type) === 1 || p.source.modbus.table === "holding" || p.source.modbus.table === "input", {
    message: "32-bit types need a register table (holding or input)",
    path: ["source", "modbus", "type"],
  });

export const pointsSchema = z.record(z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/), pointSchema);

export type PointConfig = z.infer<typeof pointSchema>;
export type PointsConfig = z.infer<typeof pointsSchema>;

/** Decodes a point's value, or null for OPC UA points (their values arrive already typed). */
export function decodePoint(p: PointConfig, words: readonly number[]): number | null {
  return "modbus" in p.source ? decodeRegisters(p.source.modbus, words) : null;
}
