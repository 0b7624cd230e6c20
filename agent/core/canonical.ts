/**
 * Canonical JSON (RFC 8785, JSON Canonicalization Scheme): object keys sorted by UTF-16 code
 * units, no whitespace, numbers and strings as ECMAScript's JSON.stringify writes them. Any
 * party with a JCS implementation recomputes the same bytes, hence the same event hash.
 * Non-finite numbers and undefined values inside arrays are rejected: they have no JSON form.
 */
/** Canonical text of interned objects, computed once (e.g. the OCSF metadata every event shares). */
const internedText = new WeakMap<object, string>();
/** Every object key inside an interned object (checked once, when it was interned). */
const internedKeys = new WeakMap<object, string[]>();

/** Deep-freezes an object and remembers its canonical text: for values shared by many events. */
export function intern<T extends object>(obj: T): Readonly<T> {
  const freeze = (o: unknown): void => {
    if (typeof o !== "object" || o === null || Object.isFrozen(o)) return;
    for (const v of Object.values(o)) freeze(v);
    Object.freeze(o);
  };
  freeze(obj);
  const keys = new Set<string>();
  collect(obj, keys);
  internedText.set(obj, canonicalObject(obj as Record<string, unknown>));
  internedKeys.set(obj, [...keys]);
  return obj;
}

export function canonicalize(value: unknown): string {
  if (typeof value !== "object" || value === null) return canonicalLeaf(value);
  const cached = internedText.get(value);
  if (cached !== undefined) return cached;
  const keys = new Set<string>();
  collect(value, keys);
  // An own "__proto__" member (JSON.parse makes them) is not written faithfully through a
  // property list: write such values member by member.
  if (keys.has("__proto__")) return memberwise(value);
  // Native JSON.stringify writes an object's members in the order of an array replacer, at
  // every depth; the sorted union of all keys is thus RFC 8785 order. Strings and numbers are
  // written exactly as JCS specifies (it is defined by ECMAScript's JSON.stringify).
  return JSON.stringify(value, [...keys].sort());
}

/** Walks a value: collects object keys and rejects what JSON cannot carry. */
function collect(v: unknown, keys: Set<string>): void {
  if (typeof v !== "object" || v === null) {
    canonicalLeaf(v);
    return;
  }
  const known = internedKeys.get(v);
  if (known) {
    for (const k of known) keys.add(k);
    return;
  }
  if (Array.isArray(v)) {
    for (const x of v) {
      if (x === undefined) throw new TypeError("canonical JSON has no form for undefined in an array");
      collect(x, keys);
    }
    return;
  }
  if (typeof (v as { toJSON?: unknown }).toJSON === "function") throw new TypeError("canonical JSON does not serialize objects with toJSON");
  for (const k of Object.keys(v)) {
    const x = (v as Record<string, unknown>)[k];
    if (x === undefined) continue;
    keys.add(k);
    collect(x, keys);
  }
}

function canonicalLeaf(value: unknown): string {
  switch (typeof value) {
    case "string":
    case "boolean":
      return JSON.stringify(value);
    case "number":
      if (!Number.isFinite(value)) throw new TypeError("canonical JSON has no form for " + String(value));
      return JSON.stringify(value);
    case "object":
      if (value === null) return "null";
      throw new TypeError("not a leaf");
    default:
      throw new TypeError(`canonical JSON has no form for a ${typeof value}`);
  }
}

function memberwise(v: unknown): string {
  if (typeof v !== "object" || v === null) return canonicalLeaf(v);
  const cached = internedText.get(v);
  if (cached !== undefined) return cached;
  if (Array.isArray(v)) return "[" + v.map(memberwise).join(",") + "]";
  return canonicalObject(v as Record<string, unknown>, memberwise);
}

function canonicalObject(obj: Record<string, unknown>, inner: (v: unknown) => string = canonicalize): string {
  const keys = Object.keys(obj).sort();
  let out = "{";
  let first = true;
  for (const k of keys) {
    const v = obj[k];
    if (v === undefined) continue;
    if (!first) out += ",";
    first = false;
    out += JSON.stringify(k) + ":" + inner(v);
  }
  return out + "}";
}
