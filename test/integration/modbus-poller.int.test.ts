import { afterEach, describe, expect, it } from "vitest";
import type { Reading } from "../../agent/core/readings";
import { modbusConfigSchema } from "../../protocols/modbus/config";
import { planBlocks, type PolledPoint } from "../../protocols/modbus/poller";
import { ModbusProxyService } from "../../protocols/modbus/service";
import { SimDevice } from "../../agent/demo/sim-server";
import { until } from "../helpers/fixture";

const pt = (id: string, address: number, over: Partial<PolledPoint> = {}): PolledPoint => ({ id, device: "plc", unit: 1, table: "holding", address, type: "uint16", word_order: "big", scale: 1, offset: 0, interval_ms: 50, ...over });

describe("point polling through the proxy's upstreams", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  it("merges addresses into as few reads as the specification allows", () => {
    const blocks = planBlocks([pt("a", 0), pt("b", 10), pt("c", 124), pt("d", 130, { type: "float32" }), pt("e", 5, { table: "input" }), pt("f", 0, { interval_ms: 1000 })]);
    const fast = blocks.get(50)!.map((b) => [b.table, b.req]);
    expect(fast).toEqual([
      ["holding", { fc: 3, address: 0, quantity: 125 }],
      ["holding", { fc: 3, address: 130, quantity: 2 }],
      ["input", { fc: 4, address: 5, quantity: 1 }],
    ]);
    expect(blocks.get(1000)!.length).toBe(1);
  });

  it("polls a device behind the proxy, with no listener traffic, and hands decoded values on", async () => {
    const device = new SimDevice({ record: true });
    const port = await device.listen(0);
    cleanups.push(() => device.close());
    device.holding[3] = 0x4049; // float32 3.14159 big-endian word order
    device.holding[4] = 0x0fd0;
    device.holding[7] = 0xfffe; // int16 -2
    const readings: Reading[] = [];
    const svc = new ModbusProxyService({
      config: modbusConfigSchema.parse({ upstreams: [{ name: "plc", type: "tcp", target: `127.0.0.1:${port}` }] }),
      events: { record: () => undefined },
      readings: { reading: (r) => readings.push(r) },
      poll: [pt("pi", 3, { type: "float32" }), pt("neg", 7, { type: "int16", scale: 0.5 })],
    });
    await svc.start();
    cleanups.push(() => svc.stop());
    await until(() => readings.length >= 4, 5000, "polled readings");
    const last = (id: string) => readings.filter((r) => r.point === id).at(-1)!.value;
    expect(last("pi")).toBeCloseTo(3.14159, 4);
    expect(last("neg")).toBe(-1);
    expect(device.received.every((r) => r === "1:0300030005")).toBe(true);
    expect(svc.status().polling).toMatchObject({ points: 2 });
  });
});
