import { createHash, type KeyObject } from "node:crypto";
import { canonicalize } from "./canonical";
import { signBytes, verifyBytes } from "./sign";
import type { EventClass, SeverityId } from "./events";

/**
 * The one envelope for everything the agent reports.
 *
 * hash = SHA-256 over the canonical JSON (RFC 8785) of the envelope without `hash` and `sig`;
 * sig  = Ed25519 over the 32 hash bytes, with the device key.
 * prev = hash of the device's previous event (across boots), 64 zeros for the first one ever.
 */
export interface Envelope {
  v: 1;
  device: string;
  /** Boot epoch: strictly increasing per device (max(previous + 1, unix seconds at start)). */
  boot: number;
  /** Per-boot sequence number; 0 is the boot event. */
  seq: number;
  /** Wall time, ms since the Unix epoch. */
  time: number;
  /** Monotonic time since the boot's start, microseconds (immune to wall-clock steps). */
  mono: number;
  class: EventClass;
  severity: SeverityId;
  ocsf: Record<string, unknown>;
  prev: string;
  hash: string;
  sig: string;
}

export type UnsignedEnvelope = Omit<Envelope, "hash" | "sig">;

export const GENESIS_HASH = "0".repeat(64);

export function hashEnvelope(e: UnsignedEnvelope): string {
  const { hash: _h, sig: _s, ...body } = e as Envelope;
  return createHash("sha256").update(canonicalize(body)).digest("hex");
}

export function sealEnvelope(e: UnsignedEnvelope, key: KeyObject): Envelope {
  const hash = hashEnvelope(e);
  const sig = signBytes(key, Buffer.from(hash, "hex")).toString("base64");
  return { ...e, hash, sig };
}

export type EnvelopeCheck = "ok" | "malformed" | "bad_hash" | "bad_signature";

/** Structural check, hash recomputation and signature verification, in that order. */
export function checkEnvelope(e: unknown, key: KeyObject | undefined): EnvelopeCheck {
  if (!isEnvelopeShape(e)) return "malformed";
  if (hashEnvelope(e) !== e.hash) return "bad_hash";
  if (!key) return "ok";
  return verifyBytes(key, Buffer.from(e.hash, "hex"), Buffer.from(e.sig, "base64")) ? "ok" : "bad_signature";
}

/** Recomputes the hash only: cheap enough for the outbox's read path. */
export function hashMatches(e: Envelope): boolean {
  return hashEnvelope(e) === e.hash;
}

const HEX64 = /^[0-9a-f]{64}$/;

export function isEnvelopeShape(e: unknown): e is Envelope {
  if (typeof e !== "object" || e === null) return false;
  const o = e as Record<string, unknown>;
  return (
    o.v === 1 &&
    typeof o.device === "string" &&
    Number.isSafeInteger(o.boot) &&
    Number.isSafeInteger(o.seq) &&
    (o.seq as number) >= 0 &&
    typeof o.time === "number" &&
    typeof o.mono === "number" &&
    typeof o.class === "string" &&
    typeof o.severity === "number" &&
    typeof o.ocsf === "object" &&
    o.ocsf !== null &&
    typeof o.prev === "string" &&
    HEX64.test(o.prev) &&
    typeof o.hash === "string" &&
    HEX64.test(o.hash) &&
    typeof o.sig === "string"
  );
}

/** An envelope hashed but not yet signed, with the pieces of its canonical text. */
export interface Prepared {
  u: UnsignedEnvelope;
  hash: string;
  hashBytes: Buffer;
  head: string;
  mid: string;
  tail: string;
}

/**
 * Hashes an envelope, composing the fixed top-level keys by hand (in JCS order) around the
 * once-canonicalized OCSF body. A test checks the result equals canonicalize(envelope).
 */
export function prepareEnvelope(u: UnsignedEnvelope): Prepared {
  const o = canonicalize(u.ocsf);
  const head = `{"boot":${u.boot},"class":${JSON.stringify(u.class)},"device":${JSON.stringify(u.device)},`;
  const mid = `"mono":${u.mono},"ocsf":${o},"prev":${JSON.stringify(u.prev)},"seq":${u.seq},"severity":${u.severity},`;
  const tail = `"time":${num(u.time)},"v":1}`;
  const hashBytes = createHash("sha256").update(head).update(mid).update(tail).digest();
  return { u, hash: hashBytes.toString("hex"), hashBytes, head, mid, tail };
}

/** Adds the signature (over the 32 hash bytes) and returns the envelope and its canonical text. */
export function finishEnvelope(p: Prepared, sig: Uint8Array): { env: Envelope; body: string } {
  const s = Buffer.from(sig.buffer, sig.byteOffset, sig.byteLength).toString("base64");
  // The unsigned envelope belongs to this batch alone: completed in place rather than copied.
  const env = p.u as Envelope;
  env.hash = p.hash;
  env.sig = s;
  return { env, body: `${p.head}"hash":"${p.hash}",${p.mid}"sig":"${s}",${p.tail}` };
}

export function buildSigned(u: UnsignedEnvelope, key: KeyObject): { env: Envelope; body: string } {
  const p = prepareEnvelope({ ...u }); // the caller keeps its object untouched
  return finishEnvelope(p, signBytes(key, p.hashBytes));
}

function num(n: number): string {
  if (!Number.isFinite(n)) throw new TypeError("canonical JSON has no form for " + String(n));
  return JSON.stringify(n);
}

/**
 * Checks a stored canonical body (UTF-8 bytes) against its own hash without parsing it:
 * removing the top-level `"hash":"…",` and `"sig":"…",` members from the canonical text gives
 * exactly the bytes that were hashed. The first `"hash":"` is the top-level key (boot, class
 * and device come before it and cannot contain an unescaped quote); the last `"sig":"` is the
 * top-level key (only `time` and `v` follow it). Any flipped byte outside the signature fails.
 */
export function storedBodyHashOk(body: Buffer): boolean {
  const h = body.indexOf(HASH_KEY);
  const s = body.lastIndexOf(SIG_KEY);
  if (h < 0 || s < h) return false;
  const hashEnd = h + HASH_KEY.length + 64;
  if (body[hashEnd] !== 34 || body[hashEnd + 1] !== 44) return false;
  const sigEnd = body.indexOf(QUOTE_COMMA, s + SIG_KEY.length);
  if (sigEnd < 0) return false;
  const digest = createHash("sha256").update(body.subarray(0, h)).update(body.subarray(hashEnd + 2, s)).update(body.subarray(sigEnd + 2)).digest("hex");
  return digest === body.toString("latin1", h + HASH_KEY.length, hashEnd);
}

const HASH_KEY = Buffer.from('"hash":"');
const SIG_KEY = Buffer.from('"sig":"');
const QUOTE_COMMA = Buffer.from('",');
