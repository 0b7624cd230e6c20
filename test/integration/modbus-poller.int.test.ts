import { afterEach, describe, expect, it } from "vitest";
import type { Reading } from "../../agent/core/readings";
import { modbusConfigSchema } from "../../protocols/modbus/config";
import { PointPoller, planBlocks, UNREADABLE_MS, type PollBlockInfo, type PolledPoint } from "../../protocols/modbus/poller";
import { exceptionPdu } from "../../protocols/modbus/codec/pdu";
import { ModbusEvents } from "../../protocols/modbus/events";
import { ReadingsTap } from "../../protocols/modbus/tap";
import { createUpstream } from "../../protocols/modbus/upstream/factory";
import type { EventDraft } from "../../agent/core/events";
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

  it("points whose reads keep failing are reported once (detection is blind on them), and again when they are read", async () => {
    const device = new SimDevice();
    const port = await device.listen(0);
    cleanups.push(() => device.close());
    const up = createUpstream(modbusConfigSchema.parse({ upstreams: [{ name: "plc", type: "tcp", target: `127.0.0.1:${port}` }] }).upstreams[0]!);
    up.start();
    cleanups.push(() => up.stop());
    const readings: Reading[] = [];
    const points = [pt("LEVEL", 3), pt("FLOW", 4)];
    let skew = 0; // the poller's clock: moved on by the test instead of waiting 30 s
    const drafts: EventDraft[] = [];
    const events = new ModbusEvents({ record: (d) => void drafts.push(d) }, {}, () => Date.now() + skew);
    const reports: { kind: string; b: PollBlockInfo; ms: number; reason?: string }[] = [];
    const poller = new PointPoller(points, () => up, new ReadingsTap(points, { reading: (r) => readings.push(r) }), () => Date.now() + skew, {
      unreadable: (b, ms, reason) => (reports.push({ kind: "unreadable", b, ms, reason }), events.pointsUnreadable(b, ms, reason)),
      readable: (b, ms) => (reports.push({ kind: "readable", b, ms }), events.pointsReadable(b, ms)),
    });
    poller.start();
    cleanups.push(async () => poller.stop());
    await until(() => readings.length >= 4, 5000, "polled readings");
    // The PLC is reprogrammed: its register map moved, every read of 3-4 is refused.
    const handle = device.handle.bind(device);
    device.handle = (unit, pdu) => (pdu[0] === 3 ? exceptionPdu(3, 2) : handle(unit, pdu));
    const errors = poller.counters.errors;
    await until(() => poller.counters.errors >= errors + 5, 5000, "failed polls");
    expect(reports).toEqual([]); // a few failed polls are not yet news
    skew += UNREADABLE_MS + 1000;
    await until(() => reports.length > 0, 5000, "the unreadable report");
    const at = poller.counters.errors;
    await until(() => poller.counters.errors >= at + 5, 5000, "more failed polls");
    expect(reports).toHaveLength(1);
    expect(reports[0]).toMatchObject({ kind: "unreadable", reason: "exception response 2 (illegal data address)", b: { device: "plc", unit: 1, table: "holding", address: 3, quantity: 2, points: ["LEVEL", "FLOW"] } });
    expect(reports[0]!.ms).toBeGreaterThanOrEqual(UNREADABLE_MS);
    expect(drafts[0]).toMatchObject({ class: "finding", severity: 3, ocsf: { class_uid: 2004, activity_id: 1, unmapped: { modbus: { upstream: "plc", points: ["LEVEL", "FLOW"], reason: "exception response 2 (illegal data address)" } } } });
    expect(drafts[0]!.ocsf.message).toMatch(/^Points LEVEL, FLOW could not be read from Modbus upstream plc \(unit 1, holding 3-4\) for \d+ s: exception response 2 \(illegal data address\); detection has no readings of them until they are read again$/);
    const before = readings.length;
    device.handle = handle;
    await until(() => reports.length === 2, 5000, "the readable report");
    expect(readings.length).toBeGreaterThan(before);
    expect(reports[1]).toMatchObject({ kind: "readable", b: { points: ["LEVEL", "FLOW"] } });
    expect(drafts[1]).toMatchObject({ class: "finding", severity: 1, ocsf: { activity_id: 3, message: expect.stringMatching(/^Points LEVEL, FLOW are read again from Modbus upstream plc \(unit 1, holding 3-4\) after \d+ s$/) } });
  });
});
