import { describe, expect, it } from "vitest";
import { createHash, generateKeyPairSync } from "node:crypto";
import { InlineSigner, ParallelSigner } from "../../../agent/events/signer";
import { until } from "../../helpers/fixture";

const hashesOf = (tag: string, n: number) => Array.from({ length: n }, (_, i) => createHash("sha256").update(`${tag}-${i}`).digest());

describe("ParallelSigner", () => {
  it("the worker's signatures are exactly the inline ones", async () => {
    const { privateKey } = generateKeyPairSync("ed25519");
    const inline = new InlineSigner(privateKey);
    const par = new ParallelSigner(privateKey);
    try {
      expect(await par.whenReady()).toBe(true);
      for (const n of [1, 24, 500]) {
        const hashes = hashesOf(`w${n}`, n);
        par.begin();
        for (const h of hashes) par.push(h);
        // Let the worker take its share before this thread takes the rest.
        await until(() => par.claimed() === n, 30_000, `the worker to take all ${n} hashes`);
        const before = par.counters.worker;
        expect(par.finish()).toEqual(inline.signMany(hashes));
        expect(par.counters.worker - before).toBe(n);
      }
    } finally {
      par.close();
    }
  });

  it("gives exactly the inline signatures when this thread steals part of a batch, and keeps working after close", async () => {
    const { privateKey } = generateKeyPairSync("ed25519");
    const inline = new InlineSigner(privateKey);
    const par = new ParallelSigner(privateKey);
    try {
      expect(await par.whenReady()).toBe(true);
      for (const n of [1, 23, 24, 500, 5000]) {
        const hashes = hashesOf(`e${n}`, n);
        expect(par.signMany(hashes)).toEqual(inline.signMany(hashes));
      }
      expect(par.counters.worker + par.counters.inline).toBe(1 + 23 + 24 + 500 + 5000);
      par.close();
      const h = hashesOf("after", 30);
      const worker = par.counters.worker;
      expect(par.signMany(h)).toEqual(inline.signMany(h));
      expect(par.counters.worker).toBe(worker); // closed: signed inline
    } finally {
      par.close();
    }
  });
});
