/**
 * Canonical JSON (RFC 8785, JSON Canonicalization Scheme): object keys sorted by UTF-16 code
 * units, no whitespace, numbers and strings as ECMAScript's JSON.stringify writes them. Any
 * party with a JCS implementation recomputes the same bytes, hence the same event hash.
 * Non-finite numbers and undefined values inside arrays are rejected: they have no JSON form.
 */
/** Canonical text of interned objects, computed once (e.g. the OCSF metadata every event shares). */
const internedText = new WeakMap<object, string>();

/** Deep-freezes an object and remembers its canonical text: for values shared by many events. */
export function intern<T extends object>(obj: T): Readonly<T> {
  const freeze = (o: unknown): void => {
    if (typeof o !== "object" || o === null || Object.isFrozen(o)) return;
    for (const v of Object.values(o)) freeze(v);
    Object.freeze(o);
  };
  freeze(obj);
  internedText.set(obj, canonicalObject(obj as Record<string, unknown>));
  return obj;
}

export function canonicalize(value: unknown): string {
  switch (typeof value) {
    case "string":
    case "boolean":
      return JSON.stringify(value);
    case "number":
      if (!Number.isFinite(value)) throw new TypeError("canonical JSON has no form for " + String(value));
      return JSON.stringify(value);
    case "object": {
      if (value === null) return "null";
      if (Array.isArray(value)) {
        let out = "[";
        for (let i = 0; i < value.length; i++) {
          if (i) out += ",";
          const v: unknown = value[i];
          if (v === undefined) throw new TypeError("canonical JSON has no form for undefined in an array");
          out += canonicalize(v);
        }
        return out + "]";
      }
      return internedText.get(value) ?? canonicalObject(value as Record<string, unknown>);
    }
    default:
      throw new TypeError(`canonical JSON has no form for a ${typeof value}`);
  }
}

function canonicalObject(obj: Record<string, unknown>): string {
  const keys = Object.keys(obj).sort();
  let out = "{";
  let first = true;
  for (const k of keys) {
    const v = obj[k];
    if (v === undefined) continue;
    if (!first) out += ",";
    first = false;
    out += JSON.stringify(k) + ":" + canonicalize(v);
  }
  return out + "}";
}
