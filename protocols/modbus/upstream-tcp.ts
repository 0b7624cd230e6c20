/**
 * Modbus TCP upstream: a small pool of connections, each with up to `max_in_flight`
 * transactions under transaction ids of its own (clients' ids never reach the device).
 * Connections are made eagerly, re-made on demand with exponential backoff; while the
 * device is down and backing off, requests are answered 0A at once.
 */
import { connect, type Socket } from "node:net";
import { FairQueue } from "./fair-queue";
import { scanMbap } from "./frame";
import type { ModbusRequest } from "./pdu";
import { checkResponse } from "./response";
import { backoffDelay, deviceFailure, gatewayTimeout, gatewayUnavailable, type Upstream, type UpstreamObserver, type UpstreamStatus } from "./upstream";

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

interface Job {
  unit: number;
  req: ModbusRequest;
  pdu: Buffer;
  resolve: (pdu: Buffer) => void;
  deadline: number;
}

interface Conn {
  sock: Socket | undefined;
  state: "connecting" | "up" | "closed";
  pending: Map<number, Job>;
  nextTid: number;
  buf: Buffer;
  /** Requests of this event-loop turn not written yet, with their transaction ids. */
  out: Job[];
  outTids: number[];
  outBytes: number;
}

const EMPTY = Buffer.alloc(0);

export class TcpUpstream implements Upstream {
  readonly name: string;
  private readonly conns: Conn[] = [];
  private readonly queue = new FairQueue<Job>();
  private failures = 0;
  private retryAt = 0;
  private down = false;
  private stopped = true;
  private sweeper: NodeJS.Timeout | undefined;
  private flushing = false;
  private readonly flushAll = (): void => this.flush();

  constructor(private readonly o: TcpUpstreamOptions) {
    this.name = o.name;
  }

  get target(): string {
    return `${this.o.host}:${this.o.port}`;
  }

  start(): void {
    this.stopped = false;
    for (let i = 0; i < this.o.connections; i++) this.conns.push({ sock: undefined, state: "closed", pending: new Map(), nextTid: 1, buf: EMPTY, out: [], outTids: [], outBytes: 0 });
    for (const c of this.conns) this.open(c);
    this.sweeper = setInterval(() => this.sweep(), Math.max(5, Math.min(100, this.o.timeout_ms / 4)));
    this.sweeper.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.sweeper) clearInterval(this.sweeper);
    for (const j of this.queue.drain()) j.resolve(gatewayUnavailable(j.req.fc));
    for (const c of this.conns) {
      for (const j of c.pending.values()) j.resolve(gatewayUnavailable(j.req.fc));
      c.pending.clear();
      c.sock?.destroy();
      c.state = "closed";
    }
  }

  request(unit: number, req: ModbusRequest, pdu: Buffer, source?: unknown): Promise<Buffer> {
    return new Promise<Buffer>((resolve) => this.submit(unit, req, pdu, source, resolve));
  }

  /** `request` without a promise: `done` is called exactly once, possibly synchronously. */
  submit(unit: number, req: ModbusRequest, pdu: Buffer, source: unknown, done: (pdu: Buffer) => void): void {
    if (this.stopped) return done(gatewayUnavailable(req.fc));
    const job: Job = { unit, req, pdu, resolve: done, deadline: Date.now() + this.o.timeout_ms };
    const c = this.queue.length ? undefined : this.pick();
    if (c) return this.send(c, job);
    if (this.down && Date.now() < this.retryAt && !this.conns.some((x) => x.state === "connecting")) return done(gatewayUnavailable(req.fc));
    if (this.queue.length >= this.o.max_queue) return done(gatewayUnavailable(req.fc));
    this.queue.push(source, job);
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
      if (c.state !== "up" || c.pending.size >= this.o.max_in_flight) continue;
      if (c.out.length) return c;
      if (!best || c.pending.size < best.pending.size) best = c;
    }
    return best;
  }

  private send(c: Conn, job: Job): void {
    let tid = c.nextTid;
    while (c.pending.has(tid)) tid = (tid + 1) & 0xffff;
    c.nextTid = (tid + 1) & 0xffff;
    c.pending.set(tid, job);
    c.out.push(job);
    c.outTids.push(tid);
    c.outBytes += 7 + job.pdu.length;
    // Nothing else in flight on any connection: no batch to wait for, write at once. Otherwise
    // requests from many clients in one event-loop turn leave in one write per connection
    // (one segment, one syscall), at the end of the turn or before the next answers are relayed.
    if (c.out.length === 1 && this.onlyInFlight(c)) return this.flush();
    if (!this.flushing) {
      this.flushing = true;
      setImmediate(this.flushAll);
    }
  }

  /** Whether the one transaction pending on `c` is the only one in flight on the upstream. */
  private onlyInFlight(c: Conn): boolean {
    for (const x of this.conns) if (x.pending.size !== (x === c ? 1 : 0)) return false;
    return true;
  }

  /** Write each connection's batch as one buffer: MBAP headers and PDUs, no per-frame copies. */
  private flush(): void {
    this.flushing = false;
    for (const c of this.conns) {
      const n = c.out.length;
      if (!n) continue;
      const sock = c.sock;
      if (sock && c.state === "up") {
        const b = Buffer.allocUnsafe(c.outBytes);
        let o = 0;
        for (let i = 0; i < n; i++) {
          const j = c.out[i]!;
          const tid = c.outTids[i]!;
          const len = j.pdu.length;
          b[o] = tid >>> 8;
          b[o + 1] = tid & 0xff;
          b[o + 2] = 0;
          b[o + 3] = 0;
          b[o + 4] = (len + 1) >>> 8;
          b[o + 5] = (len + 1) & 0xff;
          b[o + 6] = j.unit & 0xff;
          b.set(j.pdu, o + 7);
          o += 7 + len;
        }
        sock.write(b);
      }
      // A connection lost meanwhile has answered its pending jobs (0B) on close.
      c.out.length = 0;
      c.outTids.length = 0;
      c.outBytes = 0;
    }
  }

  private drain(): void {
    while (this.queue.length) {
      const c = this.pick();
      if (!c) return;
      this.send(c, this.queue.shift()!);
    }
  }

  private open(c: Conn): void {
    if (this.stopped || c.state !== "closed") return;
    if (this.down && Date.now() < this.retryAt) return;
    c.state = "connecting";
    const sock = connect({ host: this.o.host, port: this.o.port, noDelay: true });
    c.sock = sock;
    c.buf = EMPTY;
    c.out.length = 0;
    c.outTids.length = 0;
    c.outBytes = 0;
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
    sock.on("data", (d: Buffer) => this.onData(c, d));
    sock.on("error", () => {});
    sock.once("close", () => {
      clearTimeout(ct);
      const wasUp = c.state === "up";
      c.state = "closed";
      c.sock = undefined;
      // Sent but unanswered: the device may or may not have acted; say it did not respond.
      for (const j of c.pending.values()) j.resolve(gatewayTimeout(j.req.fc));
      c.pending.clear();
      if (this.stopped) return;
      if (!wasUp) {
        this.failures++;
        this.retryAt = Date.now() + backoffDelay(this.failures, this.o.reconnect.min_ms, this.o.reconnect.max_ms);
        if (!this.down && this.conns.every((x) => x.state !== "up")) {
          this.down = true;
          this.o.observer?.down(this.name, this.target, "connection refused or timed out");
        }
        if (this.conns.every((x) => x.state !== "up" && x.state !== "connecting")) for (const j of this.queue.drain()) j.resolve(gatewayUnavailable(j.req.fc));
        const t = setTimeout(() => this.open(c), this.retryAt - Date.now());
        t.unref();
      } else {
        // Lost an established connection: reconnect at once (then back off if that fails).
        this.open(c);
      }
    });
  }

  private onData(c: Conn, d: Buffer): void {
    // Requests batched in this turn go out before the answers' writes to the clients.
    if (this.flushing) this.flush();
    c.buf = c.buf.length ? Buffer.concat([c.buf, d]) : d;
    let off = 0;
    for (;;) {
      const s = scanMbap(c.buf, off);
      if (s.kind === "need") break;
      if (s.kind === "bad") {
        c.sock?.destroy();
        return;
      }
      off += s.size;
      const job = c.pending.get(s.tid);
      if (!job) continue; // late answer to a timed-out request
      c.pending.delete(s.tid);
      const chk = s.unit === job.unit ? checkResponse(job.req, s.pdu) : { ok: false as const, reason: "unit differs" };
      // s.pdu views a chunk that is never written to again: no copy needed.
      job.resolve(chk.ok ? s.pdu : deviceFailure(job.req.fc));
    }
    c.buf = off === c.buf.length ? EMPTY : c.buf.subarray(off);
    if (this.queue.length) this.drain();
  }

  private sweep(): void {
    const now = Date.now();
    for (const c of this.conns)
      for (const [tid, j] of c.pending)
        if (now >= j.deadline) {
          c.pending.delete(tid);
          j.resolve(gatewayTimeout(j.req.fc));
        }
    this.queue.expire(now, (j) => j.resolve(gatewayTimeout(j.req.fc)));
    if (this.queue.length) this.drain();
  }

  status(): UpstreamStatus {
    const up = this.conns.some((c) => c.state === "up");
    return {
      name: this.name,
      type: "tcp",
      target: this.target,
      state: this.stopped ? "stopped" : up ? "up" : this.conns.some((c) => c.state === "connecting") ? "connecting" : "down",
      in_flight: this.conns.reduce((s, c) => s + c.pending.size, 0),
      queued: this.queue.length,
    };
  }
}
