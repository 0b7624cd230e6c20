/** A minimal, strict DER reader (X.690): definite lengths only, bounds-checked. */
export interface Tlv {
  tag: number;
  /** Offset of the value and one past its end. */
  start: number;
  end: number;
}

export class DerError extends Error {}

export function readTlv(b: Uint8Array, at: number, limit = b.length): Tlv {
  if (at + 2 > limit) throw new DerError("truncated TLV");
  const tag = b[at]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError("multi-byte tags are not supported");
  let len = b[at + 1]!;
  let p = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) throw new DerError("indefinite length is not DER");
    if (n > 3) throw new DerError("length too large");
    if (p + n > limit) throw new DerError("truncated length");
    len = 0;
    for (let i = 0; i < n; i++) len = (len << 8) | b[p + i]!;
    if (len < 0x80 || (n > 1 && b[p] === 0)) throw new DerError("non-minimal length");
    p += n;
  }
  if (p + len > limit) throw new DerError("value runs past its container");
  return { tag, start: p, end: p + len };
}

/** The children of a constructed value. */
export function children(b: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  let p = parent.start;
  while (p < parent.end) {
    const t = readTlv(b, p, parent.end);
    out.push(t);
    p = t.end;
  }
  return out;
}

export function decodeOid(b: Uint8Array, t: Tlv): string {
  if (t.tag !== 0x06 || t.end <= t.start) throw new DerError("not an OBJECT IDENTIFIER");
  const parts: number[] = [];
  let v = 0;
  for (let i = t.start; i < t.end; i++) {
    const c = b[i]!;
    v = v * 128 + (c & 0x7f);
    if (v > Number.MAX_SAFE_INTEGER / 128) throw new DerError("OID arc too large");
    if (!(c & 0x80)) {
      parts.push(v);
      v = 0;
    }
  }
  if (b[t.end - 1]! & 0x80) throw new DerError("truncated OID");
  const first = parts.shift()!;
  const a = first < 80 ? Math.floor(first / 40) : 2;
  return [a, first - a * 40, ...parts].join(".");
}
