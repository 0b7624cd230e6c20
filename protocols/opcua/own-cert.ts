/**
 * The gateway's own OPC UA application certificate, used by the client links and the front:
 * application URI `urn:gatewarden:<device-id>`, the configured subject, valid for at most two
 * years, signed with the store's own key (0600). Made at the first start; `gatewarden opcua pki
 * renew` makes a new one (same key) that new channels use at once.
 */
import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync, renameSync, rmSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import type { OPCUACertificateManager } from "node-opcua-certificate-manager";
import { DaemonError } from "../../agent/core/errors";

export const MAX_VALIDITY_DAYS = 730;

export interface OwnCertificateOptions {
  deviceId: string;
  /** `/CN=.../O=...`; default `/CN=Gatewarden <device-id>/O=Gatewarden`. */
  subject?: string;
  validityDays: number;
}

export const applicationUri = (deviceId: string) => `urn:gatewarden:${deviceId}`;

export function ownCertificateFile(cm: OPCUACertificateManager): string {
  return join(cm.rootDir, "own", "certs", "client_certificate.pem");
}

export function ownKeyFile(cm: OPCUACertificateManager): string {
  return join(cm.rootDir, "own", "private", "private_key.pem");
}

/** Makes the certificate when there is none (or `renew`); returns whether it made one. */
export async function ensureOwnCertificate(cm: OPCUACertificateManager, o: OwnCertificateOptions, renew = false): Promise<boolean> {
  const file = ownCertificateFile(cm);
  if (existsSync(file) && !renew) return false;
  const tmp = `${file}.new`;
  rmSync(tmp, { force: true });
  try {
    await cm.createSelfSignedCertificate({
      outputFile: tmp,
      applicationUri: applicationUri(o.deviceId),
      subject: o.subject ?? `/CN=Gatewarden ${o.deviceId}/O=Gatewarden`,
      dns: [hostname()],
      startDate: new Date(Date.now() - 60_000),
      validity: Math.min(o.validityDays, MAX_VALIDITY_DAYS),
    });
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new DaemonError("OPCUA_SETUP", `the OPC UA application certificate ${file} cannot be made: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  renameSync(tmp, file);
  return true;
}

/** What is wrong with an existing certificate (not ours: node-opcua's default, another URI, too long), or undefined. */
export function ownCertificateProblem(cm: OPCUACertificateManager, deviceId: string): string | undefined {
  const file = ownCertificateFile(cm);
  if (!existsSync(file)) return undefined;
  try {
    const x = new X509Certificate(readFileSync(file));
    if (!(x.subjectAltName ?? "").includes(`URI:${applicationUri(deviceId)}`)) return `its application URI is not ${applicationUri(deviceId)}`;
    if (Date.parse(x.validTo) - Date.parse(x.validFrom) > (MAX_VALIDITY_DAYS + 1) * 86_400_000) return "it is valid for more than two years";
    return undefined;
  } catch {
    return "it cannot be read";
  }
}
