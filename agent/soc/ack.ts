import { createHash, type KeyObject } from "node:crypto";
import { canonicalize } from "../core/canonical";
import { privateKeyFromSeed, publicKeyFromRaw, rawPublicKey, signBytes, verifyBytes } from "../core/sign";

/**
 * End-to-end acknowledgements: after the SOC receiver's output is durable, it publishes, per
 * device and boot, the highest contiguous seq it has settled (received, covered by a loss
 * record, or reported as a gap), signed with the SOC's Ed25519 ack key. The gateway frees
 * outbox rows only on such an ack; the broker's PUBACK only moves its in-flight window.
 *
 * Topic `<prefix>/<device>/ack`, retained (a reconnecting gateway gets the latest at once),
 * payload the canonical JSON of `{v: 1, device, boot, seq, sig}`; `sig` is Ed25519 over the
 * canonical JSON of the other fields. Acks only ever move forward: an old one replayed by the
 * broker frees nothing new, and one for another device does not verify against its topic.
 */
export interface Ack {
  v: 1;
  device: string;
  boot: number;
  seq: number;
}

/** Upper bound on an ack payload; anything larger is not an ack. */
export const MAX_ACK_BYTES = 1024;

export function ackTopic(prefix: string, device: string): string {
  return `${prefix}/${device}/ack`;
}

/**
 * The SOC's ack signing key, derived from its X25519 secret (one secret to keep, and an
 * existing soc.key gains an ack key without a new file).
 */
export function ackKeyFromSocSecret(socSecret: Uint8Array): KeyObject {
  return privateKeyFromSeed(createHash("sha256").update("gatewarden soc ack key v1\0").update(socSecret).digest());
}

export function ackPublicKeyB64(key: KeyObject): string {
  return rawPublicKey(key).toString("base64");
}

export function ackPublicKeyFromB64(b64: string): KeyObject | undefined {
  const raw = Buffer.from(b64, "base64");
  return raw.length === 32 ? publicKeyFromRaw(raw) : undefined;
}

export function signAck(a: Omit<Ack, "v">, key: KeyObject): Buffer {
  const body: Ack = { v: 1, device: a.device, boot: a.boot, seq: a.seq };
  const sig = signBytes(key, Buffer.from(canonicalize(body))).toString("base64");
  return Buffer.from(canonicalize({ ...body, sig }));
}

/** The ack in `payload` if it is well formed, for `device`, and signed by `key`; else a reason. */
export function openAck(payload: Buffer, device: string, key: KeyObject): Ack | string {
  if (payload.length > MAX_ACK_BYTES) return `ack of ${payload.length} bytes is too large`;
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(payload.toString("utf8")) as Record<string, unknown>;
  } catch {
    return "ack is not JSON";
  }
  if (typeof o !== "object" || o === null || o.v !== 1 || typeof o.device !== "string" || !Number.isSafeInteger(o.boot) || !Number.isSafeInteger(o.seq) || typeof o.sig !== "string") return "ack lacks v, device, boot, seq or sig";
  if (o.device !== device) return `ack names device ${o.device}`;
  const body: Ack = { v: 1, device: o.device, boot: o.boot as number, seq: o.seq as number };
  if (!verifyBytes(key, Buffer.from(canonicalize(body)), Buffer.from(o.sig, "base64"))) return "ack signature does not verify with the SOC's ack key";
  return body;
}
