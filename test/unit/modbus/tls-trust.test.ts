import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TrustAnchors } from "../../../protocols/modbus/tls/trust";
import { OPENSSL } from "../../integration/modbus/_certs";

/** Root CA -> intermediate CA -> client, plus a second root with the same name but its own key. */
function makeChain(dir: string) {
  const ossl = (cwd: string, ...args: string[]) => execFileSync(OPENSSL!, args, { cwd, stdio: "pipe" });
  /** A directory for `openssl ca` (CRLs) of a CA. */
  const caDir = (name: string) => {
    const d = join(dir, name);
    mkdirSync(d);
    writeFileSync(join(d, "crlnumber"), "01\n");
    writeFileSync(join(d, "ca.cnf"), "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 2\n");
    return d;
  };
  const ca = (name: string) => {
    const d = caDir(name);
    ossl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=Site root", "-days", "2");
    return d;
  };
  const root = ca("root");
  const twin = ca("twin"); // same subject as root, another key
  const issue = (issuerDir: string, name: string, subj: string, ext: string) => {
    ossl(dir, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subj);
    writeFileSync(join(dir, `${name}.ext`), `[v3]\n${ext}\n`);
    ossl(dir, "x509", "-req", "-in", `${name}.csr`, "-CA", join(issuerDir, "ca.crt"), "-CAkey", join(issuerDir, "ca.key"), "-CAcreateserial", "-out", `${name}.crt`, "-days", "2", "-extfile", `${name}.ext`, "-extensions", "v3");
    return join(dir, `${name}.crt`);
  };
  const inter = issue(root, "inter", "/CN=Site issuing CA", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign");
  const interDir = caDir("interca");
  writeFileSync(join(interDir, "ca.crt"), readFileSync(inter));
  writeFileSync(join(interDir, "ca.key"), readFileSync(join(dir, "inter.key")));
  const client = issue(interDir, "client", "/CN=eng1/O=Test", "basicConstraints=CA:FALSE");
  /** A CRL signed by the CA in `caDir` listing the given certificates. */
  const crl = (caDir: string, out: string, ...revoked: string[]) => {
    writeFileSync(join(caDir, "index.txt"), "");
    for (const c of revoked) ossl(caDir, "ca", "-config", "ca.cnf", "-revoke", c, "-keyfile", "ca.key", "-cert", "ca.crt");
    ossl(caDir, "ca", "-config", "ca.cnf", "-gencrl", "-keyfile", "ca.key", "-cert", "ca.crt", "-out", join(dir, out));
    return readFileSync(join(dir, out));
  };
  return { root: readFileSync(join(root, "ca.crt")), twinRoot: readFileSync(join(twin, "ca.crt")), rootDir: root, twinDir: twin, interDir, inter, client, crl };
}

describe.skipIf(!OPENSSL)("TrustAnchors: client certificates checked against reloaded CA and CRL files (needs the openssl binary)", () => {
  let dir: string;
  let pki: ReturnType<typeof makeChain>;
  let leaf: X509Certificate;
  let inter: X509Certificate;
  const names = { ca: "ca.crt", crl: "ca.crl" };
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "gw-trust-"));
    pki = makeChain(dir);
    leaf = new X509Certificate(readFileSync(pki.client));
    inter = new X509Certificate(readFileSync(pki.inter));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("follows the intermediates the client presented to a certificate of the CA file", () => {
    expect(new TrustAnchors(pki.root, undefined, names).check(leaf, [inter])).toEqual({ ok: true });
    expect(new TrustAnchors(pki.root, undefined, names).check(leaf, [])).toMatchObject({ ok: false, reason: "untrusted" });
    // Same name, other key: not the issuer.
    expect(new TrustAnchors(pki.twinRoot, undefined, names).check(leaf, [inter])).toMatchObject({ ok: false, reason: "untrusted" });
  });

  it("needs a root of the CA file at the end of the path, as the handshake does", () => {
    const interPem = readFileSync(pki.inter);
    // An intermediate alone in the CA file: node:tls refuses the handshake (no root), so an
    // open connection is not kept either.
    expect(new TrustAnchors(interPem, undefined, names).check(leaf, [inter])).toMatchObject({ ok: false, reason: "untrusted", detail: expect.stringContaining("root certificate of ca_file") });
    expect(new TrustAnchors(Buffer.concat([interPem, pki.root]), undefined, names).check(leaf, [])).toEqual({ ok: true });
  });

  it("honours a CRL of the issuer for every certificate of the path, and only a CRL its issuer signed", () => {
    const interNone = pki.crl(pki.interDir, "empty.crl");
    const rootNone = pki.crl(pki.rootDir, "root-empty.crl");
    const none = Buffer.concat([interNone, rootNone]);
    expect(new TrustAnchors(pki.root, none, names).check(leaf, [inter])).toEqual({ ok: true });
    const leafRevoked = pki.crl(pki.interDir, "leaf.crl", pki.client);
    expect(new TrustAnchors(pki.root, Buffer.concat([leafRevoked, rootNone]), names).check(leaf, [inter])).toMatchObject({ ok: false, reason: "revoked", detail: "the certificate is revoked by crl_file" });
    const interRevoked = pki.crl(pki.rootDir, "inter.crl", pki.inter);
    expect(new TrustAnchors(pki.root, Buffer.concat([interNone, interRevoked]), names).check(leaf, [inter])).toMatchObject({ ok: false, reason: "revoked", detail: expect.stringContaining("CN=Site issuing CA") });
    // The twin root has the root's name; its CRL listing the intermediate is not signed by the root.
    const forged = pki.crl(pki.twinDir, "forged.crl", pki.inter);
    expect(new TrustAnchors(pki.root, Buffer.concat([none, forged]), names).check(leaf, [inter])).toEqual({ ok: true });
  });

  it("with a CRL file, no current CRL of an issuer in the path means no longer trusted (the handshake's verdict)", () => {
    const interNone = pki.crl(pki.interDir, "empty2.crl");
    const rootNone = pki.crl(pki.rootDir, "root-empty2.crl");
    // The root's CRL is missing: the intermediate's revocation status cannot be told.
    expect(new TrustAnchors(pki.root, interNone, names).check(leaf, [inter])).toMatchObject({ ok: false, reason: "untrusted", detail: expect.stringMatching(/certificate CN=Site issuing CA.* is missing in crl_file/) });
    expect(new TrustAnchors(pki.root, rootNone, names).check(leaf, [inter])).toMatchObject({ ok: false, reason: "untrusted", detail: "the CRL of the issuer of the certificate is missing in crl_file" });
    // Both CRLs say two days; three days on they are out of date.
    const both = new TrustAnchors(pki.root, Buffer.concat([interNone, rootNone]), names);
    expect(both.check(leaf, [inter], Date.now() + 3 * 86_400_000)).toMatchObject({ ok: false, reason: "untrusted", detail: expect.stringContaining("is out of date") });
    expect(both.check(leaf, [inter], Date.now() - 86_400_000)).toMatchObject({ ok: false, reason: "untrusted", detail: expect.stringContaining("is out of date") });
    expect(both.check(leaf, [inter])).toEqual({ ok: true });
  });

  it("checks RSA-PSS signed CRLs with the parameters they name", () => {
    // An RSA root issuing a client directly; CRLs signed with PSS (SHA-256 and SHA-384, two
    // salt lengths) by the root, and one by another RSA key under the same name.
    const rsaCa = (name: string) => {
      const d = join(dir, name);
      mkdirSync(d);
      writeFileSync(join(d, "crlnumber"), "01\n");
      writeFileSync(join(d, "ca.cnf"), "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 2\n");
      execFileSync(OPENSSL!, ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=RSA root", "-days", "2"], { cwd: d, stdio: "pipe" });
      return d;
    };
    const rsa = rsaCa("rsa");
    const rsaTwin = rsaCa("rsa-twin");
    const ossl = (...args: string[]) => execFileSync(OPENSSL!, args, { cwd: dir, stdio: "pipe" });
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "rsa-client.key", "-out", "rsa-client.csr", "-subj", "/CN=eng2");
    ossl("x509", "-req", "-in", "rsa-client.csr", "-CA", join(rsa, "ca.crt"), "-CAkey", join(rsa, "ca.key"), "-CAcreateserial", "-out", "rsa-client.crt", "-days", "2");
    const client = new X509Certificate(readFileSync(join(dir, "rsa-client.crt")));
    const root = readFileSync(join(rsa, "ca.crt"));
    const pssCrl = (caDir: string, out: string, md: string, salt: string) => {
      writeFileSync(join(caDir, "index.txt"), "");
      execFileSync(OPENSSL!, ["ca", "-config", "ca.cnf", "-revoke", join(dir, "rsa-client.crt"), "-keyfile", "ca.key", "-cert", "ca.crt"], { cwd: caDir, stdio: "pipe" });
      execFileSync(OPENSSL!, ["ca", "-config", "ca.cnf", "-gencrl", "-keyfile", "ca.key", "-cert", "ca.crt", "-md", md, "-sigopt", "rsa_padding_mode:pss", "-sigopt", `rsa_pss_saltlen:${salt}`, "-out", join(dir, out)], { cwd: caDir, stdio: "pipe" });
      return readFileSync(join(dir, out));
    };
    const pss256 = pssCrl(rsa, "pss256.crl", "sha256", "32");
    expect(execFileSync(OPENSSL!, ["crl", "-in", join(dir, "pss256.crl"), "-noout", "-text"]).toString()).toContain("rsassaPss");
    expect(new TrustAnchors(root, pss256, names).check(client, [])).toMatchObject({ ok: false, reason: "revoked" });
    expect(new TrustAnchors(root, pssCrl(rsa, "pss384.crl", "sha384", "20"), names).check(client, [])).toMatchObject({ ok: false, reason: "revoked" });
    // Signed with PSS by a key that is not the issuer's: not the issuer's CRL (so the issuer has none).
    expect(new TrustAnchors(root, pssCrl(rsaTwin, "pss-forged.crl", "sha256", "32"), names).check(client, [])).toMatchObject({ ok: false, reason: "untrusted", detail: expect.stringContaining("is missing") });
  });

  it("refuses a CRL file it cannot read", () => {
    const bad = Buffer.from("-----BEGIN X509 CRL-----\nMAMCAQE=\n-----END X509 CRL-----\n");
    expect(() => new TrustAnchors(pki.root, bad, names)).toThrow(expect.objectContaining({ code: "TLS_SETUP", message: expect.stringContaining("crl_file ca.crl: CRL 1 cannot be read") }));
  });
});
