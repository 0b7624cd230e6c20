import type { KeyObject } from "node:crypto";
import { Worker } from "node:worker_threads";
import { signBytes } from "../core/sign";

/**
 * Signs a batch of event hashes. The recorder pushes each hash as soon as the event is hashed
 * and collects the signatures when the batch is complete:
 *
 *   begin(); push(h0); push(h1); ...; const sigs = finish();
 *
 * `ParallelSigner` overlaps the two cores: a worker thread signs hashes while the recorder
 * thread is still preparing the rest of the batch, and once the recorder has pushed the last
 * hash it steals the remaining unsigned ones from the same shared counter. The recorder stays
 * synchronous (it waits with a bounded Atomics.wait). Ed25519 is deterministic, so signatures
 * are byte-identical to inline signing. If the worker fails or is late, the recorder signs
 * whatever is missing itself and stops using the worker.
 *
 * The worker (an isolate of its own, about 11 MB of memory) runs only while there is load: it
 * is started by the first batch of `startAt` events, used once it is ready, and stopped after
 * `idleStopMs` without such a batch (counted from when it is ready). An idle gateway signs its
 * few events inline.
 */
export interface BatchSigner {
  begin(): void;
  push(hash: Buffer): void;
  finish(): Buffer[];
  close(): void;
}

export class InlineSigner implements BatchSigner {
  private hashes: Buffer[] = [];
  constructor(private readonly key: KeyObject) {}
  begin(): void {
    this.hashes = [];
  }
  push(hash: Buffer): void {
    this.hashes.push(hash);
  }
  finish(): Buffer[] {
    const out = this.hashes.map((h) => signBytes(this.key, h));
    this.hashes = [];
    return out;
  }
  /** Convenience for one-shot batches. */
  signMany(hashes: readonly Buffer[]): Buffer[] {
    return hashes.map((h) => signBytes(this.key, h));
  }
  close(): void {}
}

/** Hashes one batch may hold in shared memory; beyond that the recorder signs inline. */
const MAX = 8192;
const WAIT_MS = 5000;
// Control words.
const GEN = 0; // batch generation: the worker starts a batch when it changes
const AVAIL = 1; // hashes pushed so far
const NEXT = 2; // next index to claim (worker and recorder both claim with Atomics.add)
const SEALED = 3; // 1 when the last hash is pushed (AVAIL is then final)
const IDLE = 4; // generation the worker has finished
const RUN = 5; // id of the worker that may run (0: none); any other worker ends

const WORKER_SRC = `
const { workerData, parentPort } = require("node:worker_threads");
const { createPrivateKey, sign } = require("node:crypto");
const key = createPrivateKey({ key: Buffer.from(workerData.pkcs8), format: "der", type: "pkcs8" });
const ctrl = new Int32Array(workerData.ctrl);
const done = new Int32Array(workerData.done);
const hashes = new Uint8Array(workerData.hashes);
const sigs = new Uint8Array(workerData.sigs);
const me = workerData.id;
// Batches from now on only.
let gen = Atomics.load(ctrl, ${GEN});
parentPort.postMessage("ready");
for (;;) {
  while (Atomics.load(ctrl, ${GEN}) === gen && Atomics.load(ctrl, ${RUN}) === me) Atomics.wait(ctrl, ${GEN}, gen, 1000);
  if (Atomics.load(ctrl, ${RUN}) !== me) break;
  gen = Atomics.load(ctrl, ${GEN});
  for (;;) {
    const i = Atomics.add(ctrl, ${NEXT}, 1);
    let avail;
    while (i >= (avail = Atomics.load(ctrl, ${AVAIL})) && !Atomics.load(ctrl, ${SEALED})) Atomics.wait(ctrl, ${AVAIL}, avail, 50);
    if (i >= Atomics.load(ctrl, ${AVAIL}) || i >= ${MAX}) break;
    sigs.set(sign(null, hashes.subarray(i * 32, i * 32 + 32), key), i * 64);
    Atomics.store(done, i, gen);
  }
  Atomics.store(ctrl, ${IDLE}, gen);
  Atomics.notify(ctrl, ${IDLE});
}
`;

export interface ParallelSignerOptions {
  /** Hashes in one batch that start the worker (default 64). */
  startAt?: number;
  /** Stop the worker after this long without such a batch (default 5 min). */
  idleStopMs?: number;
}

export class ParallelSigner implements BatchSigner {
  private worker: Worker | undefined;
  /** The worker has loaded the key and waits for batches. */
  private ready = false;
  /** A worker failed or was late: sign inline from now on. */
  private failed = false;
  private closed = false;
  private workerId = 0;
  private lastBusy = 0;
  private readyWaiters: Array<() => void> = [];
  private readonly pkcs8: Buffer;
  private readonly startAt: number;
  private readonly idleStopMs: number;
  private readonly idleTimer: NodeJS.Timeout;
  private readonly ctrl = new Int32Array(new SharedArrayBuffer(8 * 4));
  /** done[i] === generation when the worker has written signature i of this batch. */
  private readonly done = new Int32Array(new SharedArrayBuffer(MAX * 4));
  private readonly hashes = new Uint8Array(new SharedArrayBuffer(MAX * 32));
  private readonly sigs = new Uint8Array(new SharedArrayBuffer(MAX * 64));
  private pushed: Buffer[] = [];
  private gen = 0;
  private active = false;
  /** Signatures made by the worker thread and by the calling thread, since the start. */
  readonly counters = { worker: 0, inline: 0 };

  constructor(
    private readonly key: KeyObject,
    opts: ParallelSignerOptions = {},
  ) {
    this.pkcs8 = key.export({ format: "der", type: "pkcs8" });
    this.startAt = opts.startAt ?? 64;
    this.idleStopMs = opts.idleStopMs ?? 300_000;
    // Idle time counts from the worker's readiness: a start slower than idleStopMs (a loaded
    // machine) must not be cut short before the worker ever signed.
    this.idleTimer = setInterval(() => {
      if (this.worker && this.ready && Date.now() - this.lastBusy > this.idleStopMs) this.stopWorker();
    }, Math.max(10, Math.min(60_000, this.idleStopMs / 2)));
    this.idleTimer.unref();
  }

  /** Whether batches are signed on two threads now. */
  get parallel(): boolean {
    return this.ready;
  }

  /** Whether a worker thread exists: starting (not yet `parallel`) or ready. */
  get hasWorker(): boolean {
    return this.worker !== undefined;
  }

  /** Hashes of the open batch the worker has taken so far (before `finish`, only it takes them). */
  claimed(): number {
    return this.active ? Math.min(Atomics.load(this.ctrl, NEXT), this.pushed.length) : 0;
  }

  /** Starts the worker if it is not running and resolves once it is ready (false: it cannot run). */
  whenReady(): Promise<boolean> {
    this.lastBusy = Date.now();
    this.startWorker();
    if (this.ready || !this.worker) return Promise.resolve(this.ready);
    return new Promise((resolve) => this.readyWaiters.push(() => resolve(this.ready)));
  }

  private startWorker(): void {
    if (this.worker || this.failed || this.closed) return;
    const id = (this.workerId = (this.workerId % 0x7ffffffe) + 1);
    Atomics.store(this.ctrl, RUN, id);
    const w = new Worker(WORKER_SRC, { eval: true, workerData: { id, pkcs8: this.pkcs8, ctrl: this.ctrl.buffer, done: this.done.buffer, hashes: this.hashes.buffer, sigs: this.sigs.buffer } });
    w.unref();
    this.worker = w;
    const settle = (): void => {
      for (const f of this.readyWaiters.splice(0)) f();
    };
    w.once("message", () => {
      if (this.worker === w) {
        this.ready = true;
        this.lastBusy = Date.now();
      }
      settle();
    });
    w.on("error", () => {
      if (this.worker !== w) return;
      this.worker = undefined;
      this.ready = false;
      this.failed = true;
      settle();
    });
    w.on("exit", () => {
      if (this.worker !== w) return;
      this.worker = undefined;
      this.ready = false;
      settle();
    });
  }

  private stopWorker(): void {
    const w = this.worker;
    this.worker = undefined;
    this.ready = false;
    if (!w) return;
    Atomics.store(this.ctrl, RUN, 0);
    Atomics.notify(this.ctrl, GEN);
    void w.terminate();
    // Its events are ignored from now on: answer whoever waits for its start (not parallel).
    for (const f of this.readyWaiters.splice(0)) f();
  }

  begin(): void {
    this.pushed = [];
    this.active = this.ready;
    if (!this.active) return;
    this.gen = (this.gen % 0x7ffffffe) + 1;
    Atomics.store(this.ctrl, AVAIL, 0);
    Atomics.store(this.ctrl, NEXT, 0);
    Atomics.store(this.ctrl, SEALED, 0);
    Atomics.store(this.ctrl, GEN, this.gen);
    Atomics.notify(this.ctrl, GEN);
  }

  push(hash: Buffer): void {
    const i = this.pushed.length;
    this.pushed.push(hash);
    if (i + 1 === this.startAt) {
      // A busy batch: keep the worker running (start it for the next batches if it is not).
      this.lastBusy = Date.now();
      this.startWorker();
    }
    if (!this.active || i >= MAX) return;
    this.hashes.set(hash, i * 32);
    Atomics.store(this.ctrl, AVAIL, i + 1);
    Atomics.notify(this.ctrl, AVAIL, 1);
  }

  finish(): Buffer[] {
    const n = this.pushed.length;
    const out = new Array<Buffer>(n);
    if (this.active) {
      Atomics.store(this.ctrl, SEALED, 1);
      Atomics.notify(this.ctrl, AVAIL);
      // Steal what the worker has not claimed yet.
      const mine = new Set<number>();
      for (let i = Atomics.add(this.ctrl, NEXT, 1); i < Math.min(n, MAX); i = Atomics.add(this.ctrl, NEXT, 1)) {
        out[i] = signBytes(this.key, this.pushed[i]!);
        mine.add(i);
      }
      this.counters.inline += mine.size;
      // Wait for the worker to finish its claims of this generation.
      const deadline = Date.now() + WAIT_MS;
      while (Atomics.load(this.ctrl, IDLE) !== this.gen && Date.now() < deadline) Atomics.wait(this.ctrl, IDLE, Atomics.load(this.ctrl, IDLE), 100);
      if (Atomics.load(this.ctrl, IDLE) !== this.gen) {
        this.failed = true;
        this.stopWorker();
      }
      for (let i = 0; i < Math.min(n, MAX); i++) {
        if (mine.has(i)) continue;
        if (Atomics.load(this.done, i) !== this.gen) continue;
        out[i] = Buffer.from(this.sigs.slice(i * 64, i * 64 + 64));
        this.counters.worker++;
      }
    }
    for (let i = 0; i < n; i++) {
      if (out[i]) continue;
      out[i] = signBytes(this.key, this.pushed[i]!);
      this.counters.inline++;
    }
    this.pushed = [];
    this.active = false;
    return out;
  }

  /** Convenience for one-shot batches. */
  signMany(hashes: readonly Buffer[]): Buffer[] {
    this.begin();
    for (const h of hashes) this.push(h);
    return this.finish();
  }

  close(): void {
    this.closed = true;
    clearInterval(this.idleTimer);
    this.stopWorker();
  }
}
