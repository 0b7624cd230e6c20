/**
 * One single-master RTU bus (serial line or serial device server): one transaction on the wire
 * at a time, per-unit queues served round robin (a busy unit cannot starve the others), a
 * unit that keeps timing out is backed off exponentially and answered 0B at once meanwhile,
 * so a dead slave never stalls the bus. Modbus over Serial Line v1.02 §2.5.1.1: frames are
 * separated by at least 3.5 character times (fixed 1.75 ms above 19200 baud).
 *
 * Broadcast (unit 0). On a serial line a broadcast is a write every slave executes and none
 * answers; the master then leaves the line quiet for a turnaround delay so the slaves can
 * process it (Modbus over Serial Line v1.02 §2.1, §2.4.1). A Modbus TCP client always expects
 * an answer. Unless the upstream sets `broadcast: true`, unit 0 is not forwarded and the
 * client gets 0A (path unavailable), as before: one request reaching every drive on a bus is
 * a larger effect than any single-unit write, so it takes an explicit opt-in on top of a
 * route for unit 0 and a policy role whose units include 0 (the proxy checks the policy
 * against the unit the client addressed; config.ts forbids routing another unit to remote 0).
 * With the opt-in, only single-purpose writes are broadcast (FC 5, 6, 15, 16, 22; reads, FC 23
 * and diagnostics get 0A): the frame goes out in its turn, the line is held for
 * `turnaround_ms`, and the client gets the normal write response (the echo for 5, 6 and 22;
 * function, address and quantity for 15 and 16). That answer means "sent on the bus", which
 * is all a serial master ever learns of a broadcast; anything heard during the turnaround is
 * dropped as noise.
 *
 * Late answers. RTU has no transaction ids: an answer is taken for the request on the wire.
 * A slave that answers after the response timeout could have its answer taken for the next
 * request, and if that one has the same unit, function and size, the client would get another
 * request's values. So after a timeout the line is held quiet for `late_answer_ms` (default
 * half the timeout), bytes heard while no request is on the wire are dropped, and each such
 * byte keeps the line quiet until it has been silent for ten frame gaps. The same quiet
 * follows each (re)opening of the line: a serial device server may pass on to a new TCP
 * connection what the slaves said while none was open.
 */
import { encodeRtu, decodeRtu } from "../codec/frame";
import type { ModbusRequest } from "../codec/pdu";
import { checkResponse, rtuResponseSize } from "../codec/response";
import type { ByteTransport } from "./rtu-transport";
import { backoffDelay, deviceFailure, gatewayTimeout, gatewayUnavailable, type Upstream, type UpstreamObserver, type UpstreamStatus } from "./upstream";

export interface RtuBusOptions {
  name: string;
  type: "rtu" | "rtu_tcp";
  target: string;
  transport: ByteTransport;
  baud: number;
  timeout_ms: number;
  dead_after: number;
  dead_backoff: { min_ms: number; max_ms: number };
  max_queue: number;
  reconnect: { min_ms: number; max_ms: number };
  observer?: UpstreamObserver;
  /** Forward writes to unit 0 as broadcasts (see above); default off. */
  broadcast?: boolean;
  /** Line held quiet after a broadcast, ms (default 200). */
  turnaround_ms?: number;
  /** Line held quiet after a response timeout, ms (default half of `timeout_ms`). */
  late_answer_ms?: number;
}

/** Functions a broadcast may carry: writes with nothing to read back. */
const BROADCAST_FCS = new Set([5, 6, 15, 16, 22]);

/** The answer a slave would give to a broadcastable write. */
function broadcastAnswer(pdu: Buffer): Buffer {
  // 5, 6, 22: the request echoed; 15, 16: function, starting address, quantity.
  return Buffer.from(pdu[0] === 15 || pdu[0] === 16 ? pdu.subarray(0, 5) : pdu);
}

interface Job {
  unit: number;
  req: ModbusRequest;
  pdu: Buffer;
  resolve: (pdu: Buffer) => void;
  queuedAt: number;
}

interface UnitState {
  queue: Job[];
  timeouts: number;
  deadUntil: number;
  backoffs: number;
}

export class RtuBus implements Upstream {
  readonly name: string;
  private readonly units = new Map<number, UnitState>();
  private order: number[] = [];
  private rr = 0;
  private queued = 0;
  private current: (Job & { timer: NodeJS.Timeout }) | undefined;
  private rx: Buffer = Buffer.alloc(0);
  private state: "up" | "down" | "connecting" | "stopped" = "stopped";
  private failures = 0;
  private quietUntil = 0;
  private gapTimer: NodeJS.Timeout | undefined;
  private reopenTimer: NodeJS.Timeout | undefined;
  private readonly gapMs: number;
  private readonly lateAnswerMs: number;

  constructor(private readonly o: RtuBusOptions) {
    this.name = o.name;
    this.gapMs = o.baud > 19_200 ? 1.75 : (3.5 * 11 * 1000) / o.baud;
    this.lateAnswerMs = o.late_answer_ms ?? Math.ceil(o.timeout_ms / 2);
    o.transport.onData((b) => this.onData(b));
    o.transport.onClose((reason) => this.lost(reason));
  }

  start(): void {
    this.state = "connecting";
    void this.openLine();
  }

  private async openLine(): Promise<void> {
    if (this.state === "stopped") return;
    this.state = "connecting";
    try {
      await this.o.transport.open();
      if ((this.state as string) === "stopped") {
        await this.o.transport.close();
        return;
      }
      this.state = "up";
      if (this.failures > 0) this.o.observer?.up(this.name, this.o.target);
      this.failures = 0;
      // A serial device server may hand a new connection what it heard while none was open
      // (answers to requests of the last one): quiet first, as after a timeout.
      this.quietUntil = performance.now() + this.lateAnswerMs;
      this.pump();
    } catch (e) {
      this.lost((e as Error).message);
    }
  }

  private lost(reason: string): void {
    if (this.state === "stopped") return;
    const wasUp = this.state === "up";
    this.state = "down";
    if (this.failures === 0 || wasUp) this.o.observer?.down(this.name, this.o.target, reason);
    this.failures++;
    if (this.current) this.finish(gatewayTimeout(this.current.req.fc));
    this.failAll();
    const t = setTimeout(() => void this.openLine(), backoffDelay(this.failures, this.o.reconnect.min_ms, this.o.reconnect.max_ms));
    t.unref();
    this.reopenTimer = t;
  }

  private failAll(): void {
    for (const u of this.units.values()) for (const j of u.queue.splice(0)) j.resolve(gatewayUnavailable(j.req.fc));
    this.queued = 0;
  }

  async stop(): Promise<void> {
    this.state = "stopped";
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    if (this.gapTimer) clearTimeout(this.gapTimer);
    if (this.current) this.finish(gatewayUnavailable(this.current.req.fc));
    this.failAll();
    await this.o.transport.close();
  }

  request(unit: number, req: ModbusRequest, pdu: Buffer): Promise<Buffer> {
    // Broadcast (unit 0): only when enabled, and only writes (see the top of this file).
    if (this.state !== "up" || unit > 247 || (unit === 0 && !(this.o.broadcast && BROADCAST_FCS.has(req.fc)))) return Promise.resolve(gatewayUnavailable(req.fc));
    let u = this.units.get(unit);
    if (!u) {
      u = { queue: [], timeouts: 0, deadUntil: 0, backoffs: 0 };
      this.units.set(unit, u);
      this.order.push(unit);
    }
    const now = Date.now();
    if (now < u.deadUntil) return Promise.resolve(gatewayTimeout(req.fc));
    if (this.queued >= this.o.max_queue) return Promise.resolve(gatewayUnavailable(req.fc));
    const st = u;
    return new Promise((resolve) => {
      st.queue.push({ unit, req, pdu, resolve, queuedAt: now });
      this.queued++;
      this.pump();
    });
  }

  /** Start the next transaction if the line is idle, choosing units round robin. */
  private pump(): void {
    if (this.current || this.state !== "up" || this.gapTimer) return;
    const wait = this.quietUntil - performance.now();
    if (wait > 0) {
      this.gapTimer = setTimeout(() => {
        this.gapTimer = undefined;
        this.pump();
      }, Math.ceil(wait));
      return;
    }
    const n = this.order.length;
    for (let i = 0; i < n; i++) {
      const unit = this.order[(this.rr + i) % n]!;
      const u = this.units.get(unit)!;
      if (!u.queue.length) continue;
      this.rr = (this.rr + i + 1) % n;
      const job = u.queue.shift()!;
      this.queued--;
      if (Date.now() < u.deadUntil) {
        job.resolve(gatewayTimeout(job.req.fc));
        i = -1; // look again from the new position
        continue;
      }
      this.rx = Buffer.alloc(0);
      if (job.unit === 0) {
        // Broadcast: no answer comes; hold the line for the turnaround, then answer the client.
        const timer = setTimeout(() => this.finish(broadcastAnswer(job.pdu)), this.o.turnaround_ms ?? 200);
        this.current = { ...job, timer };
        this.o.transport.write(encodeRtu(0, job.pdu));
        return;
      }
      const timer = setTimeout(() => this.timedOut(), this.o.timeout_ms);
      this.current = { ...job, timer };
      this.o.transport.write(encodeRtu(job.unit, job.pdu));
      return;
    }
  }

  private onData(b: Buffer): void {
    const cur = this.current;
    if (!cur) {
      // Noise or a late answer: dropped, and the line must fall silent before the next request.
      this.quietUntil = Math.max(this.quietUntil, performance.now() + 10 * this.gapMs);
      return;
    }
    if (cur.unit === 0) return; // anything during a broadcast's turnaround: dropped
    this.rx = this.rx.length ? Buffer.concat([this.rx, b]) : b;
    // After a garbled frame, wait longer so the rest of it passes before the next request.
    const garbled = 10 * this.gapMs;
    if (this.rx.length > 256) return this.finish(deviceFailure(cur.req.fc), garbled);
    const size = rtuResponseSize(cur.req, cur.pdu.length, this.rx);
    if (size === undefined || (size > 0 && this.rx.length < size)) return;
    if (size < 0) return this.finish(deviceFailure(cur.req.fc), garbled);
    const f = decodeRtu(this.rx.subarray(0, size));
    if (!f.ok || f.unit !== cur.unit) return this.finish(deviceFailure(cur.req.fc), garbled);
    const chk = checkResponse(cur.req, f.pdu);
    const u = this.units.get(cur.unit);
    if (u) {
      u.timeouts = 0;
      u.backoffs = 0;
    }
    this.finish(chk.ok ? f.pdu : deviceFailure(cur.req.fc));
  }

  private timedOut(): void {
    const cur = this.current;
    if (!cur) return;
    const u = this.units.get(cur.unit);
    if (u && ++u.timeouts >= this.o.dead_after) {
      u.backoffs++;
      u.deadUntil = Date.now() + backoffDelay(u.backoffs, this.o.dead_backoff.min_ms, this.o.dead_backoff.max_ms);
      u.timeouts = this.o.dead_after - 1; // one probe after the backoff decides again
      for (const j of u.queue.splice(0)) {
        this.queued--;
        j.resolve(gatewayTimeout(j.req.fc));
      }
    }
    this.finish(gatewayTimeout(cur.req.fc), this.lateAnswerMs);
  }

  /** Answers the current request; the line stays quiet for `quietMs` (one frame gap by default). */
  private finish(pdu: Buffer, quietMs = this.gapMs): void {
    const cur = this.current;
    if (!cur) return;
    clearTimeout(cur.timer);
    this.current = undefined;
    this.quietUntil = performance.now() + Math.max(this.gapMs, quietMs);
    cur.resolve(pdu);
    this.pump();
  }

  status(): UpstreamStatus {
    const now = Date.now();
    return {
      name: this.name,
      type: this.o.type,
      target: this.o.target,
      state: this.state,
      in_flight: this.current ? 1 : 0,
      queued: this.queued,
      dead_units: [...this.units.entries()].filter(([, u]) => u.deadUntil > now).map(([k]) => k),
    };
  }
}
