import { afterEach, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { EventDraft } from "../../../agent/core/events";
import type { Reading } from "../../../agent/core/readings";
import { opcuaConfigSchema } from "../../../protocols/opcua/config";
import type { OpcuaPolledPoint } from "../../../protocols/opcua/poller";
import { OpcuaService } from "../../../protocols/opcua/service";
import { silent, tempDir, until } from "../../helpers/fixture";
import { TestOpcuaServer, type TestServerOptions } from "./_server";

const pt = (id: string, node: string, interval_ms: number): OpcuaPolledPoint => ({ id, source: { server: "plc", node_id: node, scale: 1, offset: 0 }, interval_ms });

describe("OPC UA points by subscription against a real node-opcua server", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  async function run(points: OpcuaPolledPoint[], o: { server?: Partial<TestServerOptions>; client?: Record<string, unknown> } = {}) {
    const t = tempDir("gw-opcua-sub-");
    cleanups.push(t.cleanup);
    const server = new TestOpcuaServer({ dir: t.dir, users: { operator: "pump-station-7" }, ...o.server });
    await server.start();
    cleanups.push(() => server.stop());
    const pw = join(t.dir, "plc.pass");
    writeFileSync(pw, "pump-station-7\n", { mode: 0o600 });
    const events: EventDraft[] = [];
    const readings: Reading[] = [];
    const config = opcuaConfigSchema.parse({
      pki_dir: join(t.dir, "client-pki"),
      servers: [{ name: "plc", endpoint: server.endpoint, server_certificate: server.certFile, user: { username: "operator", password_file: pw }, reconnect_min_ms: 200, reconnect_max_ms: 1000, ...o.client }],
    });
    const logged: { o: object; m: string }[] = [];
    const log = { ...silent, info: (o: object, m: string) => void logged.push({ o, m }), warn: (o: object, m: string) => void logged.push({ o, m }), debug: () => undefined };
    const svc = new OpcuaService({ config, deviceId: "gw-test", points, events: { record: (d) => events.push(d) }, readings: { reading: (r) => readings.push(r) }, log });
    cleanups.push(() => svc.stop());
    await svc.start();
    const of = (id: string, quality: Reading["quality"] = "good") => readings.filter((r) => r.point === id && r.quality === quality);
    return { server, svc, events, readings, logged, of, st: () => svc.status().servers[0]! };
  }

  /** Each reading's time is on the point's grid, and later than the one before. */
  function expectOnGrid(rs: Reading[], interval: number): void {
    for (const [i, r] of rs.entries()) {
      expect(r.ts % interval).toBe(0);
      if (i > 0) expect(r.ts).toBeGreaterThan(rs[i - 1]!.ts);
    }
  }

  /** On the grid, and evenly spaced: the usual step is one interval (a tick the event loop missed is a gap, never a late time). */
  function expectEvenlySpaced(rs: Reading[], interval: number): void {
    expectOnGrid(rs, interval);
    const steps = rs.slice(1).map((r, i) => r.ts - rs[i]!.ts).sort((a, b) => a - b);
    expect(steps[Math.floor(steps.length / 2)]).toBe(interval);
  }

  it("points arrive by monitored items, evenly spaced on each point's grid, the last value held between notifications", async () => {
    const { server, events, of, st } = await run([pt("level", "ns=1;s=Tank.Level", 100), pt("running", "ns=1;s=Pump.Running", 200), pt("name", "ns=1;s=Tag.Name", 100)]);
    await until(() => of("level").length >= 20 && of("running").length >= 10, 20_000, "readings of both intervals");
    expect(st()).toMatchObject({ state: "up", points_by: "subscription", polls: 0, reads: 0 });
    // The values do not change: after the first notification of each item, every reading is a held value.
    expect(st().notifications).toBeLessThanOrEqual(3);
    expect(of("level").every((r) => r.value === 2.5 && r.source === "opcua:plc/ns=1;s=Tank.Level")).toBe(true);
    expect(of("running").every((r) => r.value === 1)).toBe(true);
    expectEvenlySpaced(of("level"), 100);
    expectEvenlySpaced(of("running"), 200);
    // Where the grids meet, readings share their time (the detectors see one instant).
    const levelTs = new Set(of("level").map((r) => r.ts));
    expect(of("running").filter((r) => levelTs.has(r.ts)).length).toBeGreaterThan(0);
    server.values["Tank.Level"] = 3.25;
    await until(() => of("level").at(-1)!.value === 3.25, 5000, "the changed value by notification");
    expect(st().notifications).toBeGreaterThan(3);
    expect(st().reads).toBe(0);
    // A non-numeric node is reported (once), not a reading.
    expect(of("name").length).toBe(0);
    expect(events.filter((e) => e.ocsf.class_uid === 2004).map((e) => e.ocsf.message)).toEqual([expect.stringMatching(/Point name .*not a number \(string\)/)]);
  });

  it.each([
    ["BadServiceUnsupported", "unsupported"],
    ["BadTooManySubscriptions", "none"],
  ] as const)("falls back to polling a server that answers CreateSubscription with %s", async (code, subscriptions) => {
    const { server, of, st } = await run([pt("level", "ns=1;s=Tank.Level", 50)], { server: { subscriptions } });
    await until(() => of("level").length >= 5, 20_000, "polled readings");
    expect(st()).toMatchObject({ points_by: "poll", notifications: 0 });
    expect(st().subscription_error).toContain(code);
    expect(st().polls).toBeGreaterThan(0);
    server.values["Tank.Level"] = 4;
    await until(() => of("level").at(-1)!.value === 4, 5000, "the changed value by polling");
  });

  it("with points_mode subscription, does not poll a server without subscriptions and reports the points unreadable", async () => {
    const { events, readings, st } = await run([pt("level", "ns=1;s=Tank.Level", 50)], { server: { subscriptions: "unsupported" }, client: { points_mode: "subscription" } });
    await until(() => events.some((e) => e.ocsf.class_uid === 2004), 20_000, "an unreadable-point finding");
    expect(events.find((e) => e.ocsf.class_uid === 2004)!.ocsf.message).toMatch(/Point level .*the server did not create a subscription: .*BadServiceUnsupported/);
    expect(st()).toMatchObject({ state: "up", points_by: "none", polls: 0, reads: 0 });
    expect(readings).toEqual([]);
  });

  it("with points_mode poll, reads by polling a server that has subscriptions", async () => {
    const { of, st } = await run([pt("level", "ns=1;s=Tank.Level", 50)], { client: { points_mode: "poll" } });
    await until(() => of("level").length >= 3, 20_000, "polled readings");
    expect(st()).toMatchObject({ points_by: "poll", notifications: 0 });
    expect(st().reads).toBeGreaterThan(0);
  });

  it("marks the points unknown when the server goes away instead of holding the value, and subscribes again after its restart", async () => {
    const { server, events, of, st } = await run([pt("level", "ns=1;s=Tank.Level", 100)]);
    await until(() => of("level").length >= 3, 20_000, "readings by subscription");
    await server.stop();
    await until(() => of("level", "bad").length === 1, 15_000, "a bad-quality reading");
    const bad = of("level", "bad")[0]!;
    expect(bad.value).toBeNaN();
    await until(() => events.some((e) => e.ocsf.class_uid === 4001 && e.ocsf.activity_id === 4), 15_000, "the link down");
    const goodBefore = of("level").length;
    expect(of("level").every((r) => r.ts < bad.ts)).toBe(true);
    expect(st().points_by).toBe("none");
    server.values["Tank.Level"] = 4.5;
    await server.start(); // same port, same certificate
    await until(() => of("level").length > goodBefore && of("level").at(-1)!.value === 4.5, 30_000, "readings after the restart");
    expect(st()).toMatchObject({ state: "up", points_by: "subscription", polls: 0, reads: 0, connects: 2 });
    const after = of("level").filter((r) => r.ts > bad.ts);
    expect(after.length).toBeGreaterThan(0);
    expect(after.every((r) => r.value === 4.5)).toBe(true);
    expectOnGrid(of("level"), 100);
    expect(of("level", "bad").length).toBe(1);
  });

  it("notices a subscription the server deleted (no data, no keep-alive), marks the points unknown and subscribes again in the same session", async () => {
    const { server, of, st, logged } = await run([pt("level", "ns=1;s=Tank.Level", 100)]);
    await until(() => of("level").length >= 3 && server.subscriptionCount === 1, 20_000, "readings by subscription");
    server.values["Tank.Level"] = 5.5;
    expect(server.endSubscriptions()).toBe(1);
    await until(() => of("level", "bad").length === 1, 30_000, "a bad-quality reading once the subscription is gone");
    const bad = of("level", "bad")[0]!;
    await until(() => of("level").some((r) => r.ts > bad.ts), 30_000, "readings from a new subscription");
    expect(server.subscriptionCount).toBe(1);
    expect(st()).toMatchObject({ state: "up", points_by: "subscription", polls: 0, reads: 0, connects: 1 });
    expect(of("level").filter((r) => r.ts > bad.ts).every((r) => r.value === 5.5)).toBe(true);
    // node-opcua's client says nothing when its subscription disappears: the keep-alive watchdog notices.
    expect(logged.filter((l) => /subscription lost/.test(l.m)).map((l) => (l.o as { reason: string }).reason)).toEqual([expect.stringMatching(/^nothing from the subscription for \d+ ms$/)]);
  });
});
