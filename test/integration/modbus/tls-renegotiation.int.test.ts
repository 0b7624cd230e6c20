import { spawn } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { until } from "../../helpers/fixture";
import { makePki, OPENSSL, type Pki } from "./_certs";
import { RawClient, startRig, type Rig } from "./_harness";

const policy = { roles: { operator: { units: [1], functions: ["read-only" as const], read: { holding: ["0-9"] } } } };

describe.skipIf(!OPENSSL)("Modbus/TCP Security refuses TLS renegotiation (needs the openssl binary)", () => {
  let pki: Pki;
  let rig: Rig;
  let port: number;
  beforeAll(async () => {
    pki = makePki();
    rig = await startRig(policy, {
      listeners: [{ name: "secure", type: "tls", listen: "127.0.0.1:0", tls: { cert_file: pki.serverCert, key_file: pki.serverKey, ca_file: pki.ca, min_version: "TLSv1.2" } }],
    });
    port = rig.service.status().listeners.find((l) => l.name === "secure")!.port!;
  });
  afterAll(async () => {
    await rig?.close();
    if (pki) rmSync(pki.dir, { recursive: true, force: true });
  });

  it("a TLS 1.2 client's renegotiation fails; the proxy keeps serving others", async () => {
    const creds = pki.client("operator");
    const s: TLSSocket = tlsConnect({ host: "127.0.0.1", port, ca: readFileSync(pki.ca), servername: "localhost", cert: readFileSync(creds.cert), key: readFileSync(creds.key), maxVersion: "TLSv1.2" });
    await new Promise<void>((r, j) => {
      s.once("secureConnect", r);
      s.once("error", j);
    });
    const c = new RawClient(s);
    expect(await c.request(1, "03 0000 0002")).toBe("030400000000");
    const outcome = await new Promise<string>((resolve) => {
      s.once("error", (e: Error & { code?: string }) => resolve(`error ${e.code ?? e.message}`));
      s.once("close", () => resolve("closed"));
      const ok = s.renegotiate({ rejectUnauthorized: true }, (err) => resolve(err ? `refused ${(err as Error & { code?: string }).code ?? err.message}` : "renegotiated"));
      if (!ok) resolve("refused locally");
    });
    expect(outcome).not.toBe("renegotiated");
    s.destroy();
    // Another client is served as before.
    const s2: TLSSocket = tlsConnect({ host: "127.0.0.1", port, ca: readFileSync(pki.ca), servername: "localhost", cert: readFileSync(creds.cert), key: readFileSync(creds.key) });
    await new Promise<void>((r, j) => {
      s2.once("secureConnect", r);
      s2.once("error", j);
    });
    const c2 = new RawClient(s2);
    expect(await c2.request(1, "03 0000 0001")).toBe("03020000");
    c2.close();
  });

  it("openssl s_client's renegotiation (R) is refused: no second handshake happens", async () => {
    const creds = pki.client("operator");
    const p = spawn(OPENSSL!, ["s_client", "-connect", `127.0.0.1:${port}`, "-tls1_2", "-CAfile", pki.ca, "-cert", creds.cert, "-key", creds.key, "-servername", "localhost"], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    p.stdout.on("data", (d: Buffer) => (out += d.toString()));
    p.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<void>((r) => p.once("exit", () => r()));
    await until(() => out.includes("Verify return code") || p.exitCode !== null, 20_000, "s_client's handshake");
    const before = out.length;
    for (let i = 0; i < 5; i++) p.stdin.write("R\n");
    p.stdin.end();
    await exited;
    const after = out.slice(before);
    expect(after).toMatch(/RENEGOTIATING/);
    // A renegotiation that went through would print a second certificate chain and verification.
    expect(after).not.toMatch(/Verify return code/);
    expect(after).toMatch(/no renegotiation|alert|error/i);
  });
});
