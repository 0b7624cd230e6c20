/**
 * The Modbus/TCP Security role (Modbus/TCP Security Protocol Specification, MB-TCP-Security
 * v21 §5.3): certificate extension OID 1.3.6.1.4.1.50316.802.1 whose value is one ASN.1
 * UTF8String. None, several, or a badly encoded role: the TLS session stays up and every
 * request is answered with exception 01 (R-21/R-22 of that specification).
 */
import { X509Certificate, createHash } from "node:crypto";
import { children, decodeOid, DerError, readTlv } from "./der";

export const ROLE_OID = "1.3.6.1.4.1.50316.802.1";

export type RoleResult = { ok: true; role: string } | { ok: false; reason: string };

/** Read the role from a DER certificate. Never throws. */
export function roleFromCertificate(der: Uint8Array): RoleResult {
  try {
    const cert = readTlv(der, 0);
    if (cert.tag !== 0x30) return { ok: false, reason: "certificate is not a SEQUENCE" };
    const tbs = children(der, cert)[0];
    if (!tbs || tbs.tag !== 0x30) return { ok: false, reason: "no TBSCertificate" };
    const extsWrapper = children(der, tbs).find((t) => t.tag === 0xa3);
    if (!extsWrapper) return { ok: false, reason: "certificate has no extensions, so no role" };
    const exts = children(der, extsWrapper)[0];
    if (!exts || exts.tag !== 0x30) return { ok: false, reason: "extensions are malformed" };
    const roles: string[] = [];
    for (const ext of children(der, exts)) {
      const parts = children(der, ext);
      const oid = parts[0];
      if (!oid || decodeOid(der, oid) !== ROLE_OID) continue;
      const value = parts[parts.length - 1];
      if (!value || value.tag !== 0x04) return { ok: false, reason: "role extension value is not an OCTET STRING" };
      const inner = readTlv(der, value.start, value.end);
      if (inner.end !== value.end) return { ok: false, reason: "role extension has trailing bytes" };
      if (inner.tag === 0x30) {
        const n = children(der, inner).length;
        return { ok: false, reason: n > 1 ? `certificate carries ${n} roles` : "role is a SEQUENCE, not a UTF8String" };
      }
      if (inner.tag !== 0x0c) return { ok: false, reason: `role is not a UTF8String (tag 0x${inner.tag.toString(16)})` };
      let s: string;
      try {
        s = new TextDecoder("utf-8", { fatal: true }).decode(der.subarray(inner.start, inner.end));
      } catch {
        return { ok: false, reason: "role is not valid UTF-8" };
      }
      if (!s) return { ok: false, reason: "role is empty" };
      roles.push(s);
    }
    if (roles.length === 0) return { ok: false, reason: "certificate carries no role" };
    if (roles.length > 1) return { ok: false, reason: `certificate carries ${roles.length} roles` };
    return { ok: true, role: roles[0]! };
  } catch (e) {
    return { ok: false, reason: e instanceof DerError ? `certificate DER malformed: ${e.message}` : "certificate unreadable" };
  }
}

/** Role, SHA-256 fingerprint and subject of a peer certificate. */
export function describeCertificate(cert: X509Certificate): { role?: string; roleError?: string; fingerprint: string; subject: string } {
  const r = roleFromCertificate(cert.raw);
  const fingerprint = createHash("sha256")
    .update(cert.raw)
    .digest("hex")
    .toUpperCase()
    .replace(/(..)(?!$)/g, "$1:");
  const subject = cert.subject.split("\n").join(",");
  return r.ok ? { role: r.role, fingerprint, subject } : { roleError: r.reason, fingerprint, subject };
}
