import { describe, expect, it } from "vitest";
import type { EventDraft } from "../../../agent/core/events";
import type { Reading, WriteObservation } from "../../../agent/core/readings";
import { modbusConfigSchema } from "../../../protocols/modbus/config";
import { ModbusEvents } from "../../../protocols/modbus/events";
import { zodMessage } from "../../../protocols/modbus/policy/schema";
import { decodePoint, ReadingsTap, type TapPoint } from "../../../protocols/modbus/tap";
import { WindowStore } from "../../../protocols/modbus/policy/window-store";

const info = (i: number) => ({ listener: "plain", identity: "ip:10.0.0.9", address: "10.0.0.9", unit: 1, fc: 6, addresses: `write holding ${i}`, values: [i] });

describe("ModbusEvents", () => {
  it("records the first events per key and one summary per interval, with OCSF classes", () => {
    const drafts: EventDraft[] = [];
    let now = 1000;
    const ev = new ModbusEvents({ record: (d) => drafts.push(d) }, { per_key: 2, scan_threshold: 1000, storm_threshold: 100_000 }, () => now);
    for (let i = 0; i < 500; i++) ev.denied(info(i % 5), "roles.x.write.holding", "not allowed");
    expect(drafts).toHaveLength(2);
    expect(drafts[0]).toMatchObject({ class: "finding", severity: 3, ocsf: { class_uid: 4001, activity_id: 5, unmapped: { modbus: { unit_id: 1, function_code: 6, function: "write_single_register", rule: "roles.x.write.holding", values: [0] } } } });
    now = 11_000;
    ev.flush();
    expect(drafts).toHaveLength(3);
    expect(drafts[2]!.ocsf).toMatchObject({ count: 498, unmapped: { suppressed: 498 } });
    ev.denied(info(1), "roles.x.write.holding", "not allowed"); // new interval: recorded again
    expect(drafts).toHaveLength(4);
  });

  it("bounds the number of keys per interval", () => {
    const drafts: EventDraft[] = [];
    const ev = new ModbusEvents({ record: (d) => drafts.push(d) }, { per_key: 1, max_keys: 10, scan_threshold: 100_000, storm_threshold: 100_000 });
    for (let i = 0; i < 1000; i++) ev.malformed({ listener: "plain", identity: `ip:10.0.${i >> 8}.${i & 255}`, address: `10.0.${i >> 8}.${i & 255}`, reason: "bad" });
    expect(drafts.length).toBeLessThanOrEqual(10);
    ev.flush();
    expect(drafts.length).toBeLessThanOrEqual(11);
    expect(drafts[drafts.length - 1]!.ocsf).toMatchObject({ unmapped: { aggregate_key: "overflow", suppressed: 990 } });
  });

  it("flags scans and exception storms once per interval", () => {
    const drafts: EventDraft[] = [];
    const ev = new ModbusEvents({ record: (d) => drafts.push(d) }, { per_key: 1, scan_threshold: 10, storm_threshold: 50 });
    for (let i = 0; i < 100; i++) ev.denied({ ...info(i), fc: 3, addresses: `holding ${i}` }, "roles.x.read.holding", "no");
    const titles = drafts.map((d) => (d.ocsf.finding_info as { title?: string } | undefined)?.title).filter(Boolean);
    expect(titles).toEqual(["Modbus scan", "Modbus exception storm"]);
    expect(drafts.find((d) => d.ocsf.class_uid === 2004)!.severity).toBe(4);
  });

  it("records window opening and expiry as audit events (Device Config State Change)", () => {
    const drafts: EventDraft[] = [];
    const ev = new ModbusEvents({ record: (d) => drafts.push(d) });
    let now = 0;
    const store = new WindowStore({ roles: () => ["eng"], now: () => now, events: { opened: (w) => ev.windowOpened(w), closed: (w, how, by) => ev.windowClosed(w, how, by) } });
    store.openWindow({ role: "eng", minutes: 2, reason: "valve calibration", by: "alice" });
    now = 119_999;
    store.sweep();
    expect(drafts).toHaveLength(1);
    now = 120_000;
    store.sweep();
    expect(drafts.map((d) => [d.class, d.ocsf.class_uid, d.ocsf.activity_name])).toEqual([
      ["audit", 5019, "Write Window Opened"],
      ["audit", 5019, "Write Window Closed"],
    ]);
    expect(drafts[1]!.ocsf.message).toContain("expired");
    store.dispose();
  });
});

describe("readings tap", () => {
  const p = (over: Partial<TapPoint>): TapPoint => ({ id: "p", device: "plc", unit: 1, table: "holding", address: 0, type: "uint16", word_order: "big", scale: 1, offset: 0, ...over });
  it.each([
    [p({ type: "int16" }), [0xffff], -1],
    [p({ type: "uint16", scale: 0.1, offset: -5 }), [1000], 95],
    [p({ type: "int32" }), [0xffff, 0xfffe], -2],
    [p({ type: "uint32", word_order: "little" }), [0x0001, 0x0002], 0x00020001],
    [p({ type: "float32" }), [0x4148, 0x0000], 12.5],
    [p({ type: "float32", word_order: "little" }), [0x0000, 0x4148], 12.5],
    [p({ type: "bool", table: "coil" }), [1], 1],
  ])("decodes %j", (pt, raw, v) => expect(decodePoint(pt, raw)).toBeCloseTo(v));

  it("emits readings for points fully inside a response and write observations", () => {
    const readings: Reading[] = [];
    const writes: WriteObservation[] = [];
    const tap = new ReadingsTap([p({ id: "a", address: 10 }), p({ id: "b", address: 12, type: "float32" }), p({ id: "c", address: 20 }), p({ id: "d", unit: 2, address: 10 })], { reading: (r) => readings.push(r), write: (w) => writes.push(w) });
    tap.read("plc", 1, "holding", 10, [7, 0, 0x4148, 0], 123);
    expect(readings).toEqual([
      { point: "a", value: 7, ts: 123, source: "tap:plc/u1/holding/10", quality: "good" },
      { point: "b", value: 12.5, ts: 123, source: "tap:plc/u1/holding/12", quality: "good" },
    ]);
    tap.read("plc", 1, "holding", 13, [0], 124); // only half of b: nothing
    expect(readings).toHaveLength(2);
    tap.write({ identity: "role:eng", device: "plc", unit: 1, table: "holding", address: 11, values: [1, 2], ts: 125 });
    expect(writes).toEqual([{ ts: 125, identity: "role:eng", device: "plc", unit: 1, table: "holding", address: 11, values: [1, 2], points: ["b"] }]);
    // A broadcast (unit 0) reaches every unit of the device: the points at those addresses on each.
    tap.write({ identity: "role:eng", device: "plc", unit: 0, table: "holding", address: 10, values: [5], ts: 126 });
    expect(writes[1]).toMatchObject({ unit: 0, address: 10, points: ["a", "d"] });
    tap.write({ identity: "role:eng", device: "other", unit: 0, table: "holding", address: 10, values: [5], ts: 127 });
    expect(writes[2]).toMatchObject({ device: "other", points: [] });
  });

  // A float register holding NaN (0x7FC00000) or infinity is how many devices say a sensor
  // failed; the tap dropped such a value without a trace, so detection went blind on the point
  // and nobody was told.
  it("a point that reads NaN or infinity is reported, at once and then at most every 10 minutes with a count; the reading is not passed on", () => {
    const readings: Reading[] = [];
    const drafts: EventDraft[] = [];
    let now = 1_000_000;
    const ev = new ModbusEvents({ record: (d) => void drafts.push(d) }, {}, () => now);
    const tap = new ReadingsTap([p({ id: "level", address: 30, type: "float32" }), p({ id: "flow", address: 32, type: "float32", word_order: "little" })], { reading: (r) => readings.push(r) }, (pt, v) => ev.pointNotFinite(pt, v));
    tap.read("plc", 1, "holding", 30, [0x7fc0, 0x0000, 0x0000, 0x4148], 1);
    expect(readings.map((r) => [r.point, r.value])).toEqual([["flow", 12.5]]);
    expect(drafts).toHaveLength(1);
    expect(drafts[0]).toMatchObject({ class: "finding", severity: 3, ocsf: { class_uid: 2004, finding_info: { title: "Modbus point reads no number", types: ["modbus.point_not_finite"] }, unmapped: { modbus: { upstream: "plc", unit_id: 1, table: "holding", address: 30, point: "level", value: "NaN", count: 1 } } } });
    expect(drafts[0]!.ocsf.message).toBe("Point level reads NaN from Modbus upstream plc (unit 1, holding 30, float32 big word order): not a number detection can use, so it has no reading of it; a float register holds NaN or infinity when the sensor has failed or is out of range, or the point's type or word order is wrong");
    for (let i = 0; i < 5; i++) {
      now += 60_000;
      tap.read("plc", 1, "holding", 30, [0x7f80, 0x0000], 2); // +infinity
    }
    expect(drafts).toHaveLength(1);
    now += 5 * 60_000;
    tap.read("plc", 1, "holding", 30, [0x7f80, 0x0000], 3);
    expect(drafts).toHaveLength(2);
    expect(drafts[1]!.ocsf.message).toMatch(/^Point level reads Infinity .*\(6 such reads since the last report\)$/);
    // A reporter that throws never breaks forwarding.
    const failing = new ReadingsTap([p({ id: "x", type: "float32" })], { reading: (r) => readings.push(r) }, () => {
      throw new Error("boom");
    });
    expect(() => failing.read("plc", 1, "holding", 0, [0x7fc0, 0], 4)).not.toThrow();
  });
});

describe("modbus config schema", () => {
  const good = {
    listeners: [
      { name: "plain", type: "tcp", listen: "0.0.0.0:502" },
      { name: "secure", type: "tls", listen: "[::]:802", tls: { cert_file: "/etc/gw/mbs.crt", key_file: "/etc/gw/mbs.key", ca_file: "/etc/gw/ca.crt" } },
    ],
    upstreams: [
      { name: "plc1", type: "tcp", target: "10.0.0.20:502" },
      { name: "bus1", type: "rtu", device: "/dev/ttyUSB0", baud: 9600 },
      { name: "dsrv", type: "rtu_tcp", target: "10.0.0.30:4001" },
    ],
    routes: [
      { unit: 1, upstream: "plc1" },
      { listener: "secure", unit: "10-19", upstream: "bus1" },
      { unit: 20, upstream: "dsrv", remote_unit: 1 },
    ],
    policy_file: "/etc/gw/modbus-policy.yaml",
  };
  it("accepts a full example and fills defaults", () => {
    const c = modbusConfigSchema.parse(good);
    expect(c.limits).toMatchObject({ max_connections: 64, max_outstanding: 16, max_requests_per_s: 1000 });
    expect(c.upstreams[1]).toMatchObject({ parity: "even", timeout_ms: 500, dead_after: 3 });
  });
  it.each([
    [{ ...good, routes: [{ unit: 1, upstream: "nope" }] }, "routes[0].upstream"],
    [{ ...good, listeners: [{ name: "x", type: "tcp", listen: "nowhere" }] }, "listeners[0].listen"],
    [{ ...good, limits: { max_conections: 5 } }, "limits"],
    [{ ...good, policy: {} }, "policy_file"],
    [{ ...good, upstreams: [...good.upstreams, { name: "plc1", type: "tcp", target: "1.2.3.4:502" }] }, "upstreams[3].name"],
    [{ ...good, routes: [{ unit: "1-5", upstream: "plc1", remote_unit: 3 }] }, "routes[0].remote_unit"],
    [{ ...good, routes: [{ unit: "10-300", upstream: "plc1" }] }, "routes[0].unit: unit range must be within 0..255 with start <= end"],
    [{ ...good, routes: [{ unit: "9-3", upstream: "plc1" }] }, "routes[0].unit: unit range must be within 0..255 with start <= end"],
  ])("names the key path of an error (%#)", (cfg, path) => {
    const r = modbusConfigSchema.safeParse(cfg);
    expect(r.success).toBe(false);
    if (!r.success) expect(zodMessage(r.error)).toContain(path);
  });
});

describe("tap points from the daemon's points section", () => {
  it("maps modbus sources and skips others", async () => {
    const { tapPointsFrom } = await import("../../../protocols/modbus/tap");
    const pts = tapPointsFrom({
      level: { source: { modbus: { device: "bus1", unit: 10, table: "input", address: 3, type: "int16", word_order: "big", scale: 0.01, offset: 0 } } },
      temp: { source: { opcua: { server: "plc2", node_id: "ns=2;s=T", scale: 1, offset: 0 } } },
    });
    expect(pts).toEqual([{ id: "level", device: "bus1", unit: 10, table: "input", address: 3, type: "int16", word_order: "big", scale: 0.01, offset: 0 }]);
  });
});

describe("documented examples", () => {
  it("the pumping station config and policy are valid", async () => {
    const { readFileSync } = await import("node:fs");
    const { join } = await import("node:path");
    const { parse } = await import("yaml");
    const { parsePolicyText } = await import("../../../protocols/modbus/policy/schema");
    const dir = join(__dirname, "../../../protocols/modbus/examples");
    const cfg = parse(readFileSync(join(dir, "pumping-station.yaml"), "utf8")) as { modbus: unknown };
    expect(modbusConfigSchema.safeParse(cfg.modbus).success).toBe(true);
    const pol = parsePolicyText(readFileSync(join(dir, "pumping-station-policy.yaml"), "utf8"));
    expect(Object.keys(pol.roles)).toEqual(["scada", "engineer"]);
  });
});
