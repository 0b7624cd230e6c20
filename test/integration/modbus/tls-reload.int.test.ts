import { appendFileSync, chmodSync, existsSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Command } from "commander";
import type { EventDraft } from "../../../agent/core/events";
import { isDaemonError } from "../../../agent/core/errors";
import { Runtime } from "../../../agent/runtime";
import { registerModbus } from "../../../agent/commands/modbus";
import { exited, gw, gwSpawn } from "../../helpers/cli";
import { makeSite, silent, tempDir } from "../../helpers/fixture";
import { freePort } from "./_peers";
import { makePki, OPENSSL, type Pki } from "./_certs";
import { RawClient, startRig, type Rig } from "./_harness";

const policy = {
  roles: {
    operator: { units: [1], functions: ["read-only" as const], read: { holding: ["0-9"] } },
    engineer: { units: [1], functions: ["read-write" as const], read: { holding: ["0-9"] }, write: { holding: ["0-9"] } },
  },
};

/** A TLS client trusting `ca`; resolves with a client once a request could go through, or the error. */
async function tlsClient(port: number, ca: string, creds: { cert: string; key: string }): Promise<{ client?: RawClient; error?: string }> {
  const r = await new Promise<{ client?: RawClient; error?: string }>((resolve) => {
    const s: TLSSocket = tlsConnect({ host: "127.0.0.1", port, ca: readFileSync(ca), servername: "localhost", cert: readFileSync(creds.cert), key: readFileSync(creds.key) });
    s.once("secureConnect", () => resolve({ client: new RawClient(s) }));
    s.once("error", (e: Error & { code?: string }) => resolve({ error: e.code ?? e.message }));
  });
  if (!r.client) return r;
  // TLS 1.3: a refused client certificate shows only after the client's handshake completes.
  const probe = await r.client.request(1, "03 0000 0001", 2000);
  if (probe === "closed") return { error: "closed by the server" };
  return r;
}

/** The PKI's server certificate again (same key and CA), valid only in January 2020. */
function expiredServerCert(p: Pki): string {
  const ossl = (...args: string[]) => execFileSync(OPENSSL!, args, { cwd: p.dir, stdio: "pipe" });
  writeFileSync(join(p.dir, "exp-index.txt"), "");
  writeFileSync(join(p.dir, "exp-serial"), "1000\n");
  writeFileSync(join(p.dir, "exp.cnf"), "[ca]\ndefault_ca = d\n[d]\ndatabase = exp-index.txt\nserial = exp-serial\nnew_certs_dir = .\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n");
  ossl("ca", "-batch", "-config", "exp.cnf", "-keyfile", "ca.key", "-cert", "ca.crt", "-in", "server.csr", "-out", "server-expired.crt", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z");
  return join(p.dir, "server-expired.crt");
}

/** The operator's certificate again (same key, role and CA), valid from a minute ago for `seconds` more. */
function shortLivedOperator(p: Pki, seconds: number): { cert: string; key: string } {
  const ossl = (...args: string[]) => execFileSync(OPENSSL!, args, { cwd: p.dir, stdio: "pipe" });
  const stamp = (ms: number) => new Date(ms).toISOString().replace(/[-:T]/g, "").slice(0, 14) + "Z";
  writeFileSync(join(p.dir, "short-index.txt"), "");
  writeFileSync(join(p.dir, "short-serial"), "2000\n");
  writeFileSync(join(p.dir, "short.cnf"), "[ca]\ndefault_ca = d\n[d]\ndatabase = short-index.txt\nserial = short-serial\nnew_certs_dir = .\ndefault_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\norganizationName = optional\n");
  const now = Date.now();
  ossl("ca", "-batch", "-config", "short.cnf", "-keyfile", "ca.key", "-cert", "ca.crt", "-in", "client-operator.csr", "-out", "client-short.crt", "-startdate", stamp(now - 60_000), "-enddate", stamp(now + seconds * 1000), "-extfile", "client-operator.ext", "-extensions", "v3");
  return { cert: join(p.dir, "client-short.crt"), key: p.client("operator").key };
}

/** Replace a file the way rotation tools do: write beside it, then rename over it. */
function replace(dest: string, src: string, mode = 0o644): void {
  const tmp = `${dest}.new`;
  copyFileSync(src, tmp);
  chmodSync(tmp, mode);
  renameSync(tmp, dest);
}

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Authentication events (3002/2) of open connections closed because reloaded material no longer accepts them. */
const closedOnReload = (drafts: readonly EventDraft[]): EventDraft[] => drafts.filter((d) => d.ocsf.class_uid === 3002 && d.ocsf.activity_id === 2);

const certOf = (creds: { cert: string }): X509Certificate => new X509Certificate(readFileSync(creds.cert));

const reloads = (rig: Rig, ok: boolean): EventDraft[] =>
  rig.sink.drafts.filter((d) => (d.ocsf.unmapped as { modbus?: { tls_reload?: string } } | undefined)?.modbus?.tls_reload === (ok ? "ok" : "failed"));

describe.skipIf(!OPENSSL)("Modbus/TCP Security: TLS material reloaded while running (needs the openssl binary)", () => {
  let pki: Pki;
  let pki2: Pki;
  let live: string;
  const rigs: Rig[] = [];
  const clients: RawClient[] = [];
  beforeAll(() => {
    pki = makePki();
    pki2 = makePki(); // another CA, server and clients: the rotation target
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const r of rigs.splice(0)) await r.close();
    if (live) rmSync(live, { recursive: true, force: true });
  });
  afterAll(() => {
    for (const p of [pki, pki2]) if (p) rmSync(p.dir, { recursive: true, force: true });
  });

  /** The listener's files in their own directory (so the test can replace them), then a rig. */
  async function start(o: { crl?: string; reloadCheckMs?: number } = {}): Promise<{ rig: Rig; port: number; files: { cert: string; key: string; ca: string; crl: string } }> {
    live = mkdtempSync(join(tmpdir(), "gw-mbs-live-"));
    const files = { cert: join(live, "server.crt"), key: join(live, "server.key"), ca: join(live, "ca.crt"), crl: join(live, "ca.crl") };
    replace(files.cert, pki.serverCert);
    replace(files.key, pki.serverKey, 0o600);
    replace(files.ca, pki.ca);
    if (o.crl) replace(files.crl, o.crl);
    const rig = await startRig(policy, {
      listeners: [{ name: "secure", type: "tls", listen: "127.0.0.1:0", tls: { cert_file: files.cert, key_file: files.key, ca_file: files.ca, ...(o.crl ? { crl_file: files.crl } : {}), reload_check_ms: o.reloadCheckMs ?? 100 } }],
    });
    rigs.push(rig);
    return { rig, port: rig.port, files };
  }

  const keep = (r: { client?: RawClient; error?: string }): RawClient => {
    expect(r.error).toBeUndefined();
    clients.push(r.client!);
    return r.client!;
  };

  it("a new CRL revoking a client closes its open connection within the reload and refuses new ones; other clients carry on", async () => {
    const first = pki.revoke("norole"); // a CRL that does not concern the engineer
    const initialCrl = join(pki.dir, "initial.crl");
    copyFileSync(first, initialCrl);
    const { rig, port, files } = await start({ crl: initialCrl });
    const before = keep(await tlsClient(port, pki.ca, pki.client("engineer")));
    const op = keep(await tlsClient(port, pki.ca, pki.client("operator")));
    expect(await before.request(1, "06 0001 0007")).toBe("0600010007");
    expect(await op.request(1, "03 0001 0001")).toBe("03020007");

    replace(files.crl, pki.revoke("engineer"));
    await until("the reload", () => reloads(rig, true).length === 1);
    expect(reloads(rig, true)[0]).toMatchObject({ class: "audit", ocsf: { class_uid: 5019 } });
    // Closed by the reload itself, one event naming the client and its certificate.
    const engineer = certOf(pki.client("engineer"));
    expect(closedOnReload(rig.sink.drafts)).toEqual([
      expect.objectContaining({
        class: "finding",
        severity: 3,
        ocsf: expect.objectContaining({
          status_id: 2,
          auth_protocol: "TLS",
          actor: { user: { name: expect.stringContaining("role:engineer/CN=engineer,O=Test@127.0.0.1") } },
          certificate: expect.objectContaining({ serial_number: engineer.serialNumber, fingerprints: [expect.objectContaining({ value: engineer.fingerprint256 })] }),
          unmapped: { modbus: expect.objectContaining({ listener: "secure", tls_recheck: "revoked" }) },
        }),
      }),
    ]);
    await until("the revoked client's connection to close", () => before.closed);
    expect(await before.request(1, "06 0001 0008")).toBe("closed");
    expect(rig.device.received).not.toContain("1:0600010008");

    expect((await tlsClient(port, pki.ca, pki.client("engineer"))).error).toBeDefined(); // revoked
    expect(rig.sink.drafts.some((d) => d.ocsf.class_uid === 3002 && d.ocsf.activity_id === 1)).toBe(true); // authentication failure recorded
    expect(await op.request(1, "03 0001 0001")).toBe("03020007"); // the operator's open connection carries on
    await until("the listener to count one connection", () => rig.service.status().listeners[0]!.connections === 1);
    expect(closedOnReload(rig.sink.drafts)).toHaveLength(1);
    expect(reloads(rig, false)).toEqual([]);
  });

  it("a reload on request closes a revoked client's open connections before it returns; reloading again closes nothing more", async () => {
    const first = pki.revoke("norole");
    const initialCrl = join(pki.dir, "initial-2.crl");
    copyFileSync(first, initialCrl);
    const { rig, port, files } = await start({ crl: initialCrl, reloadCheckMs: 0 });
    // Two connections of the revoked client, one of another client.
    const a = keep(await tlsClient(port, pki.ca, pki.client("operator")));
    const b = keep(await tlsClient(port, pki.ca, pki.client("operator")));
    const eng = keep(await tlsClient(port, pki.ca, pki.client("engineer")));
    replace(files.crl, pki.revoke("operator"));
    expect(rig.service.reloadTls()).toEqual([{ listener: "secure", trigger: "requested", ok: true }]);
    const closed = closedOnReload(rig.sink.drafts);
    expect(closed).toHaveLength(2); // one per connection
    expect(new Set(closed.map((d) => (d.ocsf.certificate as { serial_number: string }).serial_number))).toEqual(new Set([certOf(pki.client("operator")).serialNumber]));
    await until("both connections to close", () => a.closed && b.closed && rig.service.status().listeners[0]!.connections === 1);
    expect(await eng.request(1, "06 0003 0004")).toBe("0600030004");
    expect(rig.service.reloadTls()).toEqual([{ listener: "secure", trigger: "requested", ok: true }]);
    expect(closedOnReload(rig.sink.drafts)).toHaveLength(2);
    expect(await eng.request(1, "03 0003 0001")).toBe("03020004");
  });

  it("a client certificate that expires while connected ends its connection then, with one event", async () => {
    const { rig, port } = await start();
    const short = shortLivedOperator(pki, 3);
    const notAfter = Date.parse(certOf(short).validTo);
    const op = keep(await tlsClient(port, pki.ca, short));
    const other = keep(await tlsClient(port, pki.ca, pki.client("engineer")));
    expect(await op.request(1, "03 0001 0001")).toBe("03020000");
    await until("the expired client's connection to close", () => op.closed, notAfter - Date.now() + 3000);
    expect(Date.now()).toBeGreaterThanOrEqual(notAfter);
    const closed = closedOnReload(rig.sink.drafts);
    expect(closed).toHaveLength(1);
    expect(closed[0]!.ocsf.message).toMatch(/closed: client certificate expired \(valid until /);
    expect(closed[0]!.ocsf).toMatchObject({ certificate: expect.objectContaining({ serial_number: certOf(short).serialNumber }), unmapped: { modbus: expect.objectContaining({ tls_recheck: "expired" }) } });
    expect(await other.request(1, "03 0001 0001")).toBe("03020000"); // other clients carry on
    expect((await tlsClient(port, pki.ca, short)).error).toBeDefined(); // and it cannot come back
  });

  it("rotates to a new CA, server certificate and key; clients of the old CA are refused and their open connections closed", async () => {
    const { rig, port, files } = await start();
    const old = keep(await tlsClient(port, pki.ca, pki.client("operator")));
    expect((await tlsClient(port, pki2.ca, pki2.client("operator"))).error).toBeDefined(); // not trusted yet

    // Rotation written file by file (key first): loaded once the set has stayed unchanged for a check.
    replace(files.key, pki2.serverKey, 0o600);
    replace(files.cert, pki2.serverCert);
    replace(files.ca, pki2.ca);
    await until("the reload", () => reloads(rig, true).length === 1);
    expect(reloads(rig, false)).toEqual([]); // the half-rotated set was never tried

    const fresh = keep(await tlsClient(port, pki2.ca, pki2.client("engineer")));
    expect(await fresh.request(1, "06 0002 0009")).toBe("0600020009");
    expect((await tlsClient(port, pki2.ca, pki.client("operator"))).error).toBeDefined(); // old CA's client
    expect((await tlsClient(port, pki.ca, pki.client("operator"))).error).toBeDefined(); // old server certificate is gone
    // The old CA's client no longer chains to the CA file: its open connection was closed.
    expect(await old.request(1, "03 0002 0001")).toBe("closed");
    expect(closedOnReload(rig.sink.drafts).map((d) => (d.ocsf.unmapped as { modbus: { tls_recheck: string } }).modbus.tls_recheck)).toEqual(["untrusted"]);
    await until("the listener to count one connection", () => rig.service.status().listeners[0]!.connections === 1);
  });

  it("keeps the current material when new files are bad, records an error, and loads them once fixed", async () => {
    const { rig, port, files } = await start();
    const bad: Array<[string, () => void]> = [
      ["a truncated CA file", () => writeFileSync(files.ca, readFileSync(pki2.ca).subarray(0, 300))],
      ["a key that does not match the certificate", () => replace(files.key, pki2.serverKey, 0o600)],
      ["a key others can read", () => replace(files.key, pki.serverKey, 0o644)],
      ["an expired certificate", () => replace(files.cert, expiredServerCert(pki))],
    ];
    for (const [i, [what, breakIt]] of bad.entries()) {
      breakIt();
      await until(`the refusal of ${what}`, () => reloads(rig, false).length === i + 1);
      const ok = keep(await tlsClient(port, pki.ca, pki.client("operator")));
      expect(await ok.request(1, "03 0000 0001"), what).toBe("03020000");
      // Put the good file back (for the next case), which loads fine.
      const oks = reloads(rig, true).length;
      replace(files.ca, pki.ca);
      replace(files.key, pki.serverKey, 0o600);
      replace(files.cert, pki.serverCert);
      await until(`the reload after ${what}`, () => reloads(rig, true).length === oks + 1);
    }
    const errors = reloads(rig, false);
    expect(errors.map((e) => e.class)).toEqual(["system", "system", "system", "system"]);
    expect(errors[0]!.ocsf.message).toMatch(/ca_file .* PEM block that is not a complete certificate/);
    expect(errors[1]!.ocsf.message).toMatch(/key values mismatch/);
    expect(errors[2]!.ocsf.message).toMatch(/mode 0644/);
    expect(errors[3]!.ocsf.message).toMatch(/cert_file .* expired on 2020-01-02/);
    for (const e of errors) expect(e.ocsf.message).not.toMatch(/PRIVATE KEY/);
    // On request too (`gatewarden modbus reload-tls`): nothing changed, it loads fine.
    expect(rig.service.reloadTls()).toEqual([{ listener: "secure", trigger: "requested", ok: true }]);
  });

  /** A gateway config with one Modbus/TCP Security listener whose files are checked only on request. */
  async function daemonSite(): Promise<{ site: ReturnType<typeof makeSite>; files: { cert: string; key: string; ca: string }; port: number }> {
    const t = tempDir();
    live = t.dir;
    const site = makeSite(t.dir);
    const dir = join(site.gwDir, "mbs");
    mkdirSync(dir);
    const files = { cert: join(dir, "server.crt"), key: join(dir, "server.key"), ca: join(dir, "ca.crt") };
    replace(files.cert, pki.serverCert);
    replace(files.key, pki.serverKey, 0o600);
    replace(files.ca, pki.ca);
    const port = await freePort();
    appendFileSync(
      site.cfgFile,
      `
modbus:
  listeners:
    - name: secure
      type: tls
      listen: "127.0.0.1:${port}"
      tls: { cert_file: mbs/server.crt, key_file: mbs/server.key, ca_file: mbs/ca.crt, reload_check_ms: 0 }
  policy:
    roles:
      operator: { units: [1], functions: [read-only], read: { holding: ["0-9"] } }
`,
    );
    return { site, files, port };
  }

  it("SIGHUP makes the running daemon reload its TLS material instead of ending it", async () => {
    const { site, files, port } = await daemonSite();
    const daemon = gwSpawn(["run", "--config", site.cfgFile]);
    try {
      const sock = site.load().config.control.socket;
      await until("the control socket", () => existsSync(sock), 10_000);
      await until("the proxy", () => gw(["modbus", "status", "--config", site.cfgFile]).code === 0, 10_000);
      keep(await tlsClient(port, pki.ca, pki.client("operator"))).close();
      replace(files.ca, pki2.ca);
      replace(files.cert, pki2.serverCert);
      replace(files.key, pki2.serverKey, 0o600);
      daemon.kill("SIGHUP");
      await until("the reload audit event", () => gw(["events", "tail", "-n", "100", "--json", "--config", site.cfgFile]).stdout.includes("TLS material reloaded (SIGHUP)"), 10_000);
      expect(daemon.exitCode).toBeNull();
      expect((await tlsClient(port, pki.ca, pki.client("operator"))).error).toBeDefined(); // the old CA's client
      keep(await tlsClient(port, pki2.ca, pki2.client("operator"))).close(); // the new CA's client, trusting the new server certificate
      daemon.kill("SIGTERM");
      expect(await exited(daemon)).toBe(0);
    } finally {
      if (daemon.exitCode === null) daemon.kill("SIGKILL");
    }
  });

  it("the daemon reloads on `gatewarden modbus reload-tls` and records a refused reload as a signed system event", async () => {
    const { site, files, port } = await daemonSite();
    const loaded = site.load();
    const rt = new Runtime(loaded, silent);
    await rt.start();
    try {
      const cli = async (): Promise<{ out: string; error?: unknown }> => {
        let out = "";
        const program = new Command("gatewarden").exitOverride();
        registerModbus(program, { resolveSocket: async () => loaded.config.control.socket, stdout: (x) => (out += x), stderr: () => {} });
        try {
          await program.parseAsync(["node", "gatewarden", "modbus", "reload-tls"]);
          return { out };
        } catch (error) {
          return { out, error };
        }
      };
      replace(files.ca, pki2.ca); // reload_check_ms: 0, so only the command loads it
      const open = await tlsClient(port, pki.ca, pki.client("operator"));
      expect(open.error).toBeUndefined();
      keep(open);
      expect(await cli()).toEqual({ out: "listener secure: reloaded; new connections use the new material\n" });
      await until("the old CA's open connection to close", () => open.client!.closed);
      expect((await tlsClient(port, pki.ca, pki.client("operator"))).error).toBeDefined(); // the old CA's client
      replace(files.key, pki.serverKey, 0o640);
      const refused = await cli();
      expect(isDaemonError(refused.error, "TLS_SETUP")).toBe(true);
      expect(refused.out).toMatch(/^listener secure: not reloaded, current material kept: .*mode 0640/);
      rt.recorder.flush();
      const bodies = rt.outbox.readAfter(0, 100_000).map((r) => JSON.parse(r.body) as { class: string; sig: string; ocsf: { message: string; unmapped?: { error_type?: string } } });
      const failed = bodies.filter((b) => b.ocsf.unmapped?.error_type === "tls_reload");
      expect(failed).toHaveLength(1);
      expect(failed[0]).toMatchObject({ class: "system", sig: expect.any(String) });
      // The connection closed by the reload is a signed Authentication event with its certificate.
      const closed = bodies.filter((b) => (b.ocsf as { class_uid?: number }).class_uid === 3002 && (b.ocsf as { activity_id?: number }).activity_id === 2);
      expect(closed).toHaveLength(1);
      expect(closed[0]).toMatchObject({
        class: "finding",
        sig: expect.any(String),
        ocsf: { certificate: { serial_number: certOf(pki.client("operator")).serialNumber }, unmapped: { modbus: { listener: "secure", tls_recheck: "untrusted" } } },
      });
    } finally {
      await rt.stop("test");
    }
  });
});
