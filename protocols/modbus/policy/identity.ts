import { BlockList, isIPv4, isIPv6 } from "node:net";

/** Who sent a request, as far as the transport can tell. */
export interface PeerIdentity {
  transport: "tcp" | "tls";
  /** Source address (IPv4-mapped IPv6 is reduced to IPv4). */
  address: string;
  /** Role from the certificate extension 1.3.6.1.4.1.50316.802.1 (TLS only). */
  role?: string;
  /** Why the certificate role is unusable (none, several, malformed). Set means: deny all. */
  roleError?: string;
  /** SHA-256 fingerprint of the client certificate, `AA:BB:...` upper case (TLS only). */
  fingerprint?: string;
  /** Client certificate subject, e.g. `CN=eng1,O=Water`. */
  subject?: string;
}

export function normaliseAddress(a: string | undefined): string {
  if (!a) return "unknown";
  return a.startsWith("::ffff:") && isIPv4(a.slice(7)) ? a.slice(7) : a;
}

/** A compiled list of addresses and CIDR blocks. */
export class AddressSet {
  private readonly list = new BlockList();
  constructor(entries: readonly string[]) {
    for (const e of entries) {
      const [ip, bits] = e.split("/");
      const type = isIPv6(ip ?? "") ? "ipv6" : "ipv4";
      if (bits === undefined) this.list.addAddress(ip!, type);
      else this.list.addSubnet(ip!, Number(bits), type);
    }
  }
  has(address: string): boolean {
    const a = normaliseAddress(address);
    if (isIPv4(a)) return this.list.check(a, "ipv4");
    if (isIPv6(a)) return this.list.check(a, "ipv6");
    return false;
  }
}

/** A certificate fingerprint in one form: hex digits, upper case (`sha256:` and separators dropped). */
export function normaliseFingerprint(s: string): string {
  return s.replace(/^sha256:/i, "").replace(/[^0-9a-f]/gi, "").toUpperCase();
}

/**
 * Who a per-client budget counts: the certificate (fingerprint) on Modbus/TCP Security, the
 * source address on plain TCP. Every connection of that client has the same key, so a new
 * connection brings no new budget.
 */
export function identityKey(id: PeerIdentity): string {
  return id.transport === "tls" && id.fingerprint ? `tls|${normaliseFingerprint(id.fingerprint)}` : `ip|${normaliseAddress(id.address)}`;
}

/**
 * One short label for logs and events: `role:operator/CN=op1,O=Water@10.0.0.5` (the role and
 * the certificate's subject: two holders of one role behind one address stay apart),
 * `cert:CN=x@10.0.0.5` (no usable role), `ip:10.0.0.5`. Events carry the fingerprint as well.
 */
export function describeIdentity(id: PeerIdentity): string {
  const cert = id.subject ?? id.fingerprint ?? "?";
  if (id.transport === "tls") return id.role ? `role:${id.role}/${cert}@${id.address}` : `cert:${cert}@${id.address}`;
  return `ip:${id.address}`;
}
