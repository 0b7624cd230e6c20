/**
 * The OPC UA trust lists as `gatewarden opcua pki` shows and changes them:
 * - `servers`: upstream server certificates the client trusts (`<pki_dir>/trusted`, `rejected`);
 * - `clients`: client application certificates the front trusts (`<pki_dir>/front/...`);
 * - `users`: user certificates (or their CAs) the front trusts (`<pki_dir>/front-users/...`).
 * Each certificate is shown with its SHA-1 thumbprint (what OPC UA tools show) and SHA-256.
 */
import { X509Certificate } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import type { OPCUACertificateManager } from "node-opcua-certificate-manager";
import { DaemonError } from "../../agent/core/errors";
import type { CertificateSeen } from "./events";
import { derOf, describeCertificate } from "./link";

export const TRUST_LISTS = ["servers", "clients", "users"] as const;
export type TrustList = (typeof TRUST_LISTS)[number];

export interface PkiEntry extends CertificateSeen {
  list: TrustList;
  state: "trusted" | "rejected";
  issuer: string;
  not_before: string;
  not_after: string;
  file: string;
}

function filesIn(dir: string): string[] {
  try {
    return readdirSync(dir)
      .filter((f) => /\.(pem|der|crt|cer)$/i.test(f))
      .map((f) => join(dir, f))
      .filter((f) => statSync(f).isFile());
  } catch {
    return [];
  }
}

function entry(list: TrustList, state: PkiEntry["state"], file: string): PkiEntry | undefined {
  try {
    const der = derOf(readFileSync(file));
    const x = new X509Certificate(der);
    return { ...describeCertificate(der), list, state, issuer: x.issuer.replace(/\n/g, ", "), not_before: new Date(x.validFrom).toISOString(), not_after: new Date(x.validTo).toISOString(), file };
  } catch {
    return undefined; // not a certificate: not listed
  }
}

/** Every certificate of the given stores, trusted first, newest first within each. */
export function listPki(stores: Partial<Record<TrustList, OPCUACertificateManager>>): PkiEntry[] {
  const out: PkiEntry[] = [];
  for (const list of TRUST_LISTS) {
    const cm = stores[list];
    if (!cm) continue;
    for (const [state, dir] of [["trusted", join(cm.rootDir, "trusted", "certs")], ["rejected", cm.rejectedFolder]] as const) {
      for (const f of filesIn(dir).sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)) {
        const e = entry(list, state, f);
        if (e) out.push(e);
      }
    }
  }
  return out;
}

/** The entries matching a SHA-1 or SHA-256 thumbprint (hex, colons allowed); USAGE when it is neither. */
export function findPki(entries: readonly PkiEntry[], thumbprint: string): PkiEntry[] {
  const want = thumbprint.replace(/:/g, "").toLowerCase();
  if (!/^([0-9a-f]{40}|[0-9a-f]{64})$/.test(want)) throw new DaemonError("USAGE", `"${thumbprint}" is not a SHA-1 (40 hex digits) or SHA-256 (64 hex digits) thumbprint`);
  return entries.filter((e) => e.thumbprint === want || e.sha256 === want);
}
