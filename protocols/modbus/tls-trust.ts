/**
 * What a TLS listener trusts (its CA certificates and CRLs), checked against client
 * certificates outside a handshake: when new material is loaded, every open connection is
 * checked again and closed if its certificate is no longer accepted.
 *
 * Why by hand: node:tls verifies a client only during a handshake, with the context the
 * connection was accepted with; there is no API to run the verification of a new secure
 * context against an established connection's certificate, and TLS 1.3 has no
 * renegotiation to force one (and it would need the client's cooperation). So the chain is
 * walked here with node:crypto (`checkIssued` for names and key identifiers, `verify` for the
 * signature) to a certificate of the new CA file, and each certificate of the path is looked
 * up in the CRLs of its issuer. A CRL counts for a certificate only when its issuer name is
 * the certificate's issuer name and its signature verifies with that issuer's key, as OpenSSL
 * requires during a handshake; a CRL signed with an algorithm not listed in SIG_HASH (e.g.
 * RSA-PSS) is not used for this check. The material has already passed OpenSSL when the
 * secure context was made; the CRL's DER is read strictly, and one it cannot read is refused
 * as material.
 */
import { verify, X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";
import { children, decodeOid, DerError, readTlv, type Tlv } from "./der";

/** Longest certificate path followed (leaf, intermediates, anchor). */
const MAX_DEPTH = 8;

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;
const PEM_CRL = /-----BEGIN X509 CRL-----([\s\S]*?)-----END X509 CRL-----/g;

/** Every certificate of a PEM file; throws when there is none, or one does not parse or is cut short. */
export function pemCertificates(buf: Buffer, what: string): X509Certificate[] {
  const text = buf.toString("latin1");
  const blocks = text.match(PEM_CERT) ?? [];
  const begins = text.split("-----BEGIN CERTIFICATE-----").length - 1;
  if (begins !== blocks.length) throw new Error(`${what} has a PEM block that is not a complete certificate`);
  if (!blocks.length) throw new Error(`${what} holds no PEM certificate`);
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (e) {
      throw new Error(`${what}: certificate ${i + 1} does not parse (${(e as Error).message})`);
    }
  });
}

/** Hash of the CRL signature algorithms used here (null: the algorithm has its own, EdDSA). */
const SIG_HASH: Record<string, string | null> = {
  "1.2.840.10045.4.1": "sha1", // ecdsa-with-SHA1
  "1.2.840.10045.4.3.2": "sha256",
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
  "1.2.840.113549.1.1.5": "sha1", // sha1WithRSAEncryption
  "1.2.840.113549.1.1.11": "sha256",
  "1.2.840.113549.1.1.12": "sha384",
  "1.2.840.113549.1.1.13": "sha512",
  "1.3.101.112": null, // Ed25519
  "1.3.101.113": null, // Ed448
};

interface Crl {
  /** DER of the issuer Name. */
  issuer: Buffer;
  /** Hex of the DER INTEGER bytes of each revoked serial number. */
  revoked: Set<string>;
  tbs: Buffer;
  sigOid: string;
  signature: Buffer;
}

/** The whole TLV (header and value) of each child, with its parsed form. */
function elements(b: Buffer, parent: Tlv): Array<Tlv & { der: Buffer }> {
  let at = parent.start;
  return children(b, parent).map((t) => {
    const e = { ...t, der: b.subarray(at, t.end) };
    at = t.end;
    return e;
  });
}

/** RFC 5280 §5.1 CertificateList. */
function parseCrl(der: Buffer): Crl {
  const top = readTlv(der, 0);
  if (top.tag !== 0x30 || top.end !== der.length) throw new DerError("not one SEQUENCE");
  const [tbs, alg, sig] = elements(der, top);
  if (tbs?.tag !== 0x30 || alg?.tag !== 0x30 || sig?.tag !== 0x03 || sig.end - sig.start < 2 || der[sig.start] !== 0) throw new DerError("not a CertificateList");
  const parts = children(der, tbs);
  let i = parts[0]?.tag === 0x02 ? 1 : 0; // version
  i++; // signature algorithm (repeated outside the TBS)
  const issuerAt = i === 0 ? tbs.start : parts[i - 1]!.end;
  const issuer = parts[i++];
  if (issuer?.tag !== 0x30) throw new DerError("no issuer Name");
  i++; // thisUpdate
  if (parts[i]?.tag === 0x17 || parts[i]?.tag === 0x18) i++; // nextUpdate
  const revoked = new Set<string>();
  if (parts[i]?.tag === 0x30) {
    for (const entry of children(der, parts[i]!)) {
      const serial = entry.tag === 0x30 ? children(der, entry)[0] : undefined;
      if (serial?.tag !== 0x02) throw new DerError("revoked entry without a serial number");
      revoked.add(der.subarray(serial.start, serial.end).toString("hex"));
    }
  }
  const oid = children(der, alg)[0];
  if (!oid) throw new DerError("no signature algorithm");
  return { issuer: der.subarray(issuerAt, issuer.end), revoked, tbs: tbs.der, sigOid: decodeOid(der, oid), signature: der.subarray(sig.start + 1, sig.end) };
}

/** Every CRL of a PEM file; throws (with what is wrong) when one cannot be read. */
function pemCrls(buf: Buffer, what: string): Crl[] {
  return [...buf.toString("latin1").matchAll(PEM_CRL)].map((m, i) => {
    try {
      return parseCrl(Buffer.from(m[1]!.replace(/\s+/g, ""), "base64"));
    } catch (e) {
      throw new Error(`${what}: CRL ${i + 1} cannot be read (${(e as Error).message})`);
    }
  });
}

/** Issuer Name (DER) and serial number (hex of the INTEGER bytes) of a certificate. */
function issuerAndSerial(cert: X509Certificate): { issuer: Buffer; serial: string } {
  const der = cert.raw;
  const tbs = children(der, readTlv(der, 0))[0];
  if (tbs?.tag !== 0x30) throw new DerError("no TBSCertificate");
  const parts = elements(der, tbs);
  const i = parts[0]?.tag === 0xa0 ? 1 : 0; // [0] version
  const serial = parts[i];
  const issuer = parts[i + 2];
  if (serial?.tag !== 0x02 || issuer?.tag !== 0x30) throw new DerError("malformed TBSCertificate");
  return { issuer: issuer.der, serial: der.subarray(serial.start, serial.end).toString("hex") };
}

function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

export type TrustVerdict = { ok: true } | { ok: false; reason: "revoked" | "untrusted"; detail: string };

export class TrustAnchors {
  private readonly cas: X509Certificate[];
  private readonly crls: Crl[];

  /** From the listener's `ca_file` and `crl_file` contents; throws when either cannot be read. */
  constructor(ca: Buffer, crl: Buffer | undefined, names: { ca: string; crl?: string }) {
    this.cas = pemCertificates(ca, `ca_file ${names.ca}`);
    this.crls = crl ? pemCrls(crl, `crl_file ${names.crl ?? ""}`) : [];
  }

  /**
   * Whether a client certificate (with the intermediates the client presented) is still
   * accepted: it chains to a certificate of the CA file, and no certificate of that path
   * below the anchor is revoked by a CRL of its issuer.
   */
  check(leaf: X509Certificate, presented: readonly X509Certificate[]): TrustVerdict {
    const path = [leaf];
    for (let depth = 1; depth < MAX_DEPTH; depth++) {
      const cur = path[path.length - 1]!;
      const anchor = this.cas.find((c) => issuedBy(cur, c));
      if (anchor) return this.revocation(path, anchor);
      const next = presented.find((c) => c.ca && !path.includes(c) && issuedBy(cur, c));
      if (!next) break;
      path.push(next);
    }
    return { ok: false, reason: "untrusted", detail: "the certificate no longer chains to a certificate of ca_file" };
  }

  private revocation(path: readonly X509Certificate[], anchor: X509Certificate): TrustVerdict {
    for (const [i, cert] of path.entries()) {
      const issuerCert = path[i + 1] ?? anchor;
      let id: { issuer: Buffer; serial: string };
      try {
        id = issuerAndSerial(cert);
      } catch {
        return { ok: false, reason: "untrusted", detail: "a certificate of the path cannot be read" };
      }
      for (const crl of this.crls) {
        if (!crl.revoked.has(id.serial) || !crl.issuer.equals(id.issuer) || !this.signedBy(crl, issuerCert)) continue;
        return { ok: false, reason: "revoked", detail: i === 0 ? "the certificate is revoked by crl_file" : `certificate ${cert.subject.replace(/\n/g, ",")} of its path is revoked by crl_file` };
      }
    }
    return { ok: true };
  }

  private signedBy(crl: Crl, issuer: X509Certificate): boolean {
    const hash = SIG_HASH[crl.sigOid];
    if (hash === undefined) return false;
    try {
      return verify(hash, crl.tbs, issuer.publicKey, crl.signature);
    } catch {
      return false;
    }
  }
}

/** An established TLS connection's client certificate and the intermediates it came with. */
export function peerChain(s: TLSSocket): { leaf: X509Certificate; presented: X509Certificate[] } | undefined {
  const leaf = s.getPeerX509Certificate();
  if (!leaf) return undefined;
  const presented: X509Certificate[] = [];
  const seen = new Set([leaf.fingerprint256]);
  let c = s.getPeerCertificate(true).issuerCertificate;
  for (let i = 1; c?.raw && i < MAX_DEPTH; i++) {
    const x = new X509Certificate(c.raw);
    if (seen.has(x.fingerprint256)) break;
    seen.add(x.fingerprint256);
    presented.push(x);
    c = c.issuerCertificate;
  }
  return { leaf, presented };
}
