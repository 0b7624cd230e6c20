import { describe, expect, it } from "vitest";
import { pointsSchema } from "../../../agent/config/points";
import { decodeRegisters, modbusSourceSchema } from "../../../protocols/modbus/points";

const modbus = (extra: Record<string, unknown> = {}) => ({
  source: { modbus: { device: "plc1", unit: 1, table: "holding", address: 40, ...extra } },
  unit: "m",
  kind: "level",
  range: { min: 0, max: 6.5 },
});

describe("points schema", () => {
  it("accepts Modbus and OPC UA points and fills defaults", () => {
    const p = pointsSchema.parse({
      L_T1: modbus({ type: "float32", word_order: "little", scale: 0.01 }),
      F_PU1: { source: { opcua: { server: "plc2", node_id: "ns=2;s=PU1.Flow" } }, unit: "L/s", kind: "flow", range: { min: 0, max: 200 }, poll_interval_ms: 5000 },
    });
    expect(p.L_T1!.poll_interval_ms).toBeUndefined();
    expect(p.F_PU1!.source).toEqual({ opcua: { server: "plc2", node_id: "ns=2;s=PU1.Flow", scale: 1, offset: 0 } });
    expect(p.L_T1!.source).toEqual({ modbus: { device: "plc1", unit: 1, table: "holding", address: 40, type: "float32", word_order: "little", scale: 0.01, offset: 0 } });
  });
  it.each([
    ["an unknown key", { ...modbus(), colour: "red" }],
    ["an unknown source key", modbus({ register: 3 })],
    ["an unknown kind", { ...modbus(), kind: "humidity" }],
    ["an inverted range", { ...modbus(), range: { min: 5, max: 1 } }],
    ["a bad data type", modbus({ type: "int64" })],
    ["a 32-bit coil", modbus({ table: "coil", type: "uint32" })],
    ["a missing range", { ...modbus(), range: undefined }],
    ["a bad unit id", modbus({ unit: 300 })],
    ["an OPC UA source without a server", { ...modbus(), source: { opcua: { node_id: "ns=2;s=X" } } }],
    ["a malformed OPC UA node id", { ...modbus(), source: { opcua: { server: "s", node_id: "ns=2;x=X" } } }],
    ["an OPC UA namespace index out of range", { ...modbus(), source: { opcua: { server: "s", node_id: "ns=123456;i=1" } } }],
  ])("rejects %s", (_name, point) => {
    expect(pointsSchema.safeParse({ p: point }).success).toBe(false);
  });
});

describe("decodeRegisters", () => {
  const src = (o: Record<string, unknown>) => modbusSourceSchema.parse({ device: "d", unit: 1, table: "holding", address: 0, ...o });
  it.each([
    ["uint16", {}, [0xffff], 65535],
    ["int16", { type: "int16" }, [0xffff], -1],
    ["int16 scaled", { type: "int16", scale: 0.1, offset: 2 }, [0xff9c], -8],
    ["uint32 big", { type: "uint32" }, [0x0001, 0x0002], 65538],
    ["uint32 little", { type: "uint32", word_order: "little" }, [0x0002, 0x0001], 65538],
    ["int32", { type: "int32" }, [0xffff, 0xfffe], -2],
    ["float32 big", { type: "float32" }, [0x4049, 0x0fdb], 3.1415927410125732],
    ["float32 little", { type: "float32", word_order: "little" }, [0x0fdb, 0x4049], 3.1415927410125732],
    ["coil", { table: "coil" }, [1], 1],
  ] as const)("%s", (_name, o, words, value) => {
    expect(decodeRegisters(src(o), words)).toBeCloseTo(value, 6);
  });
  it("throws INPUT_INVALID with too few registers", () => {
    expect(() => decodeRegisters(src({ type: "float32" }), [1])).toThrow(expect.objectContaining({ code: "INPUT_INVALID" }));
  });
});
