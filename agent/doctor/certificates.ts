/**
 * The certificates the config names, and when each stops being valid. An expired certificate
 * fails quietly: the gateway's client certificate (or the CA it checks the broker with) cuts
 * the link to the SOC, which then sees only a `silent` gateway; a Modbus/TCP Security
 * listener's certificate turns every SCADA client away. So `gatewarden doctor` and the
 * posture in every heartbeat say how long each has left, ahead of time.
 */
import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Config } from "../config/schema";

/** Default of `posture.cert_warn_days`: a certificate that expires within this many days is reported. */
export const CERT_WARN_DAYS = 30;

const DAY_MS = 86_400_000;

/** Each certificate file the config names, by its config key (the OPC UA application certificate once made). */
export function certificateFilesOf(c: Config): { key: string; path: string }[] {
  const out: { key: string; path: string }[] = [];
  if (c.upstream.ca) out.push({ key: "upstream.ca", path: c.upstream.ca });
  if (c.upstream.cert) out.push({ key: "upstream.cert", path: c.upstream.cert });
  c.modbus?.listeners.forEach((l, i) => {
    if (l.type !== "tls") return;
    out.push({ key: `modbus.listeners.${i}.tls.cert_file`, path: l.tls.cert_file }, { key: `modbus.listeners.${i}.tls.ca_file`, path: l.tls.ca_file });
  });
  c.opcua?.servers.forEach((s, i) => {
    if (s.server_certificate) out.push({ key: `opcua.servers.${i}.server_certificate`, path: s.server_certificate });
  });
  if (c.opcua) {
    const own = join(c.opcua.pki_dir, "own", "certs", "client_certificate.pem");
    if (existsSync(own)) out.push({ key: "opcua.pki_dir", path: own });
  }
  return out;
}

export type CertificateState = "ok" | "expires_soon" | "expired" | "not_yet_valid" | "unreadable";

export interface CertificateStatus {
  key: string;
  path: string;
  state: CertificateState;
  /** The certificate in the file that expires first (a CA file may hold several). */
  subject?: string;
  not_before?: string;
  not_after?: string;
  /** Whole days until `not_after` (negative: expired that long ago). */
  days_left?: number;
  /** Certificates in the file. */
  count?: number;
  error?: string;
}

/** The certificates of one file (PEM, one or more; or DER). */
function parse(bytes: Buffer): X509Certificate[] {
  const text = bytes.toString("latin1");
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!blocks) return [new X509Certificate(bytes)];
  return blocks.map((b) => new X509Certificate(b));
}

/** Parsed files, kept while their size and modification time stay the same (checked every heartbeat). */
const cache = new Map<string, { stamp: string; certs: X509Certificate[] }>();

function certificatesIn(path: string): X509Certificate[] {
  const st = statSync(path);
  const stamp = `${st.size}:${st.mtimeMs}:${st.ino}`;
  const hit = cache.get(path);
  if (hit?.stamp === stamp) return hit.certs;
  const certs = parse(readFileSync(path));
  if (cache.size >= 64) cache.clear();
  cache.set(path, { stamp, certs });
  return certs;
}

/** How each certificate file stands at `now`: judged by the certificate in it that expires first. */
export function certificateStatus(files: readonly { key: string; path: string }[], now: number, warnDays = CERT_WARN_DAYS): CertificateStatus[] {
  return files.map(({ key, path }) => {
    let certs: X509Certificate[];
    try {
      certs = certificatesIn(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      return { key, path, state: "unreadable", error: code ?? (e as Error).message };
    }
    const first = certs.reduce((a, b) => (Date.parse(b.validTo) < Date.parse(a.validTo) ? b : a));
    const from = Date.parse(certs.reduce((a, b) => (Date.parse(b.validFrom) > Date.parse(a.validFrom) ? b : a)).validFrom);
    const to = Date.parse(first.validTo);
    const daysLeft = Math.floor((to - now) / DAY_MS);
    const state: CertificateState = now >= to ? "expired" : now < from ? "not_yet_valid" : to - now <= warnDays * DAY_MS ? "expires_soon" : "ok";
    return {
      key, path, state, subject: first.subject.replace(/\n/g, ", "), not_before: new Date(from).toISOString(), not_after: new Date(to).toISOString(), days_left: daysLeft, count: certs.length,
    };
  });
}

/** A certificate that is not `ok`: a title, and one sentence naming the file and the config key. */
export function certificateProblem(s: CertificateStatus): { title: string; text: string } | undefined {
  const where = `${s.path} (${s.key})`;
  switch (s.state) {
    case "expired":
      return { title: "Certificate expired", text: `${where} (${s.subject}) expired on ${s.not_after}; TLS peers refuse it, so what it secures no longer connects until it is replaced` };
    case "expires_soon":
      return { title: "Certificate expires soon", text: `${where} (${s.subject}) expires on ${s.not_after}, in ${s.days_left} day(s); replace it before then, or what it secures stops connecting` };
    case "not_yet_valid":
      return { title: "Certificate not yet valid", text: `${where} is valid only from ${s.not_before}: the gateway's clock is behind, or the certificate was issued for later` };
    case "unreadable":
      return { title: "Certificate unreadable", text: `${where} cannot be read or parsed while the daemon runs (${s.error}); the next start refuses it` };
    default:
      return undefined;
  }
}
