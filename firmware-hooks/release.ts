import { createHash, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { closeSync, constants as fsConstants, fstatSync, lstatSync, openSync, readdirSync, readFileSync, readSync, type Stats } from "node:fs";
import { join, relative, sep } from "node:path";
import { z } from "zod";
import { canonicalize } from "../agent/core/canonical";
import { signBytes, verifyBytes } from "../agent/core/sign";
import { DaemonError, pathUnusable } from "../agent/core/errors";
import { fingerprint, loadEd25519PrivateKey } from "../agent/core/keys";
import { writeNewFiles } from "../agent/core/secret-files";

/**
 * A Gatewarden release manifest: which version, for which device class, which files (SHA-256)
 * and the anti-rollback counter, signed with a fleet release key (Ed25519 over the RFC 8785
 * canonical JSON of `manifest`). It travels inside the update bundle as `gatewarden-release.json`.
 */
export const RELEASE_FILE = "gatewarden-release.json";
export const FORMAT = "gatewarden-release/1";

const SHA256 = /^[0-9a-f]{64}$/;

export const manifestSchema = z.strictObject({
  format: z.literal(FORMAT),
  version: z.string().regex(/^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$/, "letters, digits, '.', '+', '_' or '-'"),
  /** Anti-rollback counter: a device refuses a release whose counter is below the one it committed. */
  counter: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  device_class: z.string().min(1).max(64),
  /** Relative path (with '/') -> SHA-256 hex of every file the release carries. */
  files: z.record(z.string().min(1), z.string().regex(SHA256, "a SHA-256 in hex")),
  created: z.string().optional(),
  description: z.string().max(1000).optional(),
});
export type ReleaseManifest = z.output<typeof manifestSchema>;

const signedSchema = z.strictObject({
  manifest: z.unknown(),
  signatures: z.array(z.strictObject({ key: z.string(), sig: z.string() })).min(1).max(8),
});

export interface SignedRelease {
  manifest: ReleaseManifest;
  signatures: { key: string; sig: string }[];
}

/** `gatewarden release keys init` (and `soc command-key init`): release.key (0600) and release.pub in `dir`, both or neither. */
export function generateReleaseKey(privPath: string, pubPath: string): string {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  // Both or neither: a private key left by a full disk would make the retry fail with KEY_EXISTS.
  writeNewFiles([
    { path: privPath, data: privateKey.export({ format: "pem", type: "pkcs8" }) as string, mode: 0o600 },
    { path: pubPath, data: publicKey.export({ format: "pem", type: "spki" }) as string, mode: 0o644 },
  ]);
  return fingerprint(publicKey);
}

export function loadReleasePrivateKey(path: string): KeyObject {
  return loadEd25519PrivateKey(path, "release private key");
}

export function loadReleasePublicKeys(paths: readonly string[]): Map<string, KeyObject> {
  const keys = new Map<string, KeyObject>();
  for (const p of paths) {
    let k: KeyObject;
    try {
      k = createPublicKey(readFileSync(p));
    } catch (e) {
      throw new DaemonError("KEY_INVALID", `update.release_keys: ${p} is not a readable PEM public key (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    if (k.asymmetricKeyType !== "ed25519") throw new DaemonError("KEY_INVALID", `update.release_keys: ${p} is a ${k.asymmetricKeyType} key, not Ed25519`);
    keys.set(fingerprint(k), k);
  }
  return keys;
}

/**
 * How a release tree's errors are reported: `what` names the tree for the operator (the
 * `--files` option, a bundle), `code` is the RELEASE_* code for an entry it cannot take.
 */
export interface TreeContext {
  what: string;
  code: "RELEASE_INVALID" | "RELEASE_MISMATCH";
}
const BUNDLE: TreeContext = { what: "release", code: "RELEASE_MISMATCH" };

const ONLY_REGULAR = "a release carries only regular files and directories";

function kindOf(st: Stats): string {
  if (st.isSymbolicLink()) return "a symbolic link";
  if (st.isFIFO()) return "a FIFO";
  if (st.isSocket()) return "a socket";
  if (st.isCharacterDevice() || st.isBlockDevice()) return "a device";
  return "not a regular file";
}

/**
 * Every regular file under `dir` (relative, '/'-separated), except the release file itself.
 * A release is a security boundary: it carries regular files and directories only. A symbolic
 * link (even to a file inside the tree: the installer copies content, so the link would not be
 * what was signed), FIFO, socket or device is refused by name, and never opened.
 */
export function listFiles(dir: string, o: TreeContext = BUNDLE): string[] {
  const out: string[] = [];
  const rel = (p: string) => relative(dir, p).split(sep).join("/");
  const walk = (d: string) => {
    let names: string[];
    try {
      names = readdirSync(d).sort();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (d === dir) throw pathUnusable(dir, `${o.what} directory`, code === "ENOENT" ? "it does not exist (ENOENT)" : code === "ENOTDIR" ? "it is not a directory (ENOTDIR)" : (e as NodeJS.ErrnoException));
      throw new DaemonError(o.code, `${o.what} ${dir}: directory ${rel(d)} cannot be read (${code ?? (e as Error).message})`);
    }
    for (const name of names) {
      const p = join(d, name);
      let st: Stats;
      try {
        st = lstatSync(p);
      } catch (e) {
        throw new DaemonError(o.code, `${o.what} ${dir}: ${rel(p)} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
      if (st.isDirectory()) walk(p);
      else if (st.isFile()) {
        if (rel(p) !== RELEASE_FILE) out.push(rel(p));
      } else throw new DaemonError(o.code, `${o.what} ${dir}: ${rel(p)} is ${kindOf(st)}; ${ONLY_REGULAR}`);
    }
  };
  walk(dir);
  return out;
}

/**
 * Opens the regular file `f` under `dir` to read: without following a link and without
 * blocking, then checked to be a regular file, so one swapped for a link or FIFO after the
 * listing is refused, not followed or waited on for ever. `fail` makes the error from why.
 */
function openRegular(path: string, fail: (why: string) => DaemonError): number {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw fail(code === "ELOOP" ? `is a symbolic link; ${ONLY_REGULAR}` : `cannot be read (${code ?? (e as Error).message})`);
  }
  const st = fstatSync(fd);
  if (!st.isFile()) {
    closeSync(fd);
    throw fail(`is ${kindOf(st)}; ${ONLY_REGULAR}`);
  }
  return fd;
}

/** Reads `fd` to its end in chunks, handing each to `take`; `fail` makes the error on a read error. */
function readChunks(fd: number, take: (b: Buffer) => void, fail: (why: string) => DaemonError): void {
  const buf = Buffer.allocUnsafe(1 << 20);
  try {
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        throw fail(`cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
      if (n === 0) return;
      take(Buffer.from(buf.subarray(0, n)));
    }
  } finally {
    closeSync(fd);
  }
}

/** The SHA-256 of the regular file `f` under `dir` (never a link, FIFO, socket or device). */
export function sha256File(dir: string, f: string, o: TreeContext = BUNDLE): string {
  const fail = (why: string) => new DaemonError(o.code, `${o.what} ${dir}: ${f} ${why}`);
  const h = createHash("sha256");
  readChunks(openRegular(join(dir, f), fail), (b) => h.update(b), fail);
  return h.digest("hex");
}

export function hashTree(dir: string, o: TreeContext = BUNDLE): Record<string, string> {
  return Object.fromEntries(listFiles(dir, o).map((f) => [f, sha256File(dir, f, o)]));
}

/** Parses an unsigned manifest (JSON) with errors naming the field. */
export function parseManifest(value: unknown, origin: string): ReleaseManifest {
  const r = manifestSchema.safeParse(value);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new DaemonError("RELEASE_INVALID", `${origin}: ${i.path.join(".") || "(top level)"}: ${i.message}`);
  }
  for (const f of Object.keys(r.data.files)) {
    if (f.startsWith("/") || f.split("/").some((s) => s === ".." || s === "." || s === "")) throw new DaemonError("RELEASE_INVALID", `${origin}: files: "${f}" is not a plain relative path`);
  }
  return r.data;
}

export function signManifest(m: ReleaseManifest, key: KeyObject): SignedRelease {
  const sig = signBytes(key, Buffer.from(canonicalize(m))).toString("base64");
  return { manifest: m, signatures: [{ key: fingerprint(createPublicKey(key)), sig }] };
}

export function readSignedRelease(dir: string): SignedRelease {
  const file = join(dir, RELEASE_FILE);
  const parts: Buffer[] = [];
  const fail = (why: string) => new DaemonError("RELEASE_INVALID", `${file} ${why}${why.includes("(ENOENT)") ? ": the bundle carries no Gatewarden release manifest" : ""}`);
  readChunks(openRegular(file, fail), (b) => parts.push(b), fail);
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.concat(parts).toString("utf8"));
  } catch {
    throw new DaemonError("RELEASE_INVALID", `${file} is not JSON`);
  }
  const s = signedSchema.safeParse(raw);
  if (!s.success) throw new DaemonError("RELEASE_INVALID", `${file}: ${s.error.issues[0]!.path.join(".") || "(top level)"}: ${s.error.issues[0]!.message}`);
  return { manifest: parseManifest(s.data.manifest, file), signatures: s.data.signatures };
}

export interface ReleaseCheck {
  manifest: ReleaseManifest;
  /** Fingerprint of the fleet key whose signature verified. */
  key: string;
}

/**
 * The device-side check of a release in `dir` (a mounted bundle, an extracted artifact, a
 * release folder): signature by a trusted key, device class, counter not below `minCounter`,
 * and exactly the listed files with the listed hashes (except `engineFiles`, which the engine
 * itself rewrites and signs). Throws a RELEASE_* DaemonError.
 */
export function verifyRelease(dir: string, o: { keys: Map<string, KeyObject>; deviceClass: string; minCounter: number; files?: boolean; engineFiles?: readonly string[] }): ReleaseCheck {
  const rel = readSignedRelease(dir);
  const msg = Buffer.from(canonicalize(rel.manifest));
  let key: string | undefined;
  let knownButBad = false;
  for (const s of rel.signatures) {
    const k = o.keys.get(s.key);
    if (!k) continue;
    if (verifyBytes(k, msg, Buffer.from(s.sig, "base64"))) {
      key = s.key;
      break;
    }
    knownButBad = true;
  }
  const m = rel.manifest;
  if (!key) {
    throw new DaemonError(
      "RELEASE_UNTRUSTED",
      knownButBad
        ? `release ${m.version}: the signature by fleet key ${rel.signatures[0]!.key} does not verify (manifest altered after signing)`
        : `release ${m.version} is signed by ${rel.signatures.map((s) => s.key).join(", ")}, none of which is in update.release_keys`,
    );
  }
  if (m.device_class !== o.deviceClass) throw new DaemonError("RELEASE_MISMATCH", `release ${m.version} is for device class ${m.device_class}; this device is ${o.deviceClass} (update.device_class)`);
  if (m.counter < o.minCounter) throw new DaemonError("RELEASE_ROLLBACK", `release ${m.version} has counter ${m.counter}, below the installed counter ${o.minCounter}: refusing to go back`);
  if (o.files !== false) {
    // Files the engine writes into its own signed bundle (RAUC adds image hashes to manifest.raucm).
    const own = new Set(o.engineFiles ?? []);
    const present = listFiles(dir).filter((f) => !own.has(f));
    const listed = Object.keys(m.files).filter((f) => !own.has(f));
    const extra = present.filter((f) => !(f in m.files));
    const missing = listed.filter((f) => !present.includes(f));
    if (extra.length) throw new DaemonError("RELEASE_MISMATCH", `release ${m.version}: ${extra.slice(0, 5).join(", ")} ${extra.length === 1 ? "is" : "are"} not in the signed manifest`);
    if (missing.length) throw new DaemonError("RELEASE_MISMATCH", `release ${m.version}: ${missing.slice(0, 5).join(", ")} listed in the manifest but missing`);
    for (const f of listed) {
      if (sha256File(dir, f) !== m.files[f]) throw new DaemonError("RELEASE_MISMATCH", `release ${m.version}: ${f} does not match its SHA-256 in the signed manifest`);
    }
  }
  return { manifest: m, key };
}
