import { afterEach, describe, expect, it } from "vitest";
import { appendFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Runtime } from "../../../agent/runtime";
import { buildProgram } from "../../../agent/cli";
import { makeSite, silent, tempDir, until } from "../../helpers/fixture";
import { detectionReadings, findingFor, outboxBodies, opcuaOf } from "../../helpers/runtime";
import { stationYaml, TestOpcuaServer } from "./_server";

/** Runs a `gatewarden` command in this process and returns what it printed. */
async function cli(args: string[]): Promise<string> {
  let out = "";
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((s: string) => ((out += s), true)) as typeof process.stdout.write;
  try {
    await (await buildProgram()).parseAsync(["node", "gatewarden", ...args]);
  } finally {
    process.stdout.write = write;
  }
  return out;
}

describe("daemon with OPC UA points", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  it("reads OPC UA points by subscription into the detectors, records an out-of-range finding, and shows the link in `opcua status`", async () => {
    const t = tempDir("gw-opcua-daemon-");
    cleanups.push(t.cleanup);
    const server = new TestOpcuaServer({ dir: t.dir, users: { gatewarden: "cabinet-42" } });
    await server.start();
    cleanups.push(() => server.stop());
    const site = makeSite(t.dir);
    writeFileSync(join(site.gwDir, "keys", "plc.pass"), "cabinet-42\n", { mode: 0o600 });
    appendFileSync(site.cfgFile, stationYaml(server) + "detection:\n  close_after: 2\n");
    const loaded = site.load();
    const rt = new Runtime(loaded, silent);
    await rt.start();
    cleanups.push(() => rt.stop("test"));
    await detectionReadings(rt, 5, 15_000);
    server.values["Tank.Level"] = 9.9; // beyond the tank's physical range
    await findingFor(rt, /L_T3/, 10_000);
    expect(outboxBodies(rt).some((b) => b.ocsf.class_uid === 4001 && b.ocsf.message === "OPC UA server station is up (SignAndEncrypt/Basic256Sha256)")).toBe(true);
    // `gatewarden status` says how many readings reached the detectors.
    const status = await cli(["status", "--config", site.cfgFile]);
    expect(status).toMatch(/^detectors   [1-9]\d* readings taken$/m);
    // The OPC UA side runs in its own process, which both status commands show.
    const pid = opcuaOf(rt).status().pid!;
    expect(pid).not.toBe(process.pid);
    expect(status).toMatch(new RegExp(`^opcua       process running, pid ${pid}, 0 restarts, RSS [1-9]\\d* MB of 320 MB$`, "m"));
    const out = await cli(["opcua", "status", "--config", site.cfgFile]);
    expect(out).toMatch(new RegExp(`^opcua       process running, pid ${pid}, 0 restarts, RSS \\d+ MB of 320 MB\nclient certificate .*client_certificate\\.pem\n  SHA-1 thumbprint [0-9a-f]{40}, `));
    expect(out).toMatch(new RegExp(`server station ${server.endpoint.replace(/\./g, "\\.")} \\(SignAndEncrypt/Basic256Sha256\\): up; 1 points by subscription, \\d+ readings, 0 bad`));
  });

  it("an engineer trusts a refused server certificate with `opcua trust`, and readings start", async () => {
    const t = tempDir("gw-opcua-trust-");
    cleanups.push(t.cleanup);
    const server = new TestOpcuaServer({ dir: t.dir });
    await server.start();
    cleanups.push(() => server.stop());
    const site = makeSite(t.dir);
    appendFileSync(
      site.cfgFile,
      `
opcua:
  servers:
    - { name: station, endpoint: "${server.endpoint}", reconnect_min_ms: 30000, reconnect_max_ms: 60000 }
points:
  P_J14:
    source: { opcua: { server: station, node_id: "ns=1;s=Tank.Level" } }
    unit: bar
    kind: pressure
    range: { min: 0, max: 10 }
    poll_interval_ms: 50
`,
    );
    const rt = new Runtime(site.load(), silent);
    await rt.start();
    cleanups.push(() => rt.stop("test"));
    await until(() => outboxBodies(rt).some((b) => b.ocsf.class_uid === 3002), 15_000, "the refusal event");
    const status = await cli(["opcua", "status", "--config", site.cfgFile]);
    const thumb = /refused server certificate ([0-9a-f]{40}) /.exec(status)?.[1];
    expect(thumb, status).toBeDefined();
    expect(status).toContain(`gatewarden opcua trust ${thumb}`);
    expect(await cli(["opcua", "trust", thumb!, "--config", site.cfgFile])).toMatch(new RegExp(`^trusted ${thumb} `));
    await detectionReadings(rt, 3, 10_000);
    const audit = outboxBodies(rt).find((b) => b.ocsf.class_uid === 5019)!;
    expect(audit.ocsf.message).toMatch(new RegExp(`^OPC UA server certificate ${thumb} .* trusted by cli:`));
  });
});
