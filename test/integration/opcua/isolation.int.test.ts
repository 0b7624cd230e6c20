import { createPublicKey } from "node:crypto";
import { appendFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import ModbusRTU from "modbus-serial";
import { afterAll, describe, expect, it } from "vitest";
import { controlCall } from "../../../agent/core/control-client";
import { checkEnvelope, type Envelope } from "../../../agent/core/envelope";
import { loadDeviceKey } from "../../../agent/core/keys";
import { Runtime } from "../../../agent/runtime";
import { makeSite, silent, tempDir, until } from "../../helpers/fixture";
import { detectionReadings, opcuaOf } from "../../helpers/runtime";
import { engineerModbusYaml } from "../modbus/_daemon-site";
import { freePort, PYTHON, pythonHas, startPyServer } from "../modbus/_peers";
import { stationYaml, TestOpcuaServer } from "./_server";

const HAS_PYMODBUS = pythonHas("pymodbus");

/**
 * Isolation: the OPC UA side runs in its own process. Killed with SIGKILL, the daemon restarts
 * it with back-off while the Modbus proxy keeps answering a real client (modbus-serial against
 * the pymodbus device), and events from the OPC UA side after the restart reach the outbox
 * signed by the core.
 */
describe.skipIf(!HAS_PYMODBUS)(`the OPC UA process (Modbus device: ${PYTHON ?? "/usr/bin/python3"} with pymodbus)`, () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it("is killed with SIGKILL and restarted by the daemon while the Modbus proxy keeps answering", async () => {
    const t = tempDir("gw-opcua-iso-");
    cleanups.push(t.cleanup);
    const { proc, listening } = await startPyServer(["tcp", "0"]);
    cleanups.push(() => void proc.kill("SIGKILL"));
    const ua = new TestOpcuaServer({ dir: t.dir, users: { gatewarden: "cabinet-42" } });
    await ua.start();
    cleanups.push(() => ua.stop());
    const port = await freePort();
    const site = makeSite(t.dir);
    writeFileSync(join(site.gwDir, "keys", "plc.pass"), "cabinet-42\n", { mode: 0o600 });
    appendFileSync(site.cfgFile, engineerModbusYaml(port, listening as number) + stationYaml(ua, ["process: { restart_min_ms: 1500, restart_max_ms: 10000 }"]));
    const loaded = site.load();
    const rt = new Runtime(loaded, silent);
    await rt.start();
    cleanups.push(() => rt.stop("test"));
    const sock = loaded.config.control.socket;
    const opcua = opcuaOf(rt);

    // SCADA polls the pymodbus device through the proxy for the whole test.
    const client = new ModbusRTU();
    await client.connectTCP("127.0.0.1", { port });
    client.setID(1);
    client.setTimeout(5000);
    cleanups.push(() => new Promise<void>((r) => client.close(() => r())));
    const answered: number[] = [];
    const failed: string[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        try {
          const r = await client.readHoldingRegisters(0, 5);
          expect(r.data).toEqual([0, 10, 20, 30, 40]);
          answered.push(Date.now());
        } catch (e) {
          failed.push(String(e));
        }
      }
    })();
    cleanups.push(async () => {
      polling = false;
      await poller;
    });

    const upEvents = () => bodies().filter((b) => b.ocsf.message === "OPC UA server station is up (SignAndEncrypt/Basic256Sha256)");
    const bodies = () => {
      rt.recorder.flush();
      return rt.outbox.readAfter(0, 100_000).map((r) => JSON.parse(r.body) as Envelope & { ocsf: { message: string; unmapped?: Record<string, unknown> } });
    };
    await until(() => upEvents().length === 1, 20_000, "the OPC UA link to come up");
    await detectionReadings(rt, 3, 15_000);
    const pid = opcua.status().pid!;
    expect(pid).toBeGreaterThan(0);
    expect(pid).not.toBe(process.pid);

    process.kill(pid, "SIGKILL");
    await until(() => opcua.status().state === "restarting", 15_000, "the daemon to see the OPC UA process die");
    const downAt = answered.length;
    // While it is down, the proxy goes on answering, and OPC UA commands say why they cannot.
    await until(() => answered.length >= downAt + 20, 30_000, "20 Modbus answers while the OPC UA process is down");
    await until(() => opcua.status().state === "running", 90_000, "the OPC UA process to be restarted");
    const st = opcua.status();
    expect(st).toMatchObject({ state: "running", restarts: 1, last_exit: { reason: "killed by SIGKILL" } });
    expect(st.pid).not.toBe(pid);

    // Events of the OPC UA side after the restart (its link comes up again) reach the outbox,
    // signed and chained by the core; so do the exit and the restart.
    await until(() => upEvents().length === 2, 20_000, "the restarted process's link-up event");
    const readingsBefore = ((await controlCall(sock, "detection.status")) as { readings: number }).readings;
    await detectionReadings(rt, readingsBefore + 3, 15_000);
    const all = bodies();
    const exit = all.find((b) => b.ocsf.message.startsWith(`OPC UA process ${pid} stopped (killed by SIGKILL); restarting in 1500 ms`));
    const restarted = all.find((b) => b.ocsf.message === `OPC UA process restarted (pid ${st.pid}, restart 1)`);
    expect(exit, all.map((b) => b.ocsf.message).join("\n")).toMatchObject({ class: "system", severity: 4 });
    expect(restarted).toMatchObject({ class: "system" });
    const key = createPublicKey(loadDeviceKey(loaded.config.device.key));
    const after = upEvents()[1]!;
    for (const e of [exit!, restarted!, after]) expect(checkEnvelope(e, key)).toBe("ok");
    expect(after.seq).toBeGreaterThan(restarted!.seq);

    polling = false;
    await poller;
    expect(failed).toEqual([]);
    // Answers between the exit and the restart, by the events' own times.
    expect(answered.filter((t) => t > exit!.time && t < restarted!.time).length).toBeGreaterThan(0);

    const status = (await controlCall(sock, "status")) as { opcua: { state: string; restarts: number; pid: number } };
    expect(status.opcua).toMatchObject({ state: "running", restarts: 1, pid: st.pid });
  }, 240_000);
});

/** A started in-process daemon reading point L_T3 from a TestOpcuaServer; `process` is its opcua.process line. */
async function stationDaemon(cleanups: (() => Promise<void> | void)[], prefix: string, process: string) {
  const t = tempDir(prefix);
  cleanups.push(t.cleanup);
  const ua = new TestOpcuaServer({ dir: t.dir, users: { gatewarden: "cabinet-42" } });
  await ua.start();
  cleanups.push(() => ua.stop());
  const site = makeSite(t.dir);
  writeFileSync(join(site.gwDir, "keys", "plc.pass"), "cabinet-42\n", { mode: 0o600 });
  appendFileSync(site.cfgFile, stationYaml(ua, [process]));
  const loaded = site.load();
  const rt = new Runtime(loaded, silent);
  await rt.start();
  cleanups.push(() => rt.stop("test"));
  return { rt, loaded };
}

describe("the OPC UA process's memory ceiling", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it("kills the process past opcua.process.max_rss_mb and restarts it with back-off, each a signed event", async () => {
    // 64 MB is less than node-opcua needs to load: every start ends past the ceiling. A run as
    // long as restart_max_ms counts as stable and starts the back-off over; the RSS is read
    // every 2 s, and a loaded machine stretches a run past 1 s, so the ceiling is 8 s here.
    const { rt, loaded } = await stationDaemon(cleanups, "gw-opcua-rss-", "process: { max_rss_mb: 64, restart_min_ms: 250, restart_max_ms: 8000 }");
    const opcua = opcuaOf(rt);
    await until(() => opcua.status().restarts >= 3, 60_000, "three restarts after the ceiling");
    rt.recorder.flush();
    const key = createPublicKey(loadDeviceKey(loaded.config.device.key));
    const exits = rt.outbox
      .readAfter(0, 100_000)
      .map((r) => JSON.parse(r.body) as Envelope & { ocsf: { message: string; unmapped?: { opcua_process?: { restart_in_ms: number } } } })
      .filter((e) => /^OPC UA process \d+ stopped \(/.test(e.ocsf.message));
    expect(exits.length).toBeGreaterThanOrEqual(3);
    expect(exits.filter((e) => /^OPC UA process \d+ stopped \(killed by the daemon: RSS \d+ MB over opcua\.process\.max_rss_mb 64\); restarting in \d+ ms$/.test(e.ocsf.message)).length).toBeGreaterThan(0);
    for (const e of exits) expect(checkEnvelope(e, key)).toBe("ok");
    // Back-off: doubling from restart_min_ms.
    expect(exits.slice(0, 3).map((e) => e.ocsf.unmapped!.opcua_process!.restart_in_ms)).toEqual([250, 500, 1000]);
  }, 90_000);
});

describe("an OPC UA process that stops answering", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it("is killed after opcua.process.unresponsive_ms and restarted", async () => {
    // 15 s, not less: the check also runs while a child starts, and a loaded machine keeps a
    // starting child from saying it is alive for several seconds (node-opcua's load blocks it),
    // so a shorter bound can kill a restarted child again before it is up.
    const { rt } = await stationDaemon(cleanups, "gw-opcua-stuck-", "process: { unresponsive_ms: 15000, restart_min_ms: 500 }");
    const opcua = opcuaOf(rt);
    await until(() => opcua.status().state === "running", 90_000, "the OPC UA process to run");
    const pid = opcua.status().pid!;
    const before = opcua.status().restarts;
    process.kill(pid, "SIGSTOP"); // alive, but says nothing any more
    cleanups.push(() => {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // killed by the daemon already
      }
    });
    await until(() => opcua.status().restarts > before && opcua.status().state === "running", 105_000, "the stuck process to be killed and restarted");
    expect(opcua.status().last_exit!.reason).toBe("killed by the daemon: no message for 15 s (it says it is alive every 2 s)");
    expect(opcua.status().pid).not.toBe(pid);
  }, 240_000);
});
