import { afterEach, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { EventDraft } from "../../../agent/core/events";
import type { Reading } from "../../../agent/core/readings";
import { opcuaConfigSchema } from "../../../protocols/opcua/config";
import type { OpcuaPolledPoint } from "../../../protocols/opcua/poller";
import { OpcuaService } from "../../../protocols/opcua/service";
import { silent, tempDir, until } from "../../helpers/fixture";
import { OPENSSL } from "../modbus/_certs";
import { HoldingRelay } from "./_relay";
import { TestOpcuaServer } from "./_server";

/** The environment for the openssl binary: node-opcua's PKI sets OPENSSL_CONF for its own use when it loads. */
function opensslEnv(): NodeJS.ProcessEnv {
  const { OPENSSL_CONF: _, ...env } = process.env;
  return env;
}

/**
 * A certificate no test server presents, to pin: made by openssl in a moment, where a second
 * node-opcua server would load a whole address space (tens of seconds on a loaded machine).
 */
function otherCertificate(dir: string): string {
  execFileSync(OPENSSL!, ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.pem", "-subj", "/CN=another OPC UA server", "-days", "2"], { cwd: dir, stdio: "pipe", env: opensslEnv() });
  return join(dir, "other.pem");
}

const pt = (id: string, node: string, over: Partial<OpcuaPolledPoint["source"]> = {}): OpcuaPolledPoint => ({ id, source: { server: "plc", node_id: node, scale: 1, offset: 0, ...over }, interval_ms: 50 });

describe("OPC UA client: secured sessions to a real node-opcua server, polled into readings", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  async function setup(o: { users?: Record<string, string>; modes?: ("SignAndEncrypt" | "Sign" | "None")[] } = { users: { operator: "pump-station-7" } }) {
    const t = tempDir("gw-opcua-");
    cleanups.push(t.cleanup);
    const server = new TestOpcuaServer({ dir: t.dir, ...o });
    await server.start();
    cleanups.push(() => server.stop());
    const pw = join(t.dir, "plc.pass");
    writeFileSync(pw, "pump-station-7\n", { mode: 0o600 });
    return { t, server, pw };
  }

  function service(dir: string, server: Record<string, unknown>, points: OpcuaPolledPoint[]) {
    const events: EventDraft[] = [];
    const readings: Reading[] = [];
    const config = opcuaConfigSchema.parse({ pki_dir: join(dir, "client-pki"), servers: [{ name: "plc", reconnect_min_ms: 200, reconnect_max_ms: 1000, ...server }] });
    const svc = new OpcuaService({ config, deviceId: "gw-test", points, events: { record: (d) => events.push(d) }, readings: { reading: (r) => readings.push(r) }, log: silent });
    cleanups.push(() => svc.stop());
    return { svc, events, readings };
  }

  it("reads over SignAndEncrypt with a user, converts types and scales, and reports bad nodes once", async () => {
    const { t, server, pw } = await setup();
    const { svc, events, readings } = service(
      t.dir,
      { endpoint: server.endpoint, server_certificate: server.certFile, user: { username: "operator", password_file: pw }, points_mode: "poll" },
      [pt("level", "ns=1;s=Tank.Level", { scale: 100, offset: 1 }), pt("running", "ns=1;s=Pump.Running"), pt("total", `nsu=${server.namespaceUri};s=Meter.Total`), pt("name", "ns=1;s=Tag.Name"), pt("missing", "ns=1;s=No.Such")],
    );
    await svc.start();
    await until(() => new Set(readings.map((r) => r.point)).size >= 3, 15_000, "readings of three points");
    const last = (id: string) => readings.filter((r) => r.point === id).at(-1)!;
    expect(last("level").value).toBe(251);
    expect(last("level").source).toBe("opcua:plc/ns=1;s=Tank.Level");
    expect(last("running").value).toBe(1);
    expect(last("total").value).toBe(1234);
    expect(readings.some((r) => r.point === "name" || r.point === "missing")).toBe(false);
    server.values["Tank.Level"] = 3.25;
    await until(() => last("level").value === 326, 5000, "the new level");
    await until(() => events.filter((e) => e.ocsf.class_uid === 2004).length >= 2, 5000, "unreadable-point findings");
    const bad = events.filter((e) => e.ocsf.class_uid === 2004).map((e) => e.ocsf.message);
    expect(bad.some((m) => /Point name .*not a number \(string\)/.test(m))).toBe(true);
    expect(bad.some((m) => /Point missing .*BadNodeIdUnknown/.test(m))).toBe(true);
    const polls = svc.status().servers[0]!.polls;
    await until(() => svc.status().servers[0]!.polls > polls + 10, 5000, "more polls");
    expect(events.filter((e) => e.ocsf.class_uid === 2004).length).toBe(2); // held: not one per poll
    const up = events.find((e) => e.ocsf.class_uid === 4001 && e.ocsf.activity_id === 1)!;
    expect(up.ocsf.message).toBe("OPC UA server plc is up (SignAndEncrypt/Basic256Sha256)");
    const st = svc.status();
    expect(st.servers[0]).toMatchObject({ name: "plc", state: "up", points: 5 });
    expect(st.own_certificate?.thumbprint).toMatch(/^[0-9a-f]{40}$/);
    expect(statSync(join(t.dir, "client-pki", "own", "private", "private_key.pem")).mode & 0o077).toBe(0);
  });

  it("refuses a server certificate it was not told to trust, saves it for review and names its thumbprint", async () => {
    const { t, server, pw } = await setup();
    const { svc, events, readings } = service(t.dir, { endpoint: server.endpoint, user: { username: "operator", password_file: pw } }, [pt("level", "ns=1;s=Tank.Level")]);
    await svc.start();
    await until(() => events.some((e) => e.ocsf.class_uid === 3002), 15_000, "a certificate refusal");
    const e = events.find((x) => x.ocsf.class_uid === 3002)!;
    expect(e.class).toBe("finding");
    expect(e.severity).toBe(4);
    const cert = (e.ocsf.unmapped as { opcua: { certificate: { thumbprint: string; file: string } } }).opcua.certificate;
    expect(e.ocsf.message).toContain(cert.thumbprint);
    expect(existsSync(cert.file)).toBe(true);
    expect(readdirSync(join(t.dir, "client-pki", "rejected")).length).toBe(1);
    await new Promise((r) => setTimeout(r, 1500)); // several reconnect attempts
    expect(events.filter((x) => x.ocsf.class_uid === 3002).length).toBe(1);
    expect(readings.length).toBe(0);
    expect(svc.status().servers[0]!.state).not.toBe("up");
  });

  it("refuses to trust a certificate of a pinned server, saying what to change", async () => {
    const { t, server, pw } = await setup();
    const other = otherCertificate(t.dir);
    // Pinned to another certificate: this server presents one the pin forbids.
    const { svc, events } = service(t.dir, { endpoint: server.endpoint, server_certificate: other, user: { username: "operator", password_file: pw }, reconnect_min_ms: 30_000, reconnect_max_ms: 60_000 }, []);
    await svc.start();
    // The refusal event, not the file in rejected/: the file is written while the attempt is still
    // failing, and only once the link is down has it noted which certificate its server presented.
    await until(() => events.some((x) => x.ocsf.class_uid === 3002), 30_000, "a certificate refusal");
    expect(svc.status().rejected_certificates.length).toBe(1);
    const refused = svc.status().rejected_certificates[0]!;
    const e = await svc.trust(refused.thumbprint, "test").catch((x: unknown) => x);
    expect(e).toMatchObject({ code: "OPCUA_PINNED" });
    expect((e as Error).message).toBe(
      `server plc is pinned to server_certificate ${other}, so trusting ${refused.thumbprint} has no effect. If the device's certificate changed on purpose, point opcua.servers[0].server_certificate at the new certificate (the refused copy is ${refused.file}), or remove server_certificate to rely on the trust list, then restart the daemon`,
    );
    await expect(svc.pkiTrust(refused.sha256, "test")).rejects.toMatchObject({ code: "OPCUA_PINNED" });
    expect(events.filter((x) => x.ocsf.class_uid === 5019)).toEqual([]);
    expect(svc.status().rejected_certificates.length).toBe(1);
  });

  it("trusts a refused certificate named by its thumbprint, records who did it, and connects at once", async () => {
    const { t, server, pw } = await setup();
    const { svc, events, readings } = service(t.dir, { endpoint: server.endpoint, user: { username: "operator", password_file: pw }, reconnect_min_ms: 30_000, reconnect_max_ms: 60_000 }, [pt("level", "ns=1;s=Tank.Level")]);
    await svc.start();
    // The refusal event, not the file in rejected/: the file is written while the attempt is still
    // failing, and only once the link is down has it noted which certificate its server presented.
    await until(() => events.some((x) => x.ocsf.class_uid === 3002), 30_000, "a certificate refusal");
    expect(svc.status().rejected_certificates.length).toBe(1);
    const refused = svc.status().rejected_certificates[0]!;
    await expect(svc.trust("00".repeat(20), "test")).rejects.toMatchObject({ code: "USAGE" });
    await expect(svc.trust("not-hex", "test")).rejects.toMatchObject({ code: "USAGE" });
    const colons = refused.thumbprint.toUpperCase().match(/../g)!.join(":");
    expect(await svc.trust(colons, "cli:engineer")).toMatchObject({ thumbprint: refused.thumbprint });
    // Without the immediate retry the next attempt would be 15-60 s away.
    await until(() => readings.length > 0, 10_000, "readings after trusting");
    const audit = events.find((e) => e.ocsf.class_uid === 5019)!;
    expect(audit.class).toBe("audit");
    expect(audit.ocsf.message).toBe(`OPC UA server certificate ${refused.thumbprint} (${refused.subject}) trusted by cli:engineer`);
    expect(svc.status().rejected_certificates).toEqual([]);
    expect(readdirSync(join(t.dir, "client-pki", "trusted", "certs")).length).toBe(1);
  });

  it("trusting a certificate during an attempt starts the next one as soon as it ends, not after the backoff", async () => {
    const { t, server, pw } = await setup();
    // The device answers slowly: the link's attempt is held in progress until release().
    const relay = new HoldingRelay({ host: "127.0.0.1", port: server.port });
    await relay.start();
    cleanups.push(() => relay.stop());
    // Refused by an earlier run (rejected/ outlives a restart): what the operator trusts.
    const rejected = join(t.dir, "client-pki", "rejected");
    mkdirSync(rejected, { recursive: true });
    copyFileSync(server.certFile, join(rejected, "device.pem"));
    // A backoff of a minute or more: without the wake-up the next attempt is 30-60 s away.
    const { svc, readings } = service(t.dir, { endpoint: relay.endpoint, user: { username: "operator", password_file: pw }, reconnect_min_ms: 60_000, reconnect_max_ms: 120_000, connect_timeout_ms: 120_000 }, [pt("level", "ns=1;s=Tank.Level")]);
    await svc.start();
    await until(() => relay.holdingNow > 0, 30_000, "the link's first attempt to reach the device");
    expect(svc.status().servers[0]!.state).toBe("connecting");
    const refused = svc.status().rejected_certificates[0]!;
    expect(await svc.trust(refused.thumbprint, "cli:engineer")).toMatchObject({ thumbprint: refused.thumbprint });
    // The attempt in progress fails (the device drops it); the next one starts at once.
    relay.release();
    await until(() => readings.length > 0, 15_000, "readings after trusting during an attempt");
    expect(svc.status().servers[0]!.connects).toBe(1);
  });

  it("refuses a server whose certificate is trusted but is not the pinned one", async () => {
    const { t, server, pw } = await setup();
    const other = otherCertificate(t.dir);
    // Trust the real server through the store (first service), then pin another certificate.
    const first = service(t.dir, { endpoint: server.endpoint, server_certificate: server.certFile, user: { username: "operator", password_file: pw } }, []);
    await first.svc.start();
    await until(() => first.svc.status().servers[0]!.state === "up", 15_000, "the first session");
    await first.svc.stop();
    const { svc, events } = service(t.dir, { endpoint: server.endpoint, server_certificate: other, user: { username: "operator", password_file: pw } }, []);
    await svc.start();
    await until(() => events.some((e) => e.ocsf.class_uid === 3002), 15_000, "a pin refusal");
    expect(events.find((e) => e.ocsf.class_uid === 3002)!.ocsf.status_detail).toMatch(/not the configured server_certificate/);
    expect(svc.status().servers[0]!.state).not.toBe("up");
  });

  it("reports a refused password as an authentication failure, once", async () => {
    const { t, server } = await setup();
    const pw = join(t.dir, "wrong.pass");
    writeFileSync(pw, "guess", { mode: 0o600 });
    const { svc, events, readings } = service(t.dir, { endpoint: server.endpoint, server_certificate: server.certFile, user: { username: "operator", password_file: pw } }, [pt("level", "ns=1;s=Tank.Level")]);
    await svc.start();
    await until(() => events.some((e) => e.ocsf.class_uid === 3002), 15_000, "an authentication failure");
    await new Promise((r) => setTimeout(r, 1000));
    const auth = events.filter((e) => e.ocsf.class_uid === 3002);
    expect(auth.length).toBe(1);
    expect(auth[0]!.ocsf.message).toMatch(/refused the session: .*BadUserAccessDenied/);
    expect(JSON.stringify(events)).not.toContain("guess");
    expect(readings.length).toBe(0);
  });

  it("acts as an X.509 user: a trusted user certificate gets a session, an untrusted one an authentication failure", async () => {
    const t = tempDir("gw-opcua-");
    cleanups.push(t.cleanup);
    const ossl = (...args: string[]) => execFileSync(OPENSSL!, args, { cwd: t.dir, stdio: "pipe", env: opensslEnv() });
    for (const n of ["operator", "stranger"])
      ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", `${n}.key`, "-out", `${n}.crt`, "-subj", `/CN=${n}`, "-days", "2", "-addext", "keyUsage=critical,digitalSignature,nonRepudiation,keyEncipherment,dataEncipherment", "-addext", "basicConstraints=critical,CA:FALSE");
    for (const n of ["operator", "stranger"]) chmodSync(join(t.dir, `${n}.key`), 0o600);
    const server = new TestOpcuaServer({ dir: t.dir, userCertificates: [join(t.dir, "operator.crt")] });
    await server.start();
    cleanups.push(() => server.stop());
    const user = (n: string) => ({ certificate_file: join(t.dir, `${n}.crt`), key_file: join(t.dir, `${n}.key`) });
    const ok = service(t.dir, { endpoint: server.endpoint, server_certificate: server.certFile, user: user("operator") }, [pt("level", "ns=1;s=Tank.Level")]);
    await ok.svc.start();
    await until(() => ok.readings.length > 0, 15_000, "readings as the X.509 user");
    expect(ok.readings.at(-1)!.value).toBe(2.5);
    await ok.svc.stop();
    const refused = service(t.dir, { endpoint: server.endpoint, server_certificate: server.certFile, user: user("stranger") }, [pt("level", "ns=1;s=Tank.Level")]);
    await refused.svc.start();
    await until(() => refused.events.some((e) => e.ocsf.class_uid === 3002), 15_000, "an authentication failure");
    expect(refused.events.find((e) => e.ocsf.class_uid === 3002)!.ocsf.message).toMatch(/refused the session/);
    expect(refused.readings.length).toBe(0);
  });

  it("checks an X.509 user's files before connecting: owner-only RSA key, matching the certificate", async () => {
    const t = tempDir("gw-opcua-");
    cleanups.push(t.cleanup);
    const ossl = (...args: string[]) => execFileSync(OPENSSL!, args, { cwd: t.dir, stdio: "pipe", env: opensslEnv() });
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "a.key", "-out", "a.crt", "-subj", "/CN=a", "-days", "2");
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "b.key", "-out", "b.crt", "-subj", "/CN=b", "-days", "2");
    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ec.key", "-out", "ec.crt", "-subj", "/CN=ec", "-days", "2");
    for (const k of ["a", "b", "ec"]) chmodSync(join(t.dir, `${k}.key`), 0o600);
    const start = (crt: string, key: string) => service(t.dir, { endpoint: "opc.tcp://127.0.0.1:4840", user: { certificate_file: join(t.dir, crt), key_file: join(t.dir, key) } }, []).svc.start();
    await expect(start("a.crt", "b.key")).rejects.toMatchObject({ code: "OPCUA_SETUP", message: expect.stringContaining("does not belong to certificate_file") });
    await expect(start("ec.crt", "ec.key")).rejects.toMatchObject({ code: "OPCUA_SETUP", message: expect.stringContaining("need RSA") });
    chmodSync(join(t.dir, "a.key"), 0o644);
    await expect(start("a.crt", "a.key")).rejects.toMatchObject({ code: "KEY_PERMISSIONS" });
  });

  it("refuses to start with a password file others can read", async () => {
    const { t, server } = await setup();
    const pw = join(t.dir, "open.pass");
    writeFileSync(pw, "pump-station-7", { mode: 0o644 });
    const { svc } = service(t.dir, { endpoint: server.endpoint, user: { username: "operator", password_file: pw } }, []);
    await expect(svc.start()).rejects.toMatchObject({ code: "KEY_PERMISSIONS" });
  });

  it("records the server going down, keeps trying with a backoff and resumes readings when it is back", async () => {
    const { t, server, pw } = await setup();
    const { svc, events, readings } = service(t.dir, { endpoint: server.endpoint, server_certificate: server.certFile, user: { username: "operator", password_file: pw } }, [pt("level", "ns=1;s=Tank.Level")]);
    await svc.start();
    await until(() => readings.length > 0, 15_000, "first readings");
    await server.stop();
    await until(() => events.some((e) => e.ocsf.class_uid === 4001 && e.ocsf.activity_id === 4), 15_000, "a down event");
    expect(svc.status().servers[0]!.state).not.toBe("up");
    // The reason as the operator reads it: no leading space or newline from the stack.
    const lastError = svc.status().servers[0]!.last_error!;
    expect(lastError.length).toBeGreaterThan(0);
    expect(lastError).toBe(lastError.trim());
    const n = readings.length;
    server.values["Tank.Level"] = 4.5;
    await server.start(); // same port, same certificate
    await until(() => readings.length > n && readings.at(-1)!.value === 4.5, 20_000, "readings after the restart");
    const ups = events.filter((e) => e.ocsf.class_uid === 4001 && e.ocsf.activity_id === 1);
    expect(ups.length).toBe(2);
    expect(events.filter((e) => e.ocsf.class_uid === 4001 && e.ocsf.activity_id === 4).length).toBe(1);
  });
});
