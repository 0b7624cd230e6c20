import { connect, createServer, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import type { Reading, WriteObservation } from "../../../agent/core/readings";
import { until } from "../../helpers/fixture";
import { exchange, RawClient, startRig, type Rig } from "./_harness";

const policy = {
  identities: [{ match: { address: "127.0.0.1" }, role: "eng" }],
  roles: {
    eng: {
      units: [1, 5, 9],
      functions: ["read-write" as const],
      read: { holding: ["0-99"], input: ["0-99"] },
      write: { holding: ["10-19"] },
      values: [{ table: "holding" as const, address: "10", min: 0, max: 100 }],
    },
  },
};

const rigs: Rig[] = [];
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const r of rigs.splice(0)) await r.close();
  for (const f of cleanups.splice(0)) await f();
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("proxy: forwarding, events, tap", () => {
  it("forwards allowed requests, denies others, audits writes and feeds the readings tap", async () => {
    const readings: Reading[] = [];
    const writes: WriteObservation[] = [];
    const rig = await startRig(
      policy,
      {},
      {
        points: [
          { id: "level", device: "plc", unit: 1, table: "input", address: 4, type: "uint16", word_order: "big", scale: 0.1, offset: 0 },
          { id: "flow", device: "plc", unit: 1, table: "input", address: 6, type: "uint32", word_order: "big", scale: 1, offset: 0 },
          { id: "setpoint", device: "plc", unit: 1, table: "holding", address: 10, type: "int16", word_order: "big", scale: 1, offset: 0 },
        ],
        readings: { reading: (r) => readings.push(r), write: (w) => writes.push(w) },
      },
    );
    rigs.push(rig);
    const c = await RawClient.connect(rig.port);
    expect(await c.request(1, "04 0004 0004")).toBe("0408" + "0004" + "0005" + "0006" + "0007");
    expect(readings.map((r) => [r.point, r.value])).toEqual([
      ["level", 0.4],
      ["flow", 6 * 65536 + 7],
    ]);
    expect(await c.request(1, "06 000a 0032")).toBe("06000a0032");
    expect(rig.device.holding[10]).toBe(50);
    expect(writes).toMatchObject([{ device: "plc", unit: 1, table: "holding", address: 10, values: [50], points: ["setpoint"], identity: "ip:127.0.0.1" }]);
    expect(await c.request(1, "06 000a 0065")).toBe("8601"); // 101 > max
    expect(await c.request(1, "06 0014 0001")).toBe("8601"); // 20: not writable
    expect(await c.request(2, "03 0000 0001")).toBe("8301"); // unit 2 not allowed
    expect(rig.device.holding[10]).toBe(50);
    expect(rig.device.received).toEqual(["1:0400040004", "1:06000a0032"]);
    const denied = rig.sink.drafts.filter((d) => d.ocsf.class_uid === 4001 && d.ocsf.activity_id === 5);
    expect(denied).toHaveLength(3);
    expect(denied[0]!.class).toBe("finding");
    expect(denied[0]!.ocsf.unmapped).toMatchObject({ modbus: { unit_id: 1, function_code: 6, addresses: "write holding 10", values: [101], rule: "roles.eng.values[0]" } });
    const audit = rig.sink.drafts.filter((d) => d.class === "audit" && d.ocsf.activity_id === 6);
    expect(audit).toHaveLength(1);
    c.close();
  });

  it("answers 0A without a route or with the device down, 0B when it does not answer, and reports up/down", async () => {
    // A device that accepts and never answers.
    const muted = new Set<Socket>();
    const mute = createServer((s) => {
      muted.add(s);
      s.on("error", () => {});
    });
    cleanups.push(async () => {
      muted.forEach((s) => s.destroy());
      await new Promise<void>((r) => mute.close(() => r()));
    });
    await new Promise<void>((r) => mute.listen(0, "127.0.0.1", () => r()));
    const mutePort = (mute.address() as { port: number }).port;
    const rig = await startRig(policy, {
      upstreams: [
        { name: "plc", type: "tcp", target: "127.0.0.1:1", reconnect: { min_ms: 50, max_ms: 100 } },
        { name: "mute", type: "tcp", target: `127.0.0.1:${mutePort}`, timeout_ms: 150 },
      ],
      routes: [
        { unit: 1, upstream: "plc" },
        { unit: 5, upstream: "mute" },
      ],
    });
    rigs.push(rig);
    await sleep(50);
    const c = await RawClient.connect(rig.port);
    const t0 = Date.now();
    expect(await c.request(1, "03 0000 0001")).toBe("830a");
    expect(Date.now() - t0).toBeLessThan(100);
    expect(await c.request(9, "03 0000 0001")).toBe("830a"); // allowed but no route
    const t1 = Date.now();
    expect(await c.request(5, "03 0000 0001")).toBe("830b");
    expect(Date.now() - t1).toBeGreaterThanOrEqual(140);
    expect(rig.sink.drafts.some((d) => d.ocsf.class_uid === 4001 && d.ocsf.activity_id === 4)).toBe(true);
    expect(rig.service.status().upstreams.find((u) => u.name === "plc")!.state).not.toBe("up");
    c.close();
  });

  it("reconnects to a device that comes back", async () => {
    const rig = await startRig(policy, {}, {});
    rigs.push(rig);
    const c = await RawClient.connect(rig.port);
    expect(await c.request(1, "03 0000 0001")).toBe("03020000");
    // Drop the device's connections; the pool reconnects by itself.
    await rig.device.close();
    const port = Number(rig.service.status().upstreams[0]!.target.split(":")[1]);
    await sleep(20);
    expect(["830b", "830a"]).toContain(await c.request(1, "03 0000 0001"));
    await rig.device.listen(port);
    let got = "";
    for (let i = 0; i < 50 && got !== "03020000"; i++) {
      await sleep(100);
      got = await c.request(1, "03 0000 0001");
    }
    expect(got).toBe("03020000");
    expect(rig.sink.drafts.some((d) => d.ocsf.activity_id === 1 && String(d.ocsf.message).includes("is up"))).toBe(true);
    c.close();
  });
});

describe("proxy: robustness", () => {
  it("closes slow-loris and idle connections but keeps serving others", async () => {
    const rig = await startRig(policy, { limits: { frame_timeout_ms: 150, idle_timeout_ms: 400 } });
    rigs.push(rig);
    const t0 = Date.now();
    const slow = exchange(rig.port, Buffer.from("00010000000601", "hex"), 1, 2000);
    const good = await RawClient.connect(rig.port);
    expect(await good.request(1, "03 0000 0001")).toBe("03020000");
    const r = await slow;
    expect(r.closed).toBe(true);
    expect(Date.now() - t0).toBeLessThan(1000);
    await sleep(500);
    expect(good.closed).toBe(true); // idle
    expect(rig.sink.drafts.some((d) => d.ocsf.class_uid === 2004 && String(d.ocsf.message).includes("not completed"))).toBe(true);
  });

  it("keeps a connection that reads or writes open past idle_timeout_ms, and closes it once silent that long", async () => {
    const rig = await startRig(policy, { limits: { idle_timeout_ms: 300 } });
    rigs.push(rig);
    const c = await RawClient.connect(rig.port);
    // Traffic for more than three idle timeouts: every exchange is activity.
    const t0 = Date.now();
    while (Date.now() - t0 < 1000) expect(await c.request(1, "03 0000 0001")).toBe("03020000");
    expect(c.closed).toBe(false);
    const quiet = Date.now();
    await until(() => c.closed, 5000, "the idle connection to be closed");
    expect(Date.now() - quiet).toBeGreaterThanOrEqual(250);
  });

  it("limits connections per identity and in total", async () => {
    const rig = await startRig(policy, { limits: { max_connections_per_identity: 3, max_connections: 10 } });
    rigs.push(rig);
    const cs = await Promise.all([1, 2, 3, 4].map(() => RawClient.connect(rig.port)));
    await sleep(50);
    expect(cs.filter((c) => c.closed)).toHaveLength(1);
    expect(rig.sink.drafts.some((d) => (d.ocsf.finding_info as { title?: string } | undefined)?.title === "Modbus connection limit")).toBe(true);
    cs.forEach((c) => c.close());
  });

  it("bounds outstanding transactions by back-pressure and answers every pipelined request", async () => {
    const slowRig = await startRig(policy, { limits: { max_outstanding: 2 } });
    rigs.push(slowRig);
    const c = await RawClient.connect(slowRig.port);
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => c.request(1, `03 00${(i % 100).toString(16).padStart(2, "0")} 0001`)));
    expect(answers.every((a) => a === "03020000")).toBe(true);
    c.close();
  });

  it("slows a connection down to max_requests_per_s by not reading it, answering everything", async () => {
    const rig = await startRig({ ...policy, identities: [{ match: { address: ["127.0.0.1", "127.0.0.2"] }, role: "eng" }] }, { limits: { max_requests_per_s: 100 } });
    rigs.push(rig);
    const c = await RawClient.connect(rig.port);
    const other = await RawClient.connect(rig.port, "127.0.0.2");
    const t0 = Date.now();
    const all = Promise.all(Array.from({ length: 150 }, () => c.request(1, "03 0000 0001", 5000)));
    // Another client is not held up by the first one's limit.
    const t1 = Date.now();
    expect(await other.request(1, "03 0000 0001")).toBe("03020000");
    expect(Date.now() - t1).toBeLessThan(300);
    const answers = await all;
    expect(answers.every((a) => a === "03020000")).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(400); // 100 at once, then 50 at 100/s
    c.close();
    other.close();
  });

  it("closes a connection that buffers more than the limit", async () => {
    const rig = await startRig(policy, { limits: { max_buffered_bytes: 1024, max_outstanding: 1 } });
    rigs.push(rig);
    const frame = Buffer.from("000100000006010300000001", "hex");
    const r = await exchange(rig.port, Buffer.concat(Array.from({ length: 200 }, () => frame)), 1000, 1000);
    expect(r.closed).toBe(true);
    const ok = await RawClient.connect(rig.port);
    expect(await ok.request(1, "03 0000 0001")).toBe("03020000");
    ok.close();
  });

  it("aggregates a flood of denied and malformed requests into a bounded number of events", async () => {
    const rig = await startRig(policy, { events: { interval_ms: 60_000, per_key: 3 }, limits: { max_requests_per_s: 0 } });
    rigs.push(rig);
    const frames: Buffer[] = [];
    for (let i = 0; i < 3000; i++) {
      const tid = i & 0xffff;
      const denied = Buffer.from(`${tid.toString(16).padStart(4, "0")}00000006010600${(20 + (i % 50)).toString(16).padStart(2, "0")}0001`, "hex");
      const bad = Buffer.from(`${tid.toString(16).padStart(4, "0")}0000000301${"5a00"}`, "hex");
      frames.push(denied, bad);
    }
    const c = await RawClient.connect(rig.port);
    // Send in chunks below the buffer limit.
    const all = Buffer.concat(frames);
    let received = 0;
    await new Promise<void>((resolve) => {
      const s = connect({ port: rig.port, host: "127.0.0.1" });
      s.on("error", () => {});
      s.on("data", (d: Buffer) => {
        received += d.length;
        if (received >= 6000 * 9) {
          s.destroy();
          resolve();
        }
      });
      s.on("connect", async () => {
        for (let o = 0; o < all.length; o += 4096) {
          s.write(all.subarray(o, o + 4096));
          await sleep(1);
        }
      });
    });
    expect(received).toBe(6000 * 9); // every request answered with a 9-byte exception frame
    expect(await c.request(1, "03 0000 0001")).toBe("03020000"); // others still served
    expect(rig.device.received).toEqual(["1:0300000001"]);
    expect(rig.sink.drafts.length).toBeLessThan(40);
    expect(rig.sink.drafts.some((d) => String(d.ocsf.message).startsWith("Modbus scan"))).toBe(true);
    expect(rig.sink.drafts.some((d) => String(d.ocsf.message).startsWith("Modbus exception storm"))).toBe(true);
    await rig.service.stop(); // flushes aggregates
    const summaries = rig.sink.drafts.filter((d) => (d.ocsf.unmapped as { suppressed?: number } | undefined)?.suppressed);
    expect(summaries.length).toBeGreaterThan(0);
    c.close();
  });
});

describe("proxy: a client that never reads its answers", () => {
  it("stops being read once its unread answers pass the buffer bound; memory stays bounded", async () => {
    const rig = await startRig(policy, { limits: { max_requests_per_s: 0, max_buffered_bytes: 4096 } });
    rigs.push(rig);
    const s = connect({ port: rig.port, host: "127.0.0.1" });
    s.on("error", () => {});
    await new Promise((r) => s.once("connect", r));
    s.pause(); // never read
    const frame = Buffer.from("000100000006020300000001", "hex"); // denied: answered at once
    const chunk = Buffer.concat(Array.from({ length: 300 }, () => frame));
    for (let i = 0; i < 400; i++) if (!s.write(chunk)) await Promise.race([new Promise((r) => s.once("drain", r)), sleep(20)]);
    await sleep(100);
    const served = rig.service.status().listeners[0]!.requests;
    // Only what fits in socket buffers was processed, not all 120,000 requests.
    expect(served).toBeLessThan(120_000);
    const other = await RawClient.connect(rig.port);
    expect(await other.request(1, "03 0000 0001")).toBe("03020000");
    other.close();
    s.destroy();
  });
});

describe("proxy: write windows through the control socket", () => {
  it("denies writes until a window is opened over the control socket, and again after it closes", async () => {
    const { ControlServer } = await import("../../../agent/control/server");
    const { controlCall } = await import("../../../agent/core/control-client");
    const { registerWindowControl, registerModbusStatus } = await import("../../../protocols/modbus/window-control");
    const { mkdtempSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const rig = await startRig({
      identities: [{ match: { address: "127.0.0.1" }, role: "eng" }],
      roles: { eng: { units: [1], functions: ["read-write"], read: { holding: ["0-9"] }, write: { holding: ["0-9"] }, write_window: "required" } },
    });
    rigs.push(rig);
    const path = join(mkdtempSync(join(tmpdir(), "gw-ctl-")), "control.sock");
    const ctl = new ControlServer(path);
    registerWindowControl(ctl, () => rig.service.windows);
    registerModbusStatus(ctl, () => rig.service.status());
    await ctl.listen();
    cleanups.push(() => ctl.close());
    const c = await RawClient.connect(rig.port);
    expect(await c.request(1, "06 0001 0005")).toBe("8601");
    const w = (await controlCall(path, "window.open", { role: "eng", minutes: 1, reason: "commissioning pump 3" })) as { id: string };
    expect(await c.request(1, "06 0001 0005")).toBe("060001" + "0005");
    expect(rig.service.status().windows).toHaveLength(1);
    const st = (await controlCall(path, "modbus.status", {})) as { listeners: { requests: number }[]; upstreams: { state: string }[]; windows: unknown[] };
    expect(st).toMatchObject({ listeners: [{ requests: 2 }], upstreams: [{ state: "up" }], windows: [{ role: "eng" }] });
    await controlCall(path, "window.close", { id: w.id });
    expect(await c.request(1, "06 0001 0006")).toBe("8601");
    expect(rig.device.holding[1]).toBe(5);
    const audit = rig.sink.drafts.filter((d) => d.ocsf.class_uid === 5019).map((d) => d.ocsf.activity_name);
    expect(audit).toEqual(["Write Window Opened", "Write Window Closed"]);
    c.close();
  });
});

describe("proxy: routing and client events", () => {
  it("maps (listener, unit) to (upstream, remote unit) and answers under the client's unit id", async () => {
    const rig = await startRig(
      { identities: [{ match: { address: "127.0.0.1" }, role: "r" }], roles: { r: { units: [1, 20], functions: ["read-only"], read: { holding: ["0-9"] } } } },
      { routes: [{ unit: 20, upstream: "plc", remote_unit: 7 }, { listener: "plain", unit: 1, upstream: "plc" }] },
    );
    rigs.push(rig);
    const sock = connect({ port: rig.port, host: "127.0.0.1" });
    sock.on("error", () => {});
    const got = await new Promise<string>((resolve) => {
      sock.on("connect", () => sock.write(Buffer.from("0042000000061403000000 01".replace(/\s/g, ""), "hex")));
      sock.once("data", (d: Buffer) => resolve(d.toString("hex")));
    });
    expect(got).toBe("004200000005140302" + "0000");
    expect(rig.device.received).toEqual(["7:0300000001"]);
    sock.destroy();
  });

  it("records unknown clients as findings and known ones once as telemetry", async () => {
    const rig = await startRig({ identities: [{ match: { address: "10.9.9.9" }, role: "r" }], roles: { r: { units: [1], functions: [3], read: { holding: ["0"] } } } });
    rigs.push(rig);
    const c = await RawClient.connect(rig.port);
    expect(await c.request(1, "03 0000 0001")).toBe("8301");
    c.close();
    const unknown = rig.sink.drafts.filter((d) => String(d.ocsf.message).startsWith("Unknown Modbus client"));
    expect(unknown).toHaveLength(1);
    expect(unknown[0]).toMatchObject({ class: "finding", ocsf: { class_uid: 4001, activity_id: 1, src_endpoint: { ip: "127.0.0.1" } } });
    const known = await startRig(policy);
    rigs.push(known);
    for (let i = 0; i < 3; i++) (await RawClient.connect(known.port)).close();
    await sleep(30);
    expect(known.sink.drafts.filter((d) => String(d.ocsf.message).startsWith("New Modbus client"))).toHaveLength(1);
  });
});
