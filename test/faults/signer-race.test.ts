import { describe, expect, it } from "vitest";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { InlineSigner, ParallelSigner } from "../../agent/events/signer";
import { until } from "../helpers/fixture";

/**
 * Found by the disk-budget fault test: back-to-back batches on the two-core signer once gave
 * signatures over the previous batch's hashes (the worker woke on its own "done" and ran a
 * stale pass that raced the next batch). Many small consecutive batches expose it.
 */
describe("fault: the parallel signer under back-to-back batches", () => {
  it("gives exactly the inline signatures for every batch", async () => {
    const { privateKey } = generateKeyPairSync("ed25519");
    const inline = new InlineSigner(privateKey);
    const par = new ParallelSigner(privateKey);
    try {
      expect(await par.whenReady()).toBe(true);
      let wrong = 0;
      for (let b = 0; b < 400; b++) {
        const hashes = Array.from({ length: 24 + (b % 40) }, () => randomBytes(32));
        const got = par.signMany(hashes);
        const want = inline.signMany(hashes);
        for (let i = 0; i < hashes.length; i++) if (!got[i]!.equals(want[i]!)) wrong++;
      }
      expect(wrong).toBe(0);
      expect(par.parallel).toBe(true);
    } finally {
      par.close();
    }
  });

  it("runs its worker only under load: started by a big batch, stopped when idle, started again", async () => {
    const { privateKey } = generateKeyPairSync("ed25519");
    const inline = new InlineSigner(privateKey);
    const par = new ParallelSigner(privateKey, { startAt: 32, idleStopMs: 300 });
    const same = (n: number): boolean => {
      const hashes = Array.from({ length: n }, () => randomBytes(32));
      const got = par.signMany(hashes);
      return inline.signMany(hashes).every((s, i) => s.equals(got[i]!));
    };
    try {
      for (let i = 0; i < 20; i++) expect(same(5)).toBe(true);
      await new Promise((r) => setTimeout(r, 200));
      expect(par.parallel).toBe(false); // small batches: signed inline, no worker
      expect(same(40)).toBe(true); // signed inline, starts the worker
      await until(() => par.parallel, 5000, "the signing worker");
      expect(same(200)).toBe(true);
      await until(() => !par.parallel, 5000, "the idle worker to stop");
      expect(same(3)).toBe(true);
      expect(same(64)).toBe(true);
      await until(() => par.parallel, 5000, "the signing worker again");
      expect(same(500)).toBe(true);
    } finally {
      par.close();
    }
  });
});
