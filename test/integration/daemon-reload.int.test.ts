import { afterEach, describe, expect, it } from "vitest";
import { appendFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { controlCall } from "../../agent/core/control-client";
import { Runtime } from "../../agent/runtime";
import type { RunningDetection } from "../../agent/detection/start";
import { SimDevice } from "../../agent/demo/sim-server";
import { execFile } from "node:child_process";
import { BIN } from "../helpers/cli";
import { makeSite, silent, tempDir } from "../helpers/fixture";
import { outboxBodies } from "../helpers/runtime";
import { RawClient } from "./modbus/_harness";
import { freePort } from "./modbus/_peers";

/** The built CLI, asynchronously: the daemon under test answers in this very process. */
function gw(args: string[]): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 30_000 }, (err, stdout) => resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout }));
  });
}

const policy = (holding: string, address = "127.0.0.1") => `identities:\n  - { match: { address: ["${address}"] }, role: scada }\nroles:\n  scada:\n    units: [1]\n    functions: [read-only]\n    read: { holding: ["${holding}"] }\n`;

describe("gatewarden reload / SIGHUP", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  const point = (id: string, addr: number, kind = "level") => `  ${id}:\n    source: { modbus: { device: plc, unit: 1, table: holding, address: ${addr} } }\n    unit: m\n    kind: ${kind}\n    range: { min: 0, max: 10 }\n`;

  /** A daemon in this process, its proxy on `port` before a simulated device: `policyLine` is the modbus section's policy, `files` writes files beside the config first, `rest` is more config. */
  async function startDaemon(policyLine: string, files: (gwDir: string) => void, rest: string) {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const device = new SimDevice();
    const devPort = await device.listen(0);
    cleanups.push(() => device.close());
    const port = await freePort();
    const site = makeSite(t.dir);
    files(site.gwDir);
    const modbus = `modbus:\n  listeners:\n    - { name: scada, type: tcp, listen: "127.0.0.1:${port}" }\n  upstreams:\n    - { name: plc, type: tcp, target: "127.0.0.1:${devPort}" }\n  routes:\n    - { unit: 1, upstream: plc }\n  ${policyLine}\n`;
    appendFileSync(site.cfgFile, `${modbus}${rest}`);
    const rt = new Runtime(site.load(), silent);
    await rt.start();
    cleanups.push(() => rt.stop("test"));
    return { site, device, port, rt };
  }

  it("takes a changed policy and points at once, keeps the old on a bad file and says why, and names what needs a restart", async () => {
    const { site, device, port, rt } = await startDaemon("policy_file: policy.yaml", (dir) => writeFileSync(join(dir, "policy.yaml"), policy("0-9")), `points:\n${point("L_1", 1)}`);
    const policyFile = join(site.gwDir, "policy.yaml");
    const sock = connect({ port, host: "127.0.0.1" });
    await new Promise((r) => sock.once("connect", r));
    cleanups.push(() => void sock.destroy());
    const c = new RawClient(sock);
    device.holding[50] = 7;
    expect(await c.request(1, "03 0032 0001")).toBe("8301"); // holding 50: denied

    // A wider policy and a second point: taken at once, on the open connection too.
    writeFileSync(policyFile, policy("0-99"));
    appendFileSync(site.cfgFile, point("L_50", 50));
    const ok = JSON.parse((await gw(["reload", "--config", site.cfgFile, "--json"])).stdout) as { ok: boolean; reloaded: string[]; restart_needed: string[] };
    expect(ok).toMatchObject({ ok: true, restart_needed: [] });
    expect(ok.reloaded).toEqual(expect.arrayContaining(["modbus policy", "points"]));
    expect(await c.request(1, "03 0032 0001")).toBe("03020007");
    // The new point L_50 is tapped from that read and reaches the detectors.
    const readings = async () => ((await controlCall(rt.loaded.config.control.socket, "detection.status")) as { readings: number }).readings;
    const end = Date.now() + 10_000;
    while ((await readings()) < 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
    expect(await readings()).toBeGreaterThanOrEqual(1);

    // A bad policy file: refused with its code, the running policy stays, and it is recorded.
    writeFileSync(policyFile, policy("0-99", "127.0.0.300"));
    const bad = await gw(["reload", "--config", site.cfgFile, "--json"]);
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.stdout).error.code).toBe("POLICY_INVALID");
    expect(await c.request(1, "03 0032 0001")).toBe("03020007");
    expect(rt.reload("SIGHUP")).toMatchObject({ ok: false, code: "POLICY_INVALID" });
    const refused = outboxBodies(rt).filter((b) => (b.ocsf as { unmapped?: { error_type?: string } }).unmapped?.error_type === "reload_refused");
    expect(refused).toHaveLength(2);

    // A narrower policy by SIGHUP's path; a heartbeat change waits for a restart, and says so.
    writeFileSync(policyFile, policy("0-9"));
    const set = JSON.parse((await gw(["config", "set", "heartbeat.interval_ms", "5000", "--config", site.cfgFile, "--json"])).stdout) as { takes_effect: string };
    expect(set.takes_effect).toBe("restart");
    expect(JSON.parse((await gw(["config", "set", "modbus.policy_file", "policy.yaml", "--config", site.cfgFile, "--json"])).stdout).takes_effect).toBe("reload");
    expect(rt.reload("SIGHUP")).toMatchObject({ ok: true, restart_needed: ["heartbeat.interval_ms"] });
    expect(await c.request(1, "03 0032 0001")).toBe("8301");
    const audits = outboxBodies(rt).filter((b) => b.class === "audit" && (b.ocsf as { activity_name?: string }).activity_name === "Configuration Reloaded");
    expect(audits).toHaveLength(2);
  });

  it("a site file naming a point that is not configured is refused at reload: the running site stays, and the reason names file, line and key", async () => {
    const relation = (name: string, state: string) => `name: ${name}\nrelations:\n  - target: F_1\n    states: [${state}]\n`;
    const { site, rt } = await startDaemon("policy: { roles: {} }", (dir) => writeFileSync(join(dir, "site.yaml"), relation("before", "S_1")), `detection:\n  site: site.yaml\npoints:\n${point("F_1", 1, "flow")}${point("S_1", 2, "state")}`);
    const siteFile = join(site.gwDir, "site.yaml");
    const running = () => Object.keys((rt as unknown as { detection: RunningDetection }).detection.engine.snapshot()).filter((k) => k.startsWith("site/"));
    expect(running()).toEqual(["site/before"]);

    writeFileSync(siteFile, relation("after", "S_l"));
    const bad = await gw(["reload", "--config", site.cfgFile, "--json"]);
    expect(bad.code).toBe(1);
    const err = JSON.parse(bad.stdout).error as { code: string; message: string };
    expect(err.code).toBe("SITE_INVALID");
    expect(err.message).toContain(`${siteFile}:4: relations.0.states.0: S_l is not among the configured points (did you mean S_1?)`);
    expect(running()).toEqual(["site/before"]);
    expect(rt.reload("SIGHUP")).toMatchObject({ ok: false, code: "SITE_INVALID" });
    const refused = outboxBodies(rt).filter((b) => (b.ocsf as { unmapped?: { error_type?: string } }).unmapped?.error_type === "reload_refused");
    expect(refused).toHaveLength(2);
    expect((refused[0]!.ocsf as { message: string }).message).toContain(`${siteFile}:4: relations.0.states.0`);

    writeFileSync(siteFile, relation("after", "S_1"));
    expect(rt.reload("SIGHUP")).toMatchObject({ ok: true });
    expect(running()).toEqual(["site/after"]);
  });
});
