import { appendFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { MessageSecurityMode, OPCUACertificateManager, OPCUAClient, SecurityPolicy } from "node-opcua";
import { afterAll, describe, expect, it } from "vitest";
import { controlCall } from "../../../agent/core/control-client";
import { Runtime } from "../../../agent/runtime";
import type { OpcuaStatus } from "../../../protocols/opcua/service";
import { makeSite, silent, tempDir, until } from "../../helpers/fixture";
import { outboxBodies, opcuaOf } from "../../helpers/runtime";
import { TestOpcuaServer } from "./_server";

/**
 * Legacy upstream policies: a device that offers only Basic256 is reached with it when the
 * server opts in; each opted-in server is a posture finding at severity 3; Basic128Rsa15 gets
 * the process-wide `--security-revert` in the OPC UA process only; the front offers neither.
 */
describe("legacy OPC UA policies upstream", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it("are opt-in per server, reported as posture at severity 3, and never offered on the front", async () => {
    const t = tempDir("gw-opcua-legacy-");
    cleanups.push(t.cleanup);
    const legacy = new TestOpcuaServer({ dir: t.dir, modes: ["SignAndEncrypt"], policies: [SecurityPolicy.Basic256], plant: true });
    await legacy.start();
    cleanups.push(() => legacy.stop());
    const site = makeSite(t.dir);
    appendFileSync(
      site.cfgFile,
      `
opcua:
  servers:
    - { name: old, endpoint: "${legacy.endpoint}", security_policy: Basic256, allow_legacy_policy: true, server_certificate: "${legacy.certFile}" }
    - { name: older, endpoint: "${legacy.endpoint}", security_policy: Basic128Rsa15, allow_legacy_policy: true, server_certificate: "${legacy.certFile}", reconnect_min_ms: 60000, reconnect_max_ms: 60000 }
  front:
    server: old
    host: 127.0.0.1
    port: 0
    roles:
      operator:
        nodes:
          - { browse_path: Plant/Tank.Level, allow: [browse, read] }
`,
    );
    const loaded = site.load();
    const rt = new Runtime(loaded, silent);
    await rt.start();
    cleanups.push(() => rt.stop("test"));
    const status = async () => (await opcuaOf(rt).opcuaStatus()) as unknown as OpcuaStatus;
    // The front mirrors the device over the Basic256 link.
    await until(async () => (await status()).front?.state === "serving", 30_000, "the front to mirror the Basic256 device");
    expect(outboxBodies(rt).some((b) => b.ocsf.message === "OPC UA server old is up (SignAndEncrypt/Basic256)")).toBe(true);

    // Only the OPC UA process runs with Node's PKCS#1 v1.5 revert, because a server opted into Basic128Rsa15.
    const pid = opcuaOf(rt).status().pid!;
    expect(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")).toContain("--security-revert=CVE-2023-46809");
    expect(process.execArgv.join(" ")).not.toContain("security-revert");

    // Each opted-in server is a posture finding at severity 3, and `posture` lists it.
    const findings = () => outboxBodies(rt).filter((b) => b.class === "finding" && b.ocsf.finding_info?.title === "Legacy OPC UA security policy") as unknown as { ocsf: { severity_id: number; message: string } }[];
    await until(() => findings().length === 2, 15_000, "two legacy-policy posture findings");
    expect(findings().map((f) => [f.ocsf.severity_id, f.ocsf.message])).toEqual([
      [3, `Legacy OPC UA security policy: server old (${legacy.endpoint}) is reached with Basic256 (SHA-1), opted in with allow_legacy_policy; the front never offers it`],
      [3, `Legacy OPC UA security policy: server older (${legacy.endpoint}) is reached with Basic128Rsa15 (SHA-1), opted in with allow_legacy_policy; the front never offers it`],
    ]);
    const posture = (await controlCall(loaded.config.control.socket, "posture")) as { opcua_legacy_policies: unknown[] };
    expect(posture.opcua_legacy_policies).toEqual([
      { server: "old", endpoint: legacy.endpoint, policy: "Basic256" },
      { server: "older", endpoint: legacy.endpoint, policy: "Basic128Rsa15" },
    ]);

    // The front's endpoints: SignAndEncrypt with the three modern policies, nothing else.
    const front = `opc.tcp://127.0.0.1:${(await status()).front!.port}`;
    const c = OPCUAClient.create({ endpointMustExist: false, connectionStrategy: { maxRetry: 0 }, clientCertificateManager: new OPCUACertificateManager({ rootFolder: join(t.dir, "client-pki"), automaticallyAcceptUnknownCertificate: true, disableFileWatchers: true }) });
    await c.connect(front);
    const endpoints = await c.getEndpoints();
    await c.disconnect();
    expect(new Set(endpoints.map((e) => e.securityMode))).toEqual(new Set([MessageSecurityMode.SignAndEncrypt]));
    expect([...new Set(endpoints.map((e) => e.securityPolicyUri))].sort()).toEqual([SecurityPolicy.Aes128_Sha256_RsaOaep, SecurityPolicy.Aes256_Sha256_RsaPss, SecurityPolicy.Basic256Sha256].sort());
  }, 90_000);
});
