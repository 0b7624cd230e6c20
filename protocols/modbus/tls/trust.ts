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
 * signature) to a self-signed certificate of the new CA file, and each certificate of the path
 * below it is looked up in the CRLs of its issuer. The verdict is the handshake's, as node:tls
 * has OpenSSL give it: a path must end at a root of the CA file (an intermediate alone there is
 * not enough), and with a CRL file every certificate of the path needs a current CRL of its
 * issuer (node:tls checks CRLs for the whole chain), else the client is no longer trusted.
 * A CRL counts for a certificate only when its issuer name is the certificate's issuer name
 * and its signature verifies with that issuer's key; RSA-PSS signatures are checked with the parameters the CRL
 * names (hash, MGF1 with that same hash, salt length). A CRL signed with an algorithm not known
 * here is not used for this check. The material has already passed OpenSSL when the
 * secure context was made; the CRL's DER is read strictly, and one it cannot read is refused
 * as material.
 */
import { constants, verify, X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";
import { children, decodeOid, DerError, readTlv, type Tlv } from "./der";
import { DaemonError } from "../../../agent/core/errors";

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

const RSASSA_PSS = "1.2.840.113549.1.1.10";
const MGF1 = "1.2.840.113549.1.1.8";
/** RFC 4055 hash algorithm OIDs. */
const HASH_OID: Record<string, string> = {
  "1.3.14.3.2.26": "sha1",
  "2.16.840.1.101.3.4.2.1": "sha256",
  "2.16.840.1.101.3.4.2.2": "sha384",
  "2.16.840.1.101.3.4.2.3": "sha512",
};

/** How a CRL's signature is checked: a hash (null for EdDSA), and PSS's salt length; undefined when not supported. */
type SigCheck = { hash: string | null; pssSalt?: number } | undefined;

interface Crl {
  /** DER of the issuer Name. */
  issuer: Buffer;
  /** thisUpdate and nextUpdate (ms; nextUpdate may be absent). */
  thisUpdate: number;
  nextUpdate: number | undefined;
  /** Hex of the DER INTEGER bytes of each revoked serial number. */
  revoked: Set<string>;
  tbs: Buffer;
  sig: SigCheck;
  signature: Buffer;
}

/** The hash of an AlgorithmIdentifier naming one (RFC 4055), or undefined. */
function hashOf(der: Buffer, alg: Tlv): string | undefined {
  if (alg.tag !== 0x30) throw new DerError("AlgorithmIdentifier is not a SEQUENCE");
  const oid = children(der, alg)[0];
  return oid ? HASH_OID[decodeOid(der, oid)] : undefined;
}

/** A small non-negative DER INTEGER. */
function smallInt(der: Buffer, t: Tlv | undefined): number {
  if (t?.tag !== 0x02 || t.end - t.start < 1 || t.end - t.start > 4 || der[t.start]! & 0x80) throw new DerError("not a small INTEGER");
  let v = 0;
  for (let i = t.start; i < t.end; i++) v = v * 256 + der[i]!;
  return v;
}

/**
 * RFC 4055 §3.1 RSASSA-PSS-params (defaults SHA-1, MGF1 with SHA-1, salt 20, trailer 1).
 * Supported when MGF1 uses the signature's hash, which is what node:crypto applies.
 */
function pssCheck(der: Buffer, params: Tlv | undefined): SigCheck {
  let hash = "sha1";
  let mgfHash = "sha1";
  let salt = 20;
  if (params) {
    if (params.tag !== 0x30) throw new DerError("RSASSA-PSS-params is not a SEQUENCE");
    for (const f of children(der, params)) {
      const inner = readTlv(der, f.start, f.end);
      if (f.tag === 0xa0) {
        const h = hashOf(der, inner);
        if (!h) return undefined;
        hash = h;
      } else if (f.tag === 0xa1) {
        const [oid, mgfParams] = children(der, inner);
        if (!oid || decodeOid(der, oid) !== MGF1 || !mgfParams) return undefined;
        const h = hashOf(der, mgfParams);
        if (!h) return undefined;
        mgfHash = h;
      } else if (f.tag === 0xa2) {
        salt = smallInt(der, inner);
      } else if (f.tag === 0xa3) {
        if (smallInt(der, inner) !== 1) return undefined;
      } else {
        throw new DerError("unknown field in RSASSA-PSS-params");
      }
    }
  }
  return mgfHash === hash ? { hash, pssSalt: salt } : undefined;
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
  const thisUpdate = derTime(der, parts[i++]);
  const nextUpdate = parts[i]?.tag === 0x17 || parts[i]?.tag === 0x18 ? derTime(der, parts[i++]) : undefined;
  const revoked = new Set<string>();
  if (parts[i]?.tag === 0x30) {
    for (const entry of children(der, parts[i]!)) {
      const serial = entry.tag === 0x30 ? children(der, entry)[0] : undefined;
      if (serial?.tag !== 0x02) throw new DerError("revoked entry without a serial number");
      revoked.add(der.subarray(serial.start, serial.end).toString("hex"));
    }
  }
  const [oid, params] = children(der, alg);
  if (!oid) throw new DerError("no signature algorithm");
  const sigOid = decodeOid(der, oid);
  const check: SigCheck = sigOid === RSASSA_PSS ? pssCheck(der, params) : sigOid in SIG_HASH ? { hash: SIG_HASH[sigOid]! } : undefined;
  return { issuer: der.subarray(issuerAt, issuer.end), thisUpdate, nextUpdate, revoked, tbs: tbs.der, sig: check, signature: der.subarray(sig.start + 1, sig.end) };
}

/** RFC 5280 §4.1.2.5 UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ), in ms. */
function derTime(der: Buffer, t: Tlv | undefined): number {
  const text = t && (t.tag === 0x17 || t.tag === 0x18) ? der.subarray(t.start, t.end).toString("latin1") : "";
  const m = (t?.tag === 0x17 ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/ : /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/).exec(text);
  if (!m) throw new DerError("not a UTCTime or GeneralizedTime");
  const [y, mo, d, h, mi, se] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  const year = t!.tag === 0x17 ? (y >= 50 ? 1900 + y : 2000 + y) : y;
  return Date.UTC(year, mo - 1, d, h, mi, se);
}

/** Every CRL of a PEM file; throws (with what is wrong) when one cannot be read. */
function pemCrls(buf: Buffer, what: string): Crl[] {
  return [...buf.toString("latin1").matchAll(PEM_CRL)].map((m, i) => {
    try {
      return parseCrl(Buffer.from(m[1]!.replace(/\s+/g, ""), "base64"));
    } catch (e) {
      throw new DaemonError("TLS_SETUP", `${what}: CRL ${i + 1} cannot be read (${(e as Error).message})`, { cause: e });
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
  private readonly crls: Crl[] | undefined;

  /** From the listener's `ca_file` and `crl_file` contents; throws when either cannot be read. */
  constructor(ca: Buffer, crl: Buffer | undefined, names: { ca: string; crl?: string }) {
    this.cas = pemCertificates(ca, `ca_file ${names.ca}`);
    this.crls = crl ? pemCrls(crl, `crl_file ${names.crl ?? ""}`) : undefined;
  }

  /**
   * Whether a client certificate (with the intermediates the client presented) is still
   * accepted: it chains to a self-signed certificate of the CA file, and, with a CRL file,
   * every certificate of that path below the root has a current CRL of its issuer that does
   * not list it. `now`: ms, for the CRLs' validity.
   */
  check(leaf: X509Certificate, presented: readonly X509Certificate[], now = Date.now()): TrustVerdict {
    const path = [leaf];
    for (let depth = 1; depth <= MAX_DEPTH; depth++) {
      const cur = path[path.length - 1]!;
      if (this.cas.includes(cur) && issuedBy(cur, cur)) return this.revocation(path.slice(0, -1), cur, now);
      if (depth === MAX_DEPTH) break;
      const fits = (c: X509Certificate): boolean => !path.includes(c) && issuedBy(cur, c);
      const next = this.cas.find(fits) ?? presented.find((c) => c.ca && fits(c));
      if (!next) break;
      path.push(next);
    }
    return { ok: false, reason: "untrusted", detail: "the certificate no longer chains to a root certificate of ca_file" };
  }

  private revocation(path: readonly X509Certificate[], root: X509Certificate, now: number): TrustVerdict {
    if (!this.crls) return { ok: true };
    for (const [i, cert] of path.entries()) {
      const issuerCert = path[i + 1] ?? root;
      const which = i === 0 ? "the certificate" : `certificate ${cert.subject.replace(/\n/g, ",")} of its path`;
      let id: { issuer: Buffer; serial: string };
      try {
        id = issuerAndSerial(cert);
      } catch {
        return { ok: false, reason: "untrusted", detail: "a certificate of the path cannot be read" };
      }
      const mine = this.crls.filter((crl) => crl.issuer.equals(id.issuer) && this.signedBy(crl, issuerCert));
      const current = mine.filter((crl) => crl.thisUpdate <= now && (crl.nextUpdate === undefined || now < crl.nextUpdate));
      if (current.some((crl) => crl.revoked.has(id.serial))) return { ok: false, reason: "revoked", detail: `${which} is revoked by crl_file` };
      if (!current.length) {
        const why = mine.length ? "is out of date" : "is missing";
        return { ok: false, reason: "untrusted", detail: `the CRL of the issuer of ${which} ${why} in crl_file` };
      }
    }
    return { ok: true };
  }

  private signedBy(crl: Crl, issuer: X509Certificate): boolean {
    const s = crl.sig;
    if (!s) return false;
    try {
      const key = s.pssSalt === undefined ? issuer.publicKey : { key: issuer.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: s.pssSalt };
      return verify(s.hash, crl.tbs, key, crl.signature);
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
