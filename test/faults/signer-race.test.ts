import { describe, expect, it } from "vitest";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { InlineSigner, ParallelSigner } from "../../agent/events/signer";

/**
 * Found by the disk-budget fault test: back-to-back batches on the two-core signer once gave
 * signatures over the previous batch's hashes (the worker woke on its own "done" and ran a
 * stale pass that raced the next batch). Many small consecutive batches expose it.
 */
describe("fault: the parallel signer under back-to-back batches", () => {
  it("gives exactly the inline signatures for every batch", () => {
    const { privateKey } = generateKeyPairSync("ed25519");
    const inline = new InlineSigner(privateKey);
    const par = new ParallelSigner(privateKey);
    try {
      let wrong = 0;
      for (let b = 0; b < 400; b++) {
        const hashes = Array.from({ length: 24 + (b % 40) }, () => randomBytes(32));
        const got = par.signMany(hashes);
        const want = inline.signMany(hashes);
        for (let i = 0; i < hashes.length; i++) if (!got[i]!.equals(want[i]!)) wrong++;
      }
      expect(wrong).toBe(0);
    } finally {
      par.close();
    }
  });
});
