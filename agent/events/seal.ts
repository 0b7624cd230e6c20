import { deflateRaw, deflateRawSync, inflateRawSync } from "node:zlib";
import nacl from "tweetnacl";
import { DaemonError } from "../core/errors";

/**
 * Batches are sealed to the SOC's X25519 public key with tweetnacl `box` (X25519 +
 * XSalsa20-Poly1305). The sender uses an ephemeral key pair that it rotates (every
 * `rotateEvery` batches), with the shared key precomputed (`box.before`), and a random
 * 24-byte nonce per batch. The broker and its operators see only the routing header.
 *
 * Wire format of one MQTT payload:
 *   "GWB1" | u16 header length (BE) | header JSON (UTF-8) | box ciphertext
 * header = { device, from: [boot, seq], to: [boot, seq], count, epk (base64), nonce (base64),
 *            z: "deflate-raw" }
 *
 * The JSON batch is compressed (raw deflate, level 1) before it is sealed: events compress
 * several times over, so the cipher (pure JavaScript) handles a fraction of the bytes and the
 * uplink carries less. The SOC inflates with a bound (MAX_BATCH_PLAINTEXT): no decompression bomb.
 * It also bounds uncompressed batches, and `upstream.max_message_bytes` stays within it.
 */
export const MAX_BATCH_PLAINTEXT = 16 * 1024 * 1024;
export const MAGIC = Buffer.from("GWB1");

export interface BatchHeader {
  device: string;
  from: [number, number];
  to: [number, number];
  count: number;
  epk: string;
  nonce: string;
  /** Compression of the sealed plaintext; absent: none. */
  z?: "deflate-raw";
  /**
   * The batch repeats rows sent before (a replay after a reconnect or a missing SOC ack): the
   * receiver writes no `duplicate` line for events it already holds. Not authenticated: at
   * worst it hides a duplicate, never an event.
   */
  resend?: true;
}

export class BatchSealer {
  private ephemeral = nacl.box.keyPair();
  private shared: Uint8Array;
  private uses = 0;

  constructor(
    private readonly socPublicKey: Uint8Array,
    private readonly rotateEvery = 1000,
  ) {
    if (socPublicKey.length !== nacl.box.publicKeyLength) throw new DaemonError("KEY_INVALID", "the SOC public key must be 32 bytes (X25519)");
    this.shared = nacl.box.before(socPublicKey, this.ephemeral.secretKey);
  }

  seal(head: Omit<BatchHeader, "epk" | "nonce" | "z">, plaintext: Uint8Array): Buffer {
    return this.sealCompressed(head, deflateRawSync(plaintext, { level: 1 }));
  }

  /** Seals a plaintext already compressed with `compressBatch`. */
  sealCompressed(head: Omit<BatchHeader, "epk" | "nonce" | "z">, compressed: Uint8Array): Buffer {
    if (++this.uses > this.rotateEvery) {
      this.ephemeral = nacl.box.keyPair();
      this.shared = nacl.box.before(this.socPublicKey, this.ephemeral.secretKey);
      this.uses = 1;
    }
    const nonce = nacl.randomBytes(nacl.box.nonceLength);
    const box = nacl.box.after(compressed, nonce, this.shared);
    const header: BatchHeader = { ...head, epk: b64(this.ephemeral.publicKey), nonce: b64(nonce), z: "deflate-raw" };
    const hj = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(2);
    len.writeUInt16BE(hj.length);
    return Buffer.concat([MAGIC, len, hj, box]);
  }
}

/** Compresses a batch on libuv's thread pool (another core), as `seal` does inline. */
export function compressBatch(plaintext: Uint8Array): Promise<Buffer> {
  return new Promise((resolve, reject) => deflateRaw(plaintext, { level: 1 }, (err, out) => (err ? reject(err) : resolve(out))));
}

/** Reads the routing header without opening the box (what a broker operator could see). */
export function readHeader(payload: Buffer): { header: BatchHeader; body: Buffer } {
  if (payload.length < 6 || !payload.subarray(0, 4).equals(MAGIC)) throw new DaemonError("SEAL_FAILED", "not a Gatewarden batch (bad magic)");
  const hl = payload.readUInt16BE(4);
  if (6 + hl > payload.length) throw new DaemonError("SEAL_FAILED", "batch header length exceeds the payload");
  let header: BatchHeader;
  try {
    header = JSON.parse(payload.subarray(6, 6 + hl).toString("utf8")) as BatchHeader;
  } catch {
    throw new DaemonError("SEAL_FAILED", "batch header is not JSON");
  }
  if (
    typeof header !== "object" || header === null ||
    typeof header.device !== "string" || typeof header.epk !== "string" || typeof header.nonce !== "string" ||
    !isPos(header.from) || !isPos(header.to) || !Number.isSafeInteger(header.count)
  )
    throw new DaemonError("SEAL_FAILED", "batch header lacks device, from, to, count, epk or nonce");
  return { header, body: payload.subarray(6 + hl) };
}

/** The SOC side: opens batches, caching the shared key per ephemeral sender key. */
export class BatchOpener {
  private readonly cache = new Map<string, Uint8Array>();

  constructor(private readonly socSecretKey: Uint8Array) {
    if (socSecretKey.length !== nacl.box.secretKeyLength) throw new DaemonError("KEY_INVALID", "the SOC secret key must be 32 bytes (X25519)");
  }

  open(payload: Buffer): { header: BatchHeader; plaintext: Buffer } {
    return this.openBody(readHeader(payload));
  }

  /** Opens a batch whose header was read already (`readHeader`). */
  openBody({ header, body }: { header: BatchHeader; body: Buffer }): { header: BatchHeader; plaintext: Buffer } {
    // Neither the cipher nor inflation runs over more than the bound (deflate adds < 0.1 %).
    if (body.length > MAX_BATCH_PLAINTEXT + 1024) throw new DaemonError("SEAL_FAILED", `sealed batch is larger than ${MAX_BATCH_PLAINTEXT} bytes`);
    const epk = Buffer.from(header.epk, "base64");
    const nonce = Buffer.from(header.nonce, "base64");
    if (epk.length !== 32 || nonce.length !== 24) throw new DaemonError("SEAL_FAILED", "batch header has a bad epk or nonce length");
    let shared = this.cache.get(header.epk);
    if (!shared) {
      shared = nacl.box.before(epk, this.socSecretKey);
      if (this.cache.size >= 4096) this.cache.delete(this.cache.keys().next().value as string);
      this.cache.set(header.epk, shared);
    }
    const plain = nacl.box.open.after(body, nonce, shared);
    if (!plain) throw new DaemonError("SEAL_FAILED", "batch does not open with this SOC key (wrong key or tampered ciphertext)");
    const opened = Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
    if (header.z === undefined) {
      if (opened.length > MAX_BATCH_PLAINTEXT) throw new DaemonError("SEAL_FAILED", `batch plaintext is larger than ${MAX_BATCH_PLAINTEXT} bytes`);
      return { header, plaintext: opened };
    }
    if (header.z !== "deflate-raw") throw new DaemonError("SEAL_FAILED", `unknown batch compression ${String(header.z)}`);
    try {
      return { header, plaintext: inflateRawSync(opened, { maxOutputLength: MAX_BATCH_PLAINTEXT }) };
    } catch (e) {
      throw new DaemonError("SEAL_FAILED", `batch does not inflate (${(e as Error).message})`);
    }
  }
}

function isPos(p: unknown): p is [number, number] {
  return Array.isArray(p) && p.length === 2 && Number.isSafeInteger(p[0]) && Number.isSafeInteger(p[1]);
}

const b64 = (u: Uint8Array) => Buffer.from(u).toString("base64");
