import { execFileSync } from "node:child_process";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { findPeer } from "./peers";

/** Where openssl is (missing: the test skips, or fails with GATEWARDEN_REQUIRE_PEERS=1). */
export function findOpenssl(paths: readonly string[] = ["/usr/bin/openssl", "/usr/local/bin/openssl", "/bin/openssl"]): string | undefined {
  return findPeer(paths);
}

export interface CertPair {
  cert: string;
  key: string;
}

export interface TestPki {
  ca: string;
  server: CertPair;
  /** Client certificates by common name (the broker uses the CN as the user name). */
  clients: Record<string, CertPair>;
}

/**
 * A throwaway PKI made with openssl: a CA, a server certificate for 127.0.0.1 and localhost,
 * and one client certificate per common name. Keys are 0600 (the agent refuses others).
 * EC P-256 keeps generation fast. Valid for `days` (default 400: beyond the posture's 30-day
 * expiry warning, so a test's daemon reports no certificate finding unless it means to).
 */
export function makePki(dir: string, clientNames: readonly string[], openssl = findOpenssl() ?? "openssl", days = 400): TestPki {
  const run = (args: string[]) => execFileSync(openssl, args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  const p = (f: string) => join(dir, f);
  const newKey = (f: string) => {
    run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", p(f)]);
    chmodSync(p(f), 0o600);
  };
  newKey("ca.key");
  run(["req", "-x509", "-new", "-key", p("ca.key"), "-sha256", "-days", String(days), "-subj", "/CN=Gatewarden Test CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", p("ca.pem")]);
  const issue = (name: string, ext: string): CertPair => {
    const key = `${name}.key`;
    newKey(key);
    run(["req", "-new", "-key", p(key), "-subj", `/CN=${name}`, "-out", p(`${name}.csr`)]);
    writeFileSync(p(`${name}.ext`), ext);
    run(["x509", "-req", "-in", p(`${name}.csr`), "-CA", p("ca.pem"), "-CAkey", p("ca.key"), "-CAcreateserial", "-days", String(days), "-sha256", "-extfile", p(`${name}.ext`), "-out", p(`${name}.pem`)]);
    return { cert: p(`${name}.pem`), key: p(key) };
  };
  const server = issue("server", "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n");
  const clients: Record<string, CertPair> = {};
  for (const n of clientNames) clients[n] = issue(n, "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n");
  return { ca: p("ca.pem"), server, clients };
}
