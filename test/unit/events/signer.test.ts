import { describe, expect, it } from "vitest";
import { createHash, generateKeyPairSync } from "node:crypto";
import { InlineSigner, ParallelSigner } from "../../../agent/events/signer";

describe("ParallelSigner", () => {
  it("gives exactly the inline signatures, for small and large batches, and keeps working after close", () => {
    const { privateKey } = generateKeyPairSync("ed25519");
    const inline = new InlineSigner(privateKey);
    const par = new ParallelSigner(privateKey);
    try {
      for (const n of [1, 23, 24, 500, 5000]) {
        const hashes = Array.from({ length: n }, (_, i) => createHash("sha256").update(`e${n}-${i}`).digest());
        expect(par.signMany(hashes)).toEqual(inline.signMany(hashes));
      }
      par.close();
      const h = [createHash("sha256").update("after").digest()];
      expect(par.signMany(Array(30).fill(h[0]))).toEqual(inline.signMany(Array(30).fill(h[0])));
    } finally {
      par.close();
    }
  });
});
