import type { KeyObject } from "node:crypto";
import { Worker } from "node:worker_threads";
import { signBytes } from "./sign";

/**
 * Signs batches of event hashes on two cores while keeping the recorder synchronous: a worker
 * thread signs the larger share of a batch while the calling thread signs the rest, then the
 * caller waits (Atomics.wait, bounded) for the worker's share. Signatures are identical to
 * inline signing (Ed25519 is deterministic). If the worker fails or is late, the caller signs
 * everything itself and stops using the worker.
 */
export interface BatchSigner {
  signMany(hashes: readonly Buffer[]): Buffer[];
  close(): void;
}

export class InlineSigner implements BatchSigner {
  constructor(private readonly key: KeyObject) {}
  signMany(hashes: readonly Buffer[]): Buffer[] {
    return hashes.map((h) => signBytes(this.key, h));
  }
  close(): void {}
}

const MAX = 4096;
/** Below this many hashes the hand-off costs more than it saves. */
const MIN_PARALLEL = 24;
/** Share of a batch the calling thread signs (it also hashes and commits). */
const CALLER_SHARE = 0.35;

const WORKER_SRC = `
const { workerData } = require("node:worker_threads");
const { createPrivateKey, sign } = require("node:crypto");
const key = createPrivateKey({ key: Buffer.from(workerData.pkcs8), format: "der", type: "pkcs8" });
const ctrl = new Int32Array(workerData.ctrl);
const hashes = new Uint8Array(workerData.hashes);
const sigs = new Uint8Array(workerData.sigs);
for (;;) {
  // Wait for a job (1) or the stop (3). Waking on 2 (our own "done", not yet reset by the
  // caller) must not start another pass: it would race the caller's next batch.
  let st;
  while ((st = Atomics.load(ctrl, 0)) !== 1 && st !== 3) Atomics.wait(ctrl, 0, st);
  if (st === 3) break;
  const from = ctrl[1], to = ctrl[2];
  for (let i = from; i < to; i++) sigs.set(sign(null, hashes.subarray(i * 32, i * 32 + 32), key), i * 64);
  Atomics.store(ctrl, 0, 2);
  Atomics.notify(ctrl, 0);
}
`;

export class ParallelSigner implements BatchSigner {
  private readonly inline: InlineSigner;
  private worker: Worker | undefined;
  private readonly ctrl = new Int32Array(new SharedArrayBuffer(16));
  private readonly hashes = new Uint8Array(new SharedArrayBuffer(MAX * 32));
  private readonly sigs = new Uint8Array(new SharedArrayBuffer(MAX * 64));

  constructor(
    private readonly key: KeyObject,
    private readonly waitMs = 5000,
  ) {
    this.inline = new InlineSigner(key);
    const pkcs8 = key.export({ format: "der", type: "pkcs8" });
    this.worker = new Worker(WORKER_SRC, { eval: true, workerData: { pkcs8, ctrl: this.ctrl.buffer, hashes: this.hashes.buffer, sigs: this.sigs.buffer } });
    this.worker.unref();
    this.worker.on("error", () => (this.worker = undefined));
    this.worker.on("exit", () => (this.worker = undefined));
  }

  signMany(hashes: readonly Buffer[]): Buffer[] {
    if (!this.worker || hashes.length < MIN_PARALLEL) return this.inline.signMany(hashes);
    const out: Buffer[] = new Array<Buffer>(hashes.length);
    for (let start = 0; start < hashes.length; start += MAX) {
      const part = hashes.slice(start, start + MAX);
      const mine = Math.max(1, Math.floor(part.length * CALLER_SHARE));
      for (let i = mine; i < part.length; i++) this.hashes.set(part[i]!, i * 32);
      this.ctrl[1] = mine;
      this.ctrl[2] = part.length;
      Atomics.store(this.ctrl, 0, 1);
      Atomics.notify(this.ctrl, 0);
      for (let i = 0; i < mine; i++) out[start + i] = signBytes(this.key, part[i]!);
      const r = Atomics.wait(this.ctrl, 0, 1, this.waitMs);
      if (r === "timed-out" && Atomics.load(this.ctrl, 0) !== 2) {
        this.close();
        for (let i = mine; i < part.length; i++) out[start + i] = signBytes(this.key, part[i]!);
        continue;
      }
      for (let i = mine; i < part.length; i++) out[start + i] = Buffer.from(this.sigs.slice(i * 64, i * 64 + 64));
      Atomics.store(this.ctrl, 0, 0);
    }
    return out;
  }

  close(): void {
    const w = this.worker;
    this.worker = undefined;
    if (!w) return;
    Atomics.store(this.ctrl, 0, 3);
    Atomics.notify(this.ctrl, 0);
    void w.terminate();
  }
}
