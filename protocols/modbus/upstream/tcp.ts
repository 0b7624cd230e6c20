/**
 * Modbus TCP upstream: a small pool of connections, each with up to `max_in_flight`
 * transactions under transaction ids of its own (clients' ids never reach the device).
 * Connections are made eagerly, re-made on demand with exponential backoff; while the
 * device is down and backing off, requests are answered 0A at once.
 */
import { connect, type Socket } from "node:net";
import { FairQueue } from "./fair-queue";
import { mbapFrameSlot, scanMbapInto } from "../codec/frame";
import { fixedRequestLength, writeFixedRequest, type ModbusRequest } from "../codec/pdu";
import { answerShapeError, checkResponse } from "../codec/response";
import { backoffDelay, deviceFailure, gatewayTimeout, gatewayUnavailable, type Upstream, type UpstreamJob, type UpstreamObserver, type UpstreamStatus } from "./upstream";

export interface TcpUpstreamOptions {
  name: string;
  host: string;
  port: number;
  connections: number;
  max_in_flight: number;
  max_queue: number;
  timeout_ms: number;
  connect_timeout_ms: number;
  reconnect: { min_ms: number; max_ms: number };
  observer?: UpstreamObserver;
}

/** A job that found no connection with room, waiting in the fair queue. */
interface Queued {
  job: UpstreamJob;
  deadline: number;
}

interface Conn {
  sock: Socket | undefined;
  state: "connecting" | "up" | "closed";
  /**
   * Transactions in flight by slot: transaction id `tid` lives in slot `tid % max_in_flight`
   * (a fixed table: no map entry, no rehash per request). `tids` tells a late answer to a
   * timed-out request from the answer of the slot's current job.
   */
  jobs: (UpstreamJob | undefined)[];
  tids: Int32Array;
  deadlines: Float64Array;
  inFlight: number;
  nextTid: number;
  buf: Buffer;
  /**
   * Requests of this event-loop turn not written yet (`outCount` of them), with their
   * transaction ids; at most `max_in_flight`, as each holds a slot. Fixed arrays reused from
   * batch to batch.
   */
  out: (UpstreamJob | undefined)[];
  outTids: Int32Array;
  outCount: number;
  outBytes: number;
}

const EMPTY = Buffer.alloc(0);

export class TcpUpstream implements Upstream {
  readonly name: string;
  private readonly conns: Conn[] = [];
  private readonly queue = new FairQueue<Queued>();
  private failures = 0;
  private retryAt = 0;
  private down = false;
  private stopped = true;
  private sweeper: NodeJS.Timeout | undefined;
  private flushing = false;
  private readonly flushAll = (): void => this.flush();
  /** Scratch for the frame being read (one per upstream: reads never interleave). */
  private readonly frame = mbapFrameSlot();
  /** Where every connection's reads land; consumed before the callback returns. */
  private readonly readBuf = Buffer.allocUnsafe(16 * 1024);

  constructor(private readonly o: TcpUpstreamOptions) {
    this.name = o.name;
  }

  get target(): string {
    return `${this.o.host}:${this.o.port}`;
  }

  start(): void {
    this.stopped = false;
    const n = this.o.max_in_flight;
    for (let i = 0; i < this.o.connections; i++)
      this.conns.push({ sock: undefined, state: "closed", jobs: new Array<UpstreamJob | undefined>(n).fill(undefined), tids: new Int32Array(n), deadlines: new Float64Array(n), inFlight: 0, nextTid: 1, buf: EMPTY, out: new Array<UpstreamJob | undefined>(n).fill(undefined), outTids: new Int32Array(n), outCount: 0, outBytes: 0 });
    for (const c of this.conns) this.open(c);
    this.sweeper = setInterval(() => this.sweep(), Math.max(5, Math.min(100, this.o.timeout_ms / 4)));
    this.sweeper.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.sweeper) clearInterval(this.sweeper);
    for (const q of this.queue.drain()) q.job.answer(gatewayUnavailable(q.job.req.fc));
    for (const c of this.conns) {
      this.failInFlight(c, gatewayUnavailable);
      c.sock?.destroy();
      c.state = "closed";
    }
  }

  request(unit: number, req: ModbusRequest, pdu: Buffer, source?: unknown): Promise<Buffer> {
    // The answer views the read buffer: copied, as the promise settles later.
    return new Promise<Buffer>((resolve) => this.submit({ unit, req, pdu, answer: (b) => resolve(Buffer.from(b)) }, source));
  }

  /** `request` without a promise: `job.answer` is called exactly once, possibly synchronously. */
  submit(job: UpstreamJob, source: unknown): void {
    const fc = job.req.fc;
    if (this.stopped) return job.answer(gatewayUnavailable(fc));
    const deadline = Date.now() + this.o.timeout_ms;
    const c = this.queue.length ? undefined : this.pick();
    if (c) return this.send(c, job, deadline);
    if (this.down && Date.now() < this.retryAt && !this.conns.some((x) => x.state === "connecting")) return job.answer(gatewayUnavailable(fc));
    if (this.queue.length >= this.o.max_queue) return job.answer(gatewayUnavailable(fc));
    this.queue.push(source, { job, deadline });
    this.drain();
    for (const x of this.conns) if (x.state === "closed") this.open(x);
  }

  /**
   * The connection for the next request: the one whose batch this turn is open, while it has
   * room (the turn's requests leave in one write); otherwise the least loaded. Load still
   * spreads over the pool from turn to turn and past `max_in_flight`.
   */
  private pick(): Conn | undefined {
    let best: Conn | undefined;
    for (const c of this.conns) {
      if (c.state !== "up" || c.inFlight >= this.o.max_in_flight) continue;
      if (c.outCount) return c;
      if (!best || c.inFlight < best.inFlight) best = c;
    }
    return best;
  }

  /** Put `job` in flight on `c`, which has a free slot (`pick`). */
  private send(c: Conn, job: UpstreamJob, deadline: number): void {
    const n = c.jobs.length;
    let tid = c.nextTid;
    while (c.jobs[tid % n] !== undefined) tid = (tid + 1) & 0xffff;
    c.nextTid = (tid + 1) & 0xffff;
    const slot = tid % n;
    c.jobs[slot] = job;
    c.tids[slot] = tid;
    c.deadlines[slot] = deadline;
    c.inFlight++;
    c.out[c.outCount] = job;
    c.outTids[c.outCount++] = tid;
    c.outBytes += 7 + (fixedRequestLength(job.req) || job.pdu.length);
    // Nothing else in flight on any connection: no batch to wait for, write at once. Otherwise
    // requests from many clients in one event-loop turn leave in one write per connection
    // (one segment, one syscall), at the end of the turn or before the next answers are relayed.
    if (c.outCount === 1 && this.onlyInFlight(c)) return this.flush();
    if (!this.flushing) {
      this.flushing = true;
      setImmediate(this.flushAll);
    }
  }

  /** Whether the one transaction pending on `c` is the only one in flight on the upstream. */
  private onlyInFlight(c: Conn): boolean {
    for (const x of this.conns) if (x.inFlight !== (x === c ? 1 : 0)) return false;
    return true;
  }

  /** Answer every transaction in flight on `c` with `answer(fc)` and free the slots. */
  private failInFlight(c: Conn, answer: (fc: number) => Buffer): void {
    for (let i = 0; i < c.jobs.length; i++) {
      const j = c.jobs[i];
      if (!j) continue;
      c.jobs[i] = undefined;
      c.inFlight--;
      j.answer(answer(j.req.fc));
    }
  }

  /**
   * Write each connection's batch as one buffer: MBAP headers and PDUs, the common fixed-size
   * requests encoded straight into it (no buffer per request).
   */
  private flush(): void {
    this.flushing = false;
    for (const c of this.conns) {
      const n = c.outCount;
      if (!n) continue;
      const sock = c.sock;
      if (sock && c.state === "up") {
        const b = Buffer.allocUnsafe(c.outBytes);
        let o = 0;
        for (let i = 0; i < n; i++) {
          const j = c.out[i]!;
          const tid = c.outTids[i]!;
          let len = writeFixedRequest(j.req, b, o + 7);
          if (!len) {
            b.set(j.pdu, o + 7);
            len = j.pdu.length;
          }
          b[o] = tid >>> 8;
          b[o + 1] = tid & 0xff;
          b[o + 2] = 0;
          b[o + 3] = 0;
          b[o + 4] = (len + 1) >>> 8;
          b[o + 5] = (len + 1) & 0xff;
          b[o + 6] = j.unit & 0xff;
          o += 7 + len;
        }
        sock.write(b);
      }
      // A connection lost meanwhile has answered its pending jobs (0B) on close.
      this.clearBatch(c);
    }
  }

  private clearBatch(c: Conn): void {
    for (let i = 0; i < c.outCount; i++) c.out[i] = undefined;
    c.outCount = 0;
    c.outBytes = 0;
  }

  private drain(): void {
    while (this.queue.length) {
      const c = this.pick();
      if (!c) return;
      const q = this.queue.shift()!;
      this.send(c, q.job, q.deadline);
    }
  }

  private open(c: Conn): void {
    if (this.stopped || c.state !== "closed") return;
    if (this.down && Date.now() < this.retryAt) return;
    c.state = "connecting";
    // Reads land in one buffer of the upstream's, reused (no buffer, no stream machinery per read).
    const sock = connect({ host: this.o.host, port: this.o.port, noDelay: true, onread: { buffer: this.readBuf, callback: (n: number, b: Uint8Array) => (this.onData(c, b as Buffer, n), true) } });
    c.sock = sock;
    c.buf = EMPTY;
    this.clearBatch(c);
    const ct = setTimeout(() => sock.destroy(new Error("connect timeout")), this.o.connect_timeout_ms);
    sock.once("connect", () => {
      clearTimeout(ct);
      c.state = "up";
      sock.setKeepAlive(true, 30_000);
      this.failures = 0;
      if (this.down) {
        this.down = false;
        this.o.observer?.up(this.name, this.target);
      }
      this.drain();
    });
    sock.on("error", () => {});
    sock.once("close", () => {
      clearTimeout(ct);
      const wasUp = c.state === "up";
      c.state = "closed";
      c.sock = undefined;
      // Sent but unanswered: the device may or may not have acted; say it did not respond.
      this.failInFlight(c, gatewayTimeout);
      if (this.stopped) return;
      if (!wasUp) {
        this.failures++;
        this.retryAt = Date.now() + backoffDelay(this.failures, this.o.reconnect.min_ms, this.o.reconnect.max_ms);
        if (!this.down && this.conns.every((x) => x.state !== "up")) {
          this.down = true;
          this.o.observer?.down(this.name, this.target, "connection refused or timed out");
        }
        if (this.conns.every((x) => x.state !== "up" && x.state !== "connecting")) for (const q of this.queue.drain()) q.job.answer(gatewayUnavailable(q.job.req.fc));
        const t = setTimeout(() => this.open(c), this.retryAt - Date.now());
        t.unref();
      } else {
        // Lost an established connection: reconnect at once (then back off if that fails).
        this.open(c);
      }
    });
  }

  /** `n` bytes read into `chunk` (the shared read buffer: what is kept is copied). */
  private onData(c: Conn, chunk: Buffer, n: number): void {
    // Requests batched in this turn go out before the answers' writes to the clients.
    if (this.flushing) this.flush();
    const buf = c.buf.length ? Buffer.concat([c.buf, chunk.subarray(0, n)]) : chunk;
    const end = c.buf.length ? buf.length : n;
    const f = this.frame;
    let off = 0;
    for (;;) {
      const kind = scanMbapInto(buf, off, f, end);
      if (kind === "need") break;
      if (kind === "bad") return this.lostFraming(c, f.reason);
      const start = off;
      off += f.size;
      const slot = f.tid % c.jobs.length;
      const job = c.jobs[slot];
      // A view valid during `answer` only (see UpstreamJob).
      const pdu = buf.subarray(start + 7, off);
      if (job !== undefined && c.tids[slot] === f.tid) {
        c.jobs[slot] = undefined;
        c.inFlight--;
        // An answer that fits its request has a Modbus answer's shape (a property test says so):
        // the shape is checked only for one that does not.
        if (f.unit === job.unit && checkResponse(job.req, pdu).ok) {
          job.answer(pdu);
          continue;
        }
        job.answer(deviceFailure(job.req.fc));
      }
      // Not an answer at all (whether to a request in flight or a late one to a timed-out request).
      const lost = answerShapeError(pdu);
      if (lost) return this.lostFraming(c, lost);
    }
    c.buf = off === end ? EMPTY : Buffer.from(buf.subarray(off, end));
    if (this.queue.length) this.drain();
  }

  /**
   * What the device sent is not a Modbus answer: the bytes after it cannot be framed with any
   * confidence (a frame that looks valid may carry another answer's data under this answer's
   * transaction id), so the connection is dropped; its other requests get 0B on close, and it
   * is opened again at once.
   */
  private lostFraming(c: Conn, reason: string): void {
    this.o.observer?.invalid?.(this.name, this.target, reason);
    c.sock?.destroy();
  }

  private sweep(): void {
    const now = Date.now();
    for (const c of this.conns)
      for (let i = 0; i < c.jobs.length; i++) {
        const j = c.jobs[i];
        if (!j || now < c.deadlines[i]!) continue;
        c.jobs[i] = undefined;
        c.inFlight--;
        j.answer(gatewayTimeout(j.req.fc));
      }
    this.queue.expire(now, (q) => q.job.answer(gatewayTimeout(q.job.req.fc)));
    if (this.queue.length) this.drain();
  }

  status(): UpstreamStatus {
    const up = this.conns.some((c) => c.state === "up");
    return {
      name: this.name,
      type: "tcp",
      target: this.target,
      state: this.stopped ? "stopped" : up ? "up" : this.conns.some((c) => c.state === "connecting") ? "connecting" : "down",
      in_flight: this.conns.reduce((s, c) => s + c.inFlight, 0),
      queued: this.queue.length,
    };
  }
}
