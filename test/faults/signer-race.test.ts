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

  it("lets a worker start that is slower than idleStopMs, and answers a start cut short by close", async () => {
    const { privateKey } = generateKeyPairSync("ed25519");
    // A worker isolate takes far longer than 10 ms to start: the idle stop must wait for it.
    const slow = new ParallelSigner(privateKey, { startAt: 1, idleStopMs: 10 });
    try {
      expect(await slow.whenReady()).toBe(true);
    } finally {
      slow.close();
    }
    const cut = new ParallelSigner(privateKey);
    const ready = cut.whenReady();
    expect(cut.hasWorker).toBe(true);
    cut.close();
    expect(await ready).toBe(false);
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
    // Waits end as soon as their condition holds; the bound only matters when it fails. It is
    // generous because a worker isolate can take seconds to start on two loaded shared cores.
    const WAIT = 30_000;
    try {
      for (let i = 0; i < 20; i++) expect(same(5)).toBe(true);
      // Small batches: signed inline, no worker started (it is started synchronously by push).
      expect(par.hasWorker).toBe(false);
      expect(same(40)).toBe(true); // signed inline, starts the worker
      expect(par.hasWorker).toBe(true);
      // Its start may outlast idleStopMs under load: the idle stop must not cut it short.
      await until(() => par.parallel, WAIT, "the signing worker");
      expect(same(200)).toBe(true);
      await until(() => !par.hasWorker, WAIT, "the idle worker to stop");
      expect(par.parallel).toBe(false);
      expect(same(3)).toBe(true);
      expect(par.hasWorker).toBe(false);
      expect(same(64)).toBe(true);
      expect(par.hasWorker).toBe(true);
      await until(() => par.parallel, WAIT, "the signing worker again");
      expect(same(500)).toBe(true);
    } finally {
      par.close();
    }
  });
});
