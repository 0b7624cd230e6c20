import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chmodSync, copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { checkReferences, type ReferenceIssue } from "../../../agent/config/references";
import { setConfigValue } from "../../../agent/config/edit";
import { readTlsKey } from "../../../agent/core/secret-files";
import { isDaemonError } from "../../../agent/core/errors";
import { makeSite, tempDir } from "../../helpers/fixture";
import { havePeer } from "../../helpers/peers";
import { makePki, type TestPki } from "../../helpers/tls";

const hasOpenssl = havePeer("/usr/bin/openssl");

/** Each case starts from a config whose every reference is good, and breaks one thing. */
describe.skipIf(!hasOpenssl)("config references (keys, certificates, policy, site)", () => {
  const t = tempDir();
  let pki: TestPki;
  let n = 0;
  beforeAll(() => {
    pki = makePki(t.dir, ["gw", "eng"]);
  });
  afterAll(t.cleanup);

  const site = () => {
    const s = makeSite(join(t.dir, `site-${n}`), { device: `gw-${n++}` });
    const policy = join(s.gwDir, "policy.yaml");
    writeFileSync(policy, "identities:\n  - match: { address: 10.0.0.1 }\n    role: scada\nroles:\n  scada: { units: [1], functions: [read-only], read: { holding: ['0-9'] } }\n");
    const pw = join(s.gwDir, "broker.pass");
    writeFileSync(pw, "secret\n", { mode: 0o600 });
    const set = (k: string, v: string) => setConfigValue(s.cfgFile, k, v);
    set("upstream.url", "mqtts://127.0.0.1:8883");
    set("upstream.ca", pki.ca);
    set("upstream.cert", pki.clients.gw!.cert);
    set("upstream.key", pki.clients.gw!.key);
    set("upstream.username", "gw");
    set("upstream.password_file", pw);
    set("modbus", JSON.stringify({ listeners: [{ name: "sec", type: "tls", listen: "127.0.0.1:0", tls: { cert_file: pki.server.cert, key_file: pki.server.key, ca_file: pki.ca } }], policy_file: "policy.yaml" }));
    set("opcua", JSON.stringify({ pki_dir: "data/pki", servers: [{ name: "plc", endpoint: "opc.tcp://127.0.0.1:4840", user: { username: "gw", password_file: pw } }] }));
    return { ...s, policy, pw, set };
  };
  const issues = (s: ReturnType<typeof site>): ReferenceIssue[] => checkReferences(s.load());
  const copyKey = (from: string, to: string, mode: number) => {
    copyFileSync(from, to);
    chmodSync(to, mode);
    return to;
  };

  it("finds nothing wrong with good references", () => {
    expect(issues(site())).toEqual([]);
  });

  it("refuses every private key and secret file readable by others, naming the key and its line", () => {
    const s = site();
    s.set("upstream.key", copyKey(pki.clients.gw!.key, join(s.gwDir, "up.key"), 0o644));
    s.set("modbus.listeners.0.tls.key_file", copyKey(pki.server.key, join(s.gwDir, "mb.key"), 0o640));
    chmodSync(s.pw, 0o644);
    const got = issues(s);
    expect(got.map((i) => [i.code, i.path])).toEqual([
      ["KEY_PERMISSIONS", "upstream.key"],
      ["KEY_PERMISSIONS", "upstream.password_file"],
      ["KEY_PERMISSIONS", "modbus.listeners.0.tls.key_file"],
      ["KEY_PERMISSIONS", "opcua.servers.0.user"],
    ]);
    for (const i of got) expect(i.line).toBeGreaterThan(0);
  });

  it("refuses a missing CA file, a certificate that is not one, and a key that is not the certificate's", () => {
    const s = site();
    s.set("upstream.ca", join(s.gwDir, "no-such-ca.pem"));
    s.set("modbus.listeners.0.tls.cert_file", s.policy);
    s.set("modbus.listeners.0.tls.key_file", pki.clients.eng!.key);
    const got = issues(s);
    expect(got.map((i) => [i.code, i.path])).toEqual([
      ["TLS_SETUP", "upstream.ca"],
      ["TLS_SETUP", "modbus.listeners.0.tls.cert_file"],
    ]);
    s.set("modbus.listeners.0.tls.cert_file", pki.server.cert);
    expect(issues(s).map((i) => [i.code, i.path])).toEqual([
      ["TLS_SETUP", "upstream.ca"],
      ["TLS_SETUP", "modbus.listeners.0.tls.key_file"],
    ]);
  });

  it("validates the policy file with its own file, line and key", () => {
    const s = site();
    writeFileSync(s.policy, "identities:\n  - match: { address: 10.0.0.999 }\n    role: scada\nroles:\n  scada:\n    units: [1]\n    functions: [6]\n    values: [{ table: holding, address: 1, min: 4500, max: 0 }]\n");
    const got = issues(s);
    expect(got.map((i) => [i.code, i.file, i.line, i.path])).toEqual([
      ["POLICY_INVALID", s.policy, 2, "identities.0.match.address"],
      ["POLICY_INVALID", s.policy, 8, "roles.scada.values.0.max"],
    ]);
  });

  it("validates the site file it names", () => {
    const s = site();
    const siteFile = join(s.gwDir, "site.yaml");
    writeFileSync(siteFile, "tanks:\n  T1: { colour: blue }\n");
    s.set("modbus.upstreams", JSON.stringify([{ name: "plc", type: "tcp", target: "127.0.0.1:502" }]));
    s.set("points", JSON.stringify({ L_T1: { source: { modbus: { device: "plc", unit: 1, table: "holding", address: 0 } }, unit: "m", kind: "level", range: { min: 0, max: 5 } } }));
    s.set("detection.site", siteFile);
    const got = issues(s);
    expect(got.length).toBeGreaterThan(0);
    for (const i of got) expect(i).toMatchObject({ code: "SITE_INVALID", file: siteFile });
    expect(got.find((i) => i.path === "tanks.T1.colour")?.line).toBe(2);
  });

  it("refuses a site file naming points the config does not configure, each with the site file's line and key", () => {
    const s = site();
    const siteFile = join(s.gwDir, "site.yaml");
    writeFileSync(siteFile, "name: s\nsignals:\n  L_T1: { kind: level }\n");
    s.set("detection.site", siteFile);
    expect(issues(s)).toEqual([expect.objectContaining({ code: "SITE_INVALID", file: siteFile, line: 3, path: "signals.L_T1", message: expect.stringMatching(/^L_T1 is not among the configured points: the config has none/) })]);
    s.set("modbus.upstreams", JSON.stringify([{ name: "plc", type: "tcp", target: "127.0.0.1:502" }]));
    s.set("points", JSON.stringify({ L_T1: { source: { modbus: { device: "plc", unit: 1, table: "holding", address: 0 } }, unit: "m", kind: "level", range: { min: 0, max: 5 } } }));
    expect(issues(s)).toEqual([]);
  });

  it("names a SOC sealing key given as a TLS key, by file", () => {
    const s = site();
    const sealing = join(s.socDir, "soc.key");
    try {
      readTlsKey(sealing, "receiver TLS key");
      expect.unreachable();
    } catch (e) {
      expect(isDaemonError(e, "KEY_INVALID")).toBe(true);
      expect((e as Error).message).toContain(sealing);
    }
  });
});
