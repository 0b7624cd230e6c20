import { X509Certificate } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { roleFromCertificate } from "../../../protocols/modbus/tls/cert-role";
import { makePki, OPENSSL, type Pki } from "./_certs";
import { RawClient, startRig, type Rig } from "./_harness";
import { pythonHas, runPyJson } from "./_peers";
import { until } from "../../helpers/fixture";
import { Command } from "commander";
import { registerModbus } from "../../../agent/commands/modbus";
import { SimDevice } from "../../../agent/demo/sim-server";

const HAS_PYMODBUS = pythonHas("pymodbus");

const policy = {
  roles: {
    operator: { units: [1], functions: ["read-only" as const], read: { holding: ["0-9"] } },
    engineer: { units: [1], functions: ["read-write" as const], read: { holding: ["0-9"] }, write: { holding: ["0-9"] } },
  },
};

function tlsClient(port: number, pki: Pki, creds?: { cert: string; key: string }): Promise<{ client?: RawClient; error?: string }> {
  return new Promise((resolve) => {
    const s: TLSSocket = tlsConnect({
      host: "127.0.0.1",
      port,
      ca: readFileSync(pki.ca),
      servername: "localhost",
      ...(creds ? { cert: readFileSync(creds.cert), key: readFileSync(creds.key) } : {}),
    });
    s.once("secureConnect", () => {
      const c = new RawClient(s);
      resolve({ client: c });
    });
    s.once("error", (e: Error & { code?: string }) => resolve({ error: e.code ?? e.message }));
  });
}

describe.skipIf(!OPENSSL)("Modbus/TCP Security listener (needs the openssl binary)", () => {
  let pki: Pki;
  let rig: Rig;
  let port: number;
  beforeAll(async () => {
    pki = makePki();
    rig = await startRig(policy, {
      listeners: [
        { name: "plain", type: "tcp", listen: "127.0.0.1:0" },
        { name: "secure", type: "tls", listen: "127.0.0.1:0", tls: { cert_file: pki.serverCert, key_file: pki.serverKey, ca_file: pki.ca } },
      ],
    });
    port = rig.service.status().listeners.find((l) => l.name === "secure")!.port!;
  });
  afterAll(async () => {
    await rig?.close();
    if (pki) rmSync(pki.dir, { recursive: true, force: true });
  });

  it("reads the role from the generated certificates' DER", () => {
    const role = (n: string) => roleFromCertificate(new X509Certificate(readFileSync(pki.client(n).cert)).raw);
    expect(role("operator")).toEqual({ ok: true, role: "operator" });
    expect(role("norole")).toMatchObject({ ok: false, reason: "certificate carries no role" });
    expect(role("tworoles")).toMatchObject({ ok: false, reason: "certificate carries 2 roles" });
    expect(role("ia5role")).toMatchObject({ ok: false, reason: expect.stringContaining("not a UTF8String") });
    expect(role("badutf8")).toMatchObject({ ok: false, reason: "role is not valid UTF-8" });
  });

  it("names the certificate of each role holder: two operators behind one address stay apart", async () => {
    const denials = () => rig.sink.drafts.filter((d) => d.ocsf.message.startsWith("Modbus request denied"));
    const before = denials().length;
    for (const name of ["operator", "operator2"]) {
      const { client } = await tlsClient(port, pki, pki.client(name));
      expect(await client!.request(1, "06 0002 0009")).toBe("8601");
      client!.close();
    }
    const fp = (name: string) => new X509Certificate(readFileSync(pki.client(name).cert)).fingerprint256;
    expect(denials().slice(before).map((d) => d.ocsf.actor)).toEqual([
      { user: { name: "role:operator/CN=operator,O=Test@127.0.0.1", uid: fp("operator"), uid_alt: "CN=operator,O=Test" } },
      { user: { name: "role:operator/CN=operator2,O=Test@127.0.0.1", uid: fp("operator2"), uid_alt: "CN=operator2,O=Test" } },
    ]);
  });

  it("applies the certificate role's policy", async () => {
    const { client } = await tlsClient(port, pki, pki.client("operator"));
    expect(await client!.request(1, "03 0000 0002")).toBe("03040000" + "0000");
    expect(await client!.request(1, "06 0001 0007")).toBe("8601");
    const e = await tlsClient(port, pki, pki.client("engineer"));
    expect(await e.client!.request(1, "06 0001 0007")).toBe("060001" + "0007");
    client!.close();
    e.client!.close();
  });

  it.each(["norole", "tworoles", "ia5role", "badutf8"])("certificate %s: handshake completes, every request gets exception 01", async (name) => {
    const before = rig.device.received.length;
    const { client, error } = await tlsClient(port, pki, pki.client(name));
    expect(error).toBeUndefined();
    expect(await client!.request(1, "03 0000 0001")).toBe("8301");
    expect(await client!.request(1, "07")).toBe("8701");
    expect(await client!.request(1, "2b 0e 01 00")).toBe("ab01");
    expect(await client!.request(1, "03 0000 0000")).toBe("8301"); // even a malformed one: 01, not 03
    expect(rig.device.received.length).toBe(before); // nothing reached the device
    client!.close();
  });

  it("refuses a client without a certificate, from a foreign CA or expired, records why and from where, and keeps serving", async () => {
    const auth = () => rig.sink.drafts.filter((d) => d.ocsf.class_uid === 3002);
    const before = auth().length;
    const before0 = rig.device.received.length;
    for (const creds of [undefined, pki.rogue, pki.expired]) {
      const r = await tlsClient(port, pki, creds);
      // TLS 1.3: the server's refusal arrives after the client's handshake completes.
      if (r.client) expect(await r.client.request(1, "03 0000 0001", 10_000)).toBe("closed");
      else expect(r.error).toBeDefined();
    }
    await until(() => auth().length >= before + 3, 20_000, "the three refusals recorded");
    const got = auth()
      .slice(before)
      .map((d) => ({ detail: d.ocsf.status_detail, ip: (d.ocsf.src_endpoint as { ip: string }).ip, subject: (d.ocsf.certificate as { subject?: string } | undefined)?.subject }));
    expect(got).toEqual([
      { detail: "no client certificate", ip: "127.0.0.1", subject: undefined },
      { detail: "UNABLE_TO_VERIFY_LEAF_SIGNATURE", ip: "127.0.0.1", subject: "CN=rogue" },
      { detail: "CERT_HAS_EXPIRED", ip: "127.0.0.1", subject: "CN=expired" },
    ]);
    expect(rig.device.received.length).toBe(before0); // nothing of theirs reached the device
    // A failed handshake (not TLS at all) still names the address it came from.
    const raw = netConnect({ host: "127.0.0.1", port }, () => raw.write("GET / HTTP/1.0\r\n\r\n"));
    raw.on("error", () => {});
    await until(() => auth().length >= before + 4, 20_000, "the failed handshake recorded");
    raw.destroy();
    expect(auth()[before + 3]!.ocsf).toMatchObject({ src_endpoint: { ip: "127.0.0.1" }, status_detail: expect.stringMatching(/^ERR_SSL_/) });
    const ok = await tlsClient(port, pki, pki.client("operator"));
    expect(await ok.client!.request(1, "03 0000 0001")).toBe("03020000");
    ok.client!.close();
  });

  it.skipIf(!HAS_PYMODBUS)("interoperates with pymodbus's Modbus/TCP Security client (needs /usr/bin/python3 with pymodbus)", async () => {
    const steps = async (name: string) => {
      const c = pki.client(name);
      return runPyJson<{ step: string; ok: boolean; exception?: number; registers?: number[] }>("tls_client.py", [String(port), pki.ca, c.cert, c.key]);
    };
    expect(await steps("operator")).toEqual([
      { step: "read", ok: true, registers: [0, 7] }, // 7: written by the engineer above
      { step: "write", ok: false, exception: 1 },
    ]);
    expect(await steps("tworoles")).toEqual([
      { step: "read", ok: false, exception: 1 },
      { step: "write", ok: false, exception: 1 },
    ]);
  });

  it("commissioning mode serves Modbus/TCP Security with --tls-cert/--tls-key/--tls-ca", async () => {
    const dev = new SimDevice();
    const dport = await dev.listen();
    const ac = new AbortController();
    let out = "";
    let listening: (p: number) => void = () => {};
    const ready = new Promise<number>((r) => (listening = r));
    const program = new Command("gatewarden").exitOverride();
    registerModbus(program, { resolveSocket: async () => "", stdout: (s) => (out += s), stderr: () => {}, signal: ac.signal, onListening: (p) => listening(p) });
    const run = program.parseAsync(["node", "gatewarden", "modbus", "proxy", "--listen", "127.0.0.1:0", "--upstream", `tcp://127.0.0.1:${dport}`, "--preset", "read-only", "--tls-cert", pki.serverCert, "--tls-key", pki.serverKey, "--tls-ca", pki.ca]);
    const p = await ready;
    const { client } = await tlsClient(p, pki, pki.client("operator"));
    expect(await client!.request(1, "03 0000 0001")).toBe("03020000");
    expect(await client!.request(1, "06 0000 0001")).toBe("8601");
    client!.close();
    const bad = await tlsClient(p, pki, pki.client("norole"));
    expect(await bad.client!.request(1, "03 0000 0001")).toBe("8301");
    bad.client!.close();
    ac.abort();
    await run;
    const lines = out.trim().split("\n").map((l) => JSON.parse(l) as { role?: string; transport: string; allow: boolean; rule: string });
    expect(lines.map((l) => [l.transport, l.role ?? null, l.allow, l.rule])).toEqual([
      ["tls", "operator", true, "roles.read-only.read.holding"],
      ["tls", "operator", false, "roles.read-only.functions"],
      ["tls", null, false, "tls.role"],
    ]);
    await dev.close();
  });

  it("refuses a revoked client certificate when crl_file is set", async () => {
    const crl = pki.revoke("engineer");
    const r2 = await startRig(policy, {
      listeners: [{ name: "secure", type: "tls", listen: "127.0.0.1:0", tls: { cert_file: pki.serverCert, key_file: pki.serverKey, ca_file: pki.ca, crl_file: crl } }],
    });
    try {
      const p2 = r2.port;
      const revoked = await tlsClient(p2, pki, pki.client("engineer"));
      if (revoked.client) expect(await revoked.client.request(1, "03 0000 0001", 1000)).toBe("closed");
      else expect(revoked.error).toBeDefined();
      const ok = await tlsClient(p2, pki, pki.client("operator"));
      expect(await ok.client!.request(1, "03 0000 0001")).toBe("03020000");
      ok.client!.close();
    } finally {
      await r2.close();
    }
  });
});
