/**
 * The passive readings tap: values that pass through the proxy for configured points become
 * `Reading`s, and allowed writes become `WriteObservation`s, for the detectors. No extra
 * polling of fragile devices. Points are matched by (device = upstream name, remote unit,
 * table, address); multi-register types need every word in the same response.
 */
import type { ReadingSink } from "../../agent/core/readings";
import { decodeRegisters, registerCount, type ModbusSource } from "./points";

export type TapTable = ModbusSource["table"];

/** The tap's view of a point (the daemon's points schema maps onto this). */
export interface TapPoint {
  id: string;
  device: string;
  unit: number;
  table: TapTable;
  address: number;
  type: "bool" | "int16" | "uint16" | "int32" | "uint32" | "float32";
  /** "big": high word first (Modbus convention); "little": low word first. */
  word_order: "big" | "little";
  scale: number;
  offset: number;
}

const words = (t: TapPoint["type"]): number => (t === "bool" ? 1 : registerCount(t));

/** Decode one point from the raw 16-bit words (or bits) starting at its address. */
export function decodePoint(p: TapPoint, raw: readonly number[]): number {
  // One decoder for the whole project: the points schema's (a `bool` is a bit or a raw word).
  return decodeRegisters({ ...p, type: p.type === "bool" ? "uint16" : p.type }, raw);
}

export class ReadingsTap {
  private readonly index = new Map<string, TapPoint[]>();
  /** By device and table, whatever the unit: what a serial broadcast (unit 0) reaches. */
  private readonly byDevice = new Map<string, TapPoint[]>();
  /**
   * @param notFinite called for a point whose words decode to NaN or an infinity (a float
   *   register's way of saying the sensor failed, or a wrong type or word order): the reading is
   *   not passed on, and the caller reports it.
   */
  constructor(
    points: readonly TapPoint[],
    private readonly sink: ReadingSink,
    private readonly notFinite?: (p: TapPoint, value: number) => void,
  ) {
    const add = (m: Map<string, TapPoint[]>, k: string, p: TapPoint): void => void m.set(k, [...(m.get(k) ?? []), p]);
    for (const p of points) {
      add(this.index, `${p.device}|${p.unit}|${p.table}`, p);
      add(this.byDevice, `${p.device}|${p.table}`, p);
    }
  }

  get empty(): boolean {
    return this.index.size === 0;
  }

  /** Values read from `device`/`unit`/`table` starting at `address`. */
  read(device: string, unit: number, table: TapTable, address: number, values: readonly number[], ts: number): void {
    const pts = this.index.get(`${device}|${unit}|${table}`);
    if (!pts) return;
    for (const p of pts) {
      const n = words(p.type);
      const i = p.address - address;
      if (i < 0 || i + n > values.length) continue;
      const value = decodePoint(p, values.slice(i, i + n));
      if (!Number.isFinite(value)) {
        try {
          this.notFinite?.(p, value);
        } catch {
          /* see below: never let it break forwarding */
        }
        continue;
      }
      try {
        this.sink.reading({ point: p.id, value, ts, source: `tap:${device}/u${unit}/${table}/${p.address}`, quality: "good" });
      } catch {
        /* ReadingSink must not throw; never let it break forwarding */
      }
    }
  }

  /**
   * A write the device acknowledged. A broadcast (unit 0, which every slave of a serial bus
   * executes) covers the points of every unit of the device at those addresses.
   */
  write(w: { identity: string; device: string; unit: number; table: "coil" | "holding"; address: number; values: readonly number[]; ts: number }): void {
    const pts = (w.unit === 0 ? this.byDevice.get(`${w.device}|${w.table}`) : this.index.get(`${w.device}|${w.unit}|${w.table}`)) ?? [];
    const covered = pts.filter((p) => p.address < w.address + w.values.length && p.address + words(p.type) > w.address).map((p) => p.id);
    try {
      this.sink.write?.({ ts: w.ts, identity: w.identity, device: w.device, unit: w.unit, table: w.table, address: w.address, values: w.values, points: covered });
    } catch {
      /* see above */
    }
  }
}

/** Tap points from the daemon's `points` map; points with other sources are skipped. */
export function tapPointsFrom(points: Readonly<Record<string, { source: { modbus: ModbusSource } | object }>>): TapPoint[] {
  const out: TapPoint[] = [];
  for (const [id, p] of Object.entries(points)) {
    if (!("modbus" in p.source)) continue;
    const m = p.source.modbus;
    out.push({ id, device: m.device, unit: m.unit, table: m.table, address: m.address, type: m.type, word_order: m.word_order, scale: m.scale, offset: m.offset });
  }
  return out;
}
