/**
 * The `points` section of the daemon config: what each register or OPC UA node means.
 * Checked once at load (no I/O); the TS type comes from the schema.
 */
import { z } from "zod";
import { DaemonError } from "../agent/core/errors";
import { nodeIdSchema } from "../protocols/opcua/config";
import { POINT_KINDS } from "./kinds";

export const REGISTER_TYPES = ["int16", "uint16", "int32", "uint32", "float32"] as const;
export type RegisterType = (typeof REGISTER_TYPES)[number];

export const modbusSourceSchema = z.strictObject({
  /** Upstream device name as configured for the proxy. */
  device: z.string().min(1),
  unit: z.number().int().min(0).max(255),
  table: z.enum(["coil", "discrete_input", "input", "holding"]),
  /** Zero-based register or coil address. */
  address: z.number().int().min(0).max(65535),
  type: z.enum(REGISTER_TYPES).default("uint16"),
  /** For 32-bit types: `big` = high word first (Modbus convention), `little` = low word first. */
  word_order: z.enum(["big", "little"]).default("big"),
  scale: z.number().finite().default(1),
  offset: z.number().finite().default(0),
});

export const opcuaSourceSchema = z.strictObject({
  /** OPC UA server name as configured in `opcua.servers`. */
  server: z.string().min(1),
  node_id: nodeIdSchema,
  scale: z.number().finite().default(1),
  offset: z.number().finite().default(0),
});

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
export type ModbusSource = z.infer<typeof modbusSourceSchema>;
export type OpcuaSource = z.infer<typeof opcuaSourceSchema>;

export function registerCount(type: RegisterType): 1 | 2 {
  return type === "int16" || type === "uint16" ? 1 : 2;
}

/**
 * Decodes the raw words of a Modbus point (registers, or 0/1 for coils and discrete inputs) to
 * its engineering value: data type, word order, then `value * scale + offset`.
 * Throws DaemonError INPUT_INVALID when too few words are given.
 */
export function decodeRegisters(src: ModbusSource, words: readonly number[]): number {
  if (src.table === "coil" || src.table === "discrete_input") {
    const b = words[0];
    if (b === undefined) throw new DaemonError("INPUT_INVALID", `no bit for ${src.device}/${src.unit}/${src.table}/${src.address}`);
    return (b ? 1 : 0) * src.scale + src.offset;
  }
  const need = registerCount(src.type);
  if (words.length < need) {
    throw new DaemonError("INPUT_INVALID", `${src.type} needs ${need} registers, got ${words.length}`);
  }
  const w0 = words[0]! & 0xffff;
  const w1 = (words[1] ?? 0) & 0xffff;
  const [hi, lo] = src.word_order === "big" ? [w0, w1] : [w1, w0];
  let raw: number;
  switch (src.type) {
    case "uint16":
      raw = w0;
      break;
    case "int16":
      raw = w0 >= 0x8000 ? w0 - 0x10000 : w0;
      break;
    case "uint32":
      raw = hi * 0x10000 + lo;
      break;
    case "int32":
      raw = ((hi << 16) | lo) | 0;
      break;
    case "float32": {
      const dv = new DataView(new ArrayBuffer(4));
      dv.setUint16(0, hi);
      dv.setUint16(2, lo);
      raw = dv.getFloat32(0);
      break;
    }
  }
  return raw * src.scale + src.offset;
}

/** Decodes a point's value, or null for OPC UA points (their values arrive already typed). */
export function decodePoint(p: PointConfig, words: readonly number[]): number | null {
  return "modbus" in p.source ? decodeRegisters(p.source.modbus, words) : null;
}
