import { afterEach, describe, expect, it } from "vitest";
import { appendFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Runtime } from "../../../agent/runtime";
import { buildProgram } from "../../../agent/cli";
import { makeSite, silent, tempDir } from "../../helpers/fixture";
import { detectionReadings, findingFor, outboxBodies } from "../../helpers/runtime";
import { TestOpcuaServer } from "./_server";

describe("daemon with OPC UA points", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  it("polls OPC UA points into the detectors, records an out-of-range finding, and shows the link in `opcua status`", async () => {
    const t = tempDir("gw-opcua-daemon-");
    cleanups.push(t.cleanup);
    const server = new TestOpcuaServer({ dir: t.dir, users: { gatewarden: "cabinet-42" } });
    await server.start();
    cleanups.push(() => server.stop());
    const site = makeSite(t.dir);
    writeFileSync(join(site.gwDir, "keys", "plc.pass"), "cabinet-42\n", { mode: 0o600 });
    appendFileSync(
      site.cfgFile,
      `
opcua:
  servers:
    - name: station
      endpoint: "${server.endpoint}"
      server_certificate: "${server.certFile}"
      user: { username: gatewarden, password_file: keys/plc.pass }
points:
  L_T3:
    source: { opcua: { server: station, node_id: "ns=1;s=Tank.Level" } }
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
    await detectionReadings(rt, 5, 15_000);
    server.values["Tank.Level"] = 9.9; // beyond the tank's physical range
    await findingFor(rt, /L_T3/, 10_000);
    expect(outboxBodies(rt).some((b) => b.ocsf.class_uid === 4001 && b.ocsf.message === "OPC UA server station is up (SignAndEncrypt/Basic256Sha256)")).toBe(true);
    let out = "";
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((s: string) => ((out += s), true)) as typeof process.stdout.write;
    try {
      await buildProgram().parseAsync(["node", "gatewarden", "opcua", "status", "--config", site.cfgFile]);
    } finally {
      process.stdout.write = write;
    }
    expect(out).toMatch(/^client certificate .*client_certificate\.pem\n  SHA-1 thumbprint [0-9a-f]{40}, /);
    expect(out).toMatch(new RegExp(`server station ${server.endpoint.replace(/\./g, "\\.")} \\(SignAndEncrypt/Basic256Sha256\\): up; 1 points, \\d+ readings, 0 bad`));
  });
});
