/**
 * A Modbus point's source (`points.<id>.source.modbus`): device, unit, table, address and how
 * its words decode to an engineering value. The poller and the passive tap read points with it.
 */
import { z } from "zod";
import { DaemonError } from "../../agent/core/errors";

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

export type ModbusSource = z.infer<typeof modbusSourceSchema>;

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
