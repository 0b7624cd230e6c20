import { deflateRawSync } from "node:zlib";
import nacl from "tweetnacl";
import { BatchSealer, MAGIC } from "../../agent/events/seal";

/**
 * What an attacker with publish rights can build: the SOC's sealing key is public, so any
 * plaintext can be sealed into a well-formed batch for any device's topic.
 */
export function sealBatch(socPublicKey: Uint8Array, device: string, plaintext: Buffer | string, o: { compress?: boolean; count?: number } = {}): Buffer {
  const body = typeof plaintext === "string" ? Buffer.from(plaintext) : plaintext;
  const head = { device, from: [1, 0] as [number, number], to: [1, 0] as [number, number], count: o.count ?? 1 };
  if (o.compress !== false) return new BatchSealer(socPublicKey).sealCompressed(head, deflateRawSync(body, { level: 9 }));
  // An uncompressed batch (no `z` in the header): still accepted by the receiver.
  const eph = nacl.box.keyPair();
  const nonce = nacl.randomBytes(nacl.box.nonceLength);
  const box = nacl.box(body, nonce, socPublicKey, eph.secretKey);
  const hj = Buffer.from(JSON.stringify({ ...head, epk: Buffer.from(eph.publicKey).toString("base64"), nonce: Buffer.from(nonce).toString("base64") }));
  const len = Buffer.alloc(2);
  len.writeUInt16BE(hj.length);
  return Buffer.concat([MAGIC, len, hj, box]);
}

/** JSON text of an object nested `depth` levels deep ({"a":{"a":…}}), without recursion. */
export function deepJson(depth: number): string {
  return '{"a":'.repeat(depth) + "0" + "}".repeat(depth);
}
