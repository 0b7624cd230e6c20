/** Test PKI made with the openssl binary at test time (EC P-256 keys: fast). */
import { findOpenssl } from "../../helpers/tls";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const OPENSSL = findOpenssl();

const ROLE_OID = "1.3.6.1.4.1.50316.802.1";

/** Client certificate variants: extension lines for the [v3] section (and extra sections). */
export const CLIENT_VARIANTS: Record<string, string> = {
  operator: `${ROLE_OID}=ASN1:UTF8String:operator`,
  operator2: `${ROLE_OID}=ASN1:UTF8String:operator`,
  engineer: `${ROLE_OID}=ASN1:UTF8String:engineer`,
  norole: "basicConstraints=CA:FALSE",
  tworoles: `${ROLE_OID}=ASN1:SEQUENCE:roles\n[roles]\nr1=UTF8String:operator\nr2=UTF8String:engineer`,
  ia5role: `${ROLE_OID}=ASN1:IA5STRING:operator`,
  badutf8: `${ROLE_OID}=DER:0C02C328`,
};

export interface Pki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  client(name: string): { cert: string; key: string };
  /** A client signed by a CA the proxy does not trust. */
  rogue: { cert: string; key: string };
  /** An operator certificate of the trusted CA that expired in 2020. */
  expired: { cert: string; key: string };
  /** A CRL of `ca` revoking the named client's certificate. */
  revoke(name: string): string;
}

export function makePki(): Pki {
  const dir = mkdtempSync(join(tmpdir(), "gw-mbs-"));
  const ossl = (...args: string[]) => execFileSync(OPENSSL!, args, { cwd: dir, stdio: "pipe" });
  const key = (name: string) => ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", `${name}.key`);
  const ca = (name: string) => {
    key(name);
    ossl("req", "-x509", "-new", "-key", `${name}.key`, "-out", `${name}.crt`, "-subj", `/CN=${name}`, "-days", "400");
  };
  const leaf = (name: string, issuer: string, ext: string, subj: string) => {
    key(name);
    ossl("req", "-new", "-key", `${name}.key`, "-out", `${name}.csr`, "-subj", subj);
    writeFileSync(join(dir, `${name}.ext`), `[v3]\n${ext}\n`);
    ossl("x509", "-req", "-in", `${name}.csr`, "-CA", `${issuer}.crt`, "-CAkey", `${issuer}.key`, "-CAcreateserial", "-out", `${name}.crt`, "-days", "400", "-extfile", `${name}.ext`, "-extensions", "v3");
  };
  ca("ca");
  ca("rogue-ca");
  leaf("server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost", "/CN=localhost");
  for (const [name, ext] of Object.entries(CLIENT_VARIANTS)) leaf(`client-${name}`, "ca", ext, `/CN=${name}/O=Test`);
  leaf("rogue", "rogue-ca", CLIENT_VARIANTS.operator!, "/CN=rogue");
  // `openssl ca` can set the validity dates; x509 -req cannot.
  key("expired");
  ossl("req", "-new", "-key", "expired.key", "-out", "expired.csr", "-subj", "/CN=expired");
  writeFileSync(join(dir, "expired.ext"), `[v3]\n${CLIENT_VARIANTS.operator}\n`);
  writeFileSync(join(dir, "index-expired.txt"), "");
  writeFileSync(join(dir, "expired.cnf"), "[ca]\ndefault_ca = d\n[d]\ndatabase = index-expired.txt\nnew_certs_dir = .\nserial = expired.srl\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n");
  writeFileSync(join(dir, "expired.srl"), "1000\n");
  ossl("ca", "-batch", "-notext", "-config", "expired.cnf", "-keyfile", "ca.key", "-cert", "ca.crt", "-in", "expired.csr", "-out", "expired.crt", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-extfile", "expired.ext", "-extensions", "v3");
  const p = (f: string) => join(dir, f);
  return {
    dir,
    ca: p("ca.crt"),
    serverCert: p("server.crt"),
    serverKey: p("server.key"),
    client: (name) => ({ cert: p(`client-${name}.crt`), key: p(`client-${name}.key`) }),
    rogue: { cert: p("rogue.crt"), key: p("rogue.key") },
    expired: { cert: p("expired.crt"), key: p("expired.key") },
    revoke: (name) => {
      writeFileSync(join(dir, "index.txt"), "");
      writeFileSync(join(dir, "crlnumber"), "01\n");
      writeFileSync(join(dir, "ca.cnf"), "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 2\n");
      ossl("ca", "-config", "ca.cnf", "-revoke", `client-${name}.crt`, "-keyfile", "ca.key", "-cert", "ca.crt");
      ossl("ca", "-config", "ca.cnf", "-gencrl", "-keyfile", "ca.key", "-cert", "ca.crt", "-out", "ca.crl");
      return p("ca.crl");
    },
  };
}
