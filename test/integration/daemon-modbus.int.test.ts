import { afterEach, describe, expect, it } from "vitest";
import { appendFileSync } from "node:fs";
import { connect } from "node:net";
import { controlCall } from "../../agent/core/control-client";
import { Runtime } from "../../agent/runtime";
import { SimDevice } from "../../agent/demo/sim-server";
import { RawClient } from "./modbus/_harness";
import { freePort } from "./modbus/_peers";
import { engineerProxySite } from "./modbus/_daemon-site";
import { makeSite, silent, tempDir, until } from "../helpers/fixture";
import { detectionReadings, findingFor, outboxBodies } from "../helpers/runtime";

type Body = { class: string; ocsf: { class_uid: number; activity_id: number; message: string } };

describe("daemon with the Modbus proxy configured", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  it("proxies reads, denies writes until a window is opened over the control socket, and records it all", async () => {
    const { site, device, port } = await engineerProxySite(cleanups, ["values:", "  - { table: holding, address: \"100-103\", min: 0, max: 4500 }"]);
    const loaded = site.load();
    const rt = new Runtime(loaded, silent);
    await rt.start();
    cleanups.push(() => rt.stop("test"));
    const sock = connect({ port, host: "127.0.0.1" });
    await new Promise((r) => sock.once("connect", r));
    const c = new RawClient(sock);
    cleanups.push(() => void sock.destroy());
    device.holding[5] = 1234;
    expect(await c.request(1, "03 0005 0001")).toBe("030204d2");
    expect(await c.request(1, "06 0064 0bb8")).toBe("8601"); // no window yet
    const opened = (await controlCall(loaded.config.control.socket, "window.open", { role: "engineer", minutes: 5, reason: "pump 1 speed change" })) as { id: string };
    expect(opened).toBeTruthy();
    expect(await c.request(1, "06 0064 0bb8")).toBe("0600640bb8"); // 3000 rpm, in bounds
    expect(await c.request(1, "06 0064 2710")).toBe("8601"); // 10000 rpm: out of bounds
    expect(device.holding[100]).toBe(3000);
    expect(device.received).toEqual(["1:0300050001", "1:0600640bb8"]);
    const status = (await controlCall(loaded.config.control.socket, "modbus.status")) as { running: boolean; windows: unknown[] };
    expect(status.running).toBe(true);
    expect(status.windows.length).toBe(1);
    rt.recorder.flush();
    const bodies = rt.outbox.readAfter(0, 10_000).map((r) => JSON.parse(r.body) as Body);
    expect(bodies.some((b) => b.ocsf.class_uid === 5019)).toBe(true); // window opened (audit)
    expect(bodies.filter((b) => b.class === "finding" && b.ocsf.class_uid === 4001).length).toBeGreaterThanOrEqual(2); // denials
    expect(bodies.some((b) => b.class === "audit" && b.ocsf.class_uid === 4001)).toBe(true); // allowed write audit
  });

  /** A daemon polling tank level L_T3 (3.50 m) from a simulated PLC every 50 ms into the detectors. */
  async function polledTankSite() {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const device = new SimDevice();
    const devPort = await device.listen(0);
    cleanups.push(() => device.close());
    device.input[30] = 350; // 3.50 m
    const site = makeSite(t.dir);
    appendFileSync(
      site.cfgFile,
      `
modbus:
  upstreams:
    - { name: plc, type: tcp, target: "127.0.0.1:${devPort}" }
points:
  L_T3:
    source: { modbus: { device: plc, unit: 1, table: input, address: 30, scale: 0.01 } }
    unit: m
    kind: level
    range: { min: 0, max: 6.5 }
    poll_interval_ms: 50
detection:
  close_after: 2
`,
    );
    const loaded = site.load();
    const rt = new Runtime(loaded, silent);
    await rt.start();
    cleanups.push(() => rt.stop("test"));
    return { device, rt, loaded };
  }

  it("polls configured points into the detectors, which record an out-of-range finding as an incident", async () => {
    const { device, rt } = await polledTankSite();
    await detectionReadings(rt, 5, 10_000);
    device.input[30] = 990; // 9.90 m: beyond the tank's physical range
    await findingFor(rt, /L_T3/, 10_000);
  });

  it("maintenance on a point through the control socket: an audit event, its findings suppressed until it ends", async () => {
    const { device, rt, loaded } = await polledTankSite();
    const ctl = loaded.config.control.socket;
    await detectionReadings(rt, 5, 10_000);
    await controlCall(ctl, "maintenance.start", { points: ["L_T3"], reason: "level sensor calibration", by: "carol" });
    await until(() => outboxBodies(rt).some((b) => b.class === "audit" && /Maintenance started on L_T3 by carol/.test(b.ocsf.message)), 10_000, "the maintenance audit event");
    device.input[30] = 990; // out of range while the sensor is being calibrated
    const before = ((await controlCall(ctl, "detection.status")) as { readings: number; suppressed: number }).readings;
    await detectionReadings(rt, before + 20, 10_000);
    expect(((await controlCall(ctl, "detection.status")) as { suppressed: number }).suppressed).toBeGreaterThan(0);
    expect(outboxBodies(rt).some((b) => b.class === "finding" && b.ocsf.class_uid === 2004 && /L_T3/.test(b.ocsf.message))).toBe(false);
    await controlCall(ctl, "maintenance.end", { points: ["L_T3"], by: "carol" });
    await findingFor(rt, /L_T3/, 10_000);
  });

  it("refuses to start a Modbus/TCP Security listener whose private key others can read", async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const { writeFileSync } = await import("node:fs");
    const { join } = await import("node:path");
    const { ModbusProxyService } = await import("../../protocols/modbus/service");
    const { modbusConfigSchema } = await import("../../protocols/modbus/config");
    for (const f of ["server.crt", "ca.crt"]) writeFileSync(join(t.dir, f), "-----BEGIN CERTIFICATE-----\n");
    writeFileSync(join(t.dir, "server.key"), "-----BEGIN PRIVATE KEY-----\n", { mode: 0o644 });
    const port = await freePort();
    const svc = new ModbusProxyService({
      config: modbusConfigSchema.parse({ listeners: [{ name: "s", type: "tls", listen: `127.0.0.1:${port}`, tls: { cert_file: join(t.dir, "server.crt"), key_file: join(t.dir, "server.key"), ca_file: join(t.dir, "ca.crt") } }] }),
      events: { record: () => undefined },
    });
    await expect(svc.start()).rejects.toMatchObject({ code: "KEY_PERMISSIONS" });
  });
});
