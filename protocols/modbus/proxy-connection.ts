/**
 * One client connection of a Modbus listener: strict framing, the decision point, routing,
 * replies under the client's transaction ids, and the back-pressure bounds (outstanding
 * transactions, request rate, unread answers, slow-loris partial frames).
 */
import type { Socket } from "node:net";
import { decideFailClosed, type PolicyDecisionPoint } from "../policy";
import type { LimitsConfig } from "./config";
import { describeAccesses, functionName, identityFields, writtenValues, type DecisionRecord } from "./policy/decision-record";
import type { ClientCertificate, ModbusEvents, RequestInfo } from "./events";
import { EX } from "./codec/function-codes";
import { encodeMbap, mbapFrameSlot, scanMbapInto } from "./codec/frame";
import { describeIdentity, identityKey, type PeerIdentity } from "./policy/identity";
import { encodeRequest, exceptionPdu, parseRequest, type ModbusRequest } from "./codec/pdu";
import { isWrite, type ModbusPolicyRequest } from "./policy/engine";
import type { RateLimiter } from "./policy/rate-limiter";
import { readValues } from "./codec/response";
import type { Router } from "./upstream/router";
import type { UpstreamJob } from "./upstream/upstream";
import type { ReadingsTap, TapTable } from "./tap";
import type { DecisionSink } from "./policy/decision-lines";

export interface ProxyContext {
  pdp: PolicyDecisionPoint<ModbusPolicyRequest>;
  router: Router;
  limits: LimitsConfig;
  /** Request-rate buckets (`limits.max_requests_per_s`), one per identity, shared by all its
   * connections on every listener; bounded (see rate-limiter.ts). Clock: `performance.now()`. */
  requestRates: RateLimiter;
  events?: ModbusEvents;
  tap?: ReadingsTap;
  /** Every request's decision (commissioning mode). */
  decisions?: DecisionSink;
  /** Whether an identity maps to a role (for "unknown client" events). */
  knows?: (id: PeerIdentity) => boolean;
  log?: { warn(o: object, m: string): void; debug(o: object, m: string): void };
}

const EMPTY = Buffer.alloc(0);

/**
 * One allowed request on its way to the device: the upstream's job, and everything its answer
 * needs (one object per request; no closure, no promise).
 */
class Forwarded implements UpstreamJob {
  private encoded: Buffer | undefined;

  constructor(
    private readonly conn: ProxyConnection,
    readonly tid: number,
    readonly clientUnit: number,
    /** The remote unit id. */
    readonly unit: number,
    readonly req: ModbusRequest,
    readonly device: string,
    readonly rule: string,
    readonly info: RequestInfo | undefined,
  ) {}

  /** The re-serialised request, encoded when first asked for. */
  get pdu(): Buffer {
    return (this.encoded ??= encodeRequest(this.req));
  }

  answer(resp: Buffer): void {
    this.conn.complete(this, resp);
  }
}

/** One client connection. */
export class ProxyConnection {
  private buf: Buffer = EMPTY;
  private outstanding = 0;
  private paused = false;
  private partialTimer: NodeJS.Timeout | undefined;
  private readonly label: string;
  private readonly cert: ClientCertificate | undefined;
  /** The identity's request-rate bucket. */
  private readonly rateKey: string;
  /** Scratch for the frame being read. */
  private readonly frame = mbapFrameSlot();
  private query: ModbusPolicyRequest | undefined;
  /** The client's fields of a decision record, and of its repeat keys (the same for every request). */
  private idFields: ReturnType<typeof identityFields> | undefined;
  private repeatPrefix: string | undefined;
  private lastRead: { fc: number; unit: number; rule: string; address: number; quantity: number; key: string } | undefined;

  constructor(
    private readonly sock: Socket,
    private readonly id: PeerIdentity,
    private readonly listener: string,
    private readonly ctx: ProxyContext,
    private readonly counters: { requests: number; denied: number; malformed: number },
  ) {
    this.label = describeIdentity(id);
    this.rateKey = identityKey(id);
    this.cert = id.fingerprint ? { subject: id.subject ?? "", fingerprint: id.fingerprint } : undefined;
  }

  /**
   * Starts serving; a connection with nothing read or written for `idleMs` is closed. One
   * timer per connection, set for when the connection would be idle and moved on when it
   * fires early: what `socket.setTimeout` does, without re-inserting a timer at every read and
   * write (about 0.9 µs per round trip in a CPU profile on the loaded 2-CPU bench machine,
   * close to what deciding the request cost there).
   */
  begin(idleMs: number): void {
    const l = this.ctx.limits;
    this.idleMs = idleMs;
    this.lastActive = performance.now();
    this.idleTimer = setTimeout(this.checkIdle, idleMs);
    this.idleTimer.unref();
    this.sock.on("data", (d: Buffer) => {
      this.lastActive = performance.now();
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      if (this.buf.length > l.max_buffered_bytes) {
        this.malformed(`more than ${l.max_buffered_bytes} bytes buffered`);
        this.sock.destroy();
        return;
      }
      this.process();
    });
    this.sock.on("drain", () => {
      if (!this.rateTimer) this.unblock();
    });
    this.sock.once("close", () => {
      clearTimeout(this.idleTimer);
      if (this.partialTimer) clearTimeout(this.partialTimer);
      if (this.rateTimer) clearTimeout(this.rateTimer);
    });
  }

  private rateTimer: NodeJS.Timeout | undefined;
  private idleMs = 0;
  /** When the connection last read or wrote (`performance.now()`). */
  private lastActive = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly checkIdle = (): void => {
    const left = this.idleMs - (performance.now() - this.lastActive);
    if (left <= 0) return void this.sock.destroy();
    this.idleTimer = setTimeout(this.checkIdle, Math.ceil(left));
    this.idleTimer.unref();
  };

  /**
   * One request token of this identity: `max_requests_per_s` per identity across all its
   * connections, bursts up to one second's worth. While every tracked identity is busy a new
   * one gets none ("full": it waits, it is not let through uncounted).
   */
  private takeToken(): boolean {
    const rate = this.ctx.limits.max_requests_per_s;
    return !rate || this.ctx.requestRates.take(this.rateKey, rate, 1000, performance.now()) === "ok";
  }

  private process(): void {
    let off = 0;
    let rateLimited = false;
    const f = this.frame;
    // A client that does not read its answers is not read either (bounded write buffer).
    while (this.outstanding < this.ctx.limits.max_outstanding && this.sock.writableLength <= this.ctx.limits.max_buffered_bytes) {
      const kind = scanMbapInto(this.buf, off, f);
      if (kind === "need") break;
      if (kind === "bad") {
        // The stream cannot be resynchronised after a bad header: close (nothing forwarded).
        this.malformed(f.reason);
        this.sock.destroy();
        this.buf = EMPTY;
        return;
      }
      if (!this.takeToken()) {
        rateLimited = true;
        break;
      }
      const start = off;
      off += f.size;
      this.handle(f.tid, f.unit, this.buf.subarray(start + 7, off));
      if (this.sock.destroyed) return;
    }
    if (off) this.buf = off === this.buf.length ? EMPTY : Buffer.from(this.buf.subarray(off));
    // Back-pressure: stop reading while the outstanding bound or the request rate is reached;
    // the client's TCP window fills and it slows down, at no cost to us.
    const blocked = rateLimited || this.outstanding >= this.ctx.limits.max_outstanding || this.sock.writableLength > this.ctx.limits.max_buffered_bytes;
    if (blocked && !this.paused) {
      this.paused = true;
      this.sock.pause();
    }
    if (rateLimited && !this.rateTimer) {
      const wait = Math.max(1, Math.ceil(this.ctx.requestRates.waitMs(this.rateKey, performance.now())));
      this.rateTimer = setTimeout(() => {
        this.rateTimer = undefined;
        this.unblock();
      }, wait);
    }
    // Slow-loris: a started frame must complete in time. Frames waiting behind the
    // outstanding bound or the rate limit are not partial; they wait on us.
    if (this.buf.length && !this.paused) {
      if (!this.partialTimer) {
        this.partialTimer = setTimeout(() => {
          this.malformed(`frame not completed within ${this.ctx.limits.frame_timeout_ms} ms`);
          this.sock.destroy();
        }, this.ctx.limits.frame_timeout_ms);
      }
    } else if (this.partialTimer) {
      clearTimeout(this.partialTimer);
      this.partialTimer = undefined;
    }
  }

  /** Re-run buffered frames after a block ends; resume reading if nothing blocks any more. */
  private unblock(): void {
    if (!this.paused || this.sock.destroyed) return;
    this.paused = false;
    this.process();
    if (!this.paused && !this.sock.destroyed) this.sock.resume();
  }

  private malformed(reason: string, fc?: number): void {
    this.counters.malformed++;
    this.ctx.events?.malformed({ listener: this.listener, identity: this.label, address: this.id.address, ...(this.cert ? { certificate: this.cert } : {}), reason, ...(fc !== undefined ? { fc } : {}) });
  }

  private reply(tid: number, unit: number, pdu: Buffer): void {
    if (this.sock.destroyed || !this.sock.writable) return;
    this.lastActive = performance.now();
    this.sock.write(encodeMbap(tid, unit, pdu));
  }

  private record(r: Omit<DecisionRecord, "ts" | "listener" | "identity" | "transport" | "address" | "function">, repeatKey?: string, ts = Date.now()): void {
    const sink = this.ctx.decisions;
    if (!sink) return;
    try {
      sink.add({ ts, listener: this.listener, ...(this.idFields ??= identityFields(this.id)), function: functionName(r.fc), ...r }, repeatKey);
    } catch {
      /* a recorder must not break forwarding */
    }
  }

  private handle(tid: number, unit: number, raw: Buffer): void {
    this.counters.requests++;
    const fc = raw[0] ?? 0;
    if (this.id.roleError) {
      // Modbus/TCP Security: a certificate with no, several or a malformed role gets
      // exception 01 for every request, whatever it is; nothing else is looked at.
      this.counters.denied++;
      this.ctx.events?.denied({ listener: this.listener, identity: this.label, address: this.id.address, ...(this.cert ? { certificate: this.cert } : {}), unit, fc }, "tls.role", this.id.roleError);
      this.reply(tid, unit, exceptionPdu(fc, EX.ILLEGAL_FUNCTION));
      this.record({ unit, fc, allow: false, rule: "tls.role", reason: this.id.roleError, exception: EX.ILLEGAL_FUNCTION });
      return;
    }
    const p = parseRequest(raw);
    if (!p.ok) {
      this.malformed(p.reason, fc);
      this.reply(tid, unit, exceptionPdu(fc, p.exception));
      this.record({ unit, fc, allow: false, rule: "frame", reason: p.reason, exception: p.exception });
      return;
    }
    const req = p.req;
    // One question object per connection, reused (decision points keep nothing of it).
    const q = (this.query ??= { identity: this.id, unit, req, now: 0 });
    q.unit = unit;
    q.req = req;
    q.now = Date.now();
    const d = decideFailClosed(this.ctx.pdp, q);
    // Allowed reads carry no detail: no event names them, and commissioning mode describes
    // one only when it prints it (a repeat is only counted: see recordAnswered()).
    const wantsDetail = !d.allow || isWrite(req);
    const addresses = wantsDetail ? describeAccesses(req) : undefined;
    const values = wantsDetail ? writtenValues(req) : undefined;
    const info: RequestInfo | undefined = wantsDetail
      ? {
          listener: this.listener,
          identity: this.label,
          address: this.id.address,
          ...(this.cert ? { certificate: this.cert } : {}),
          ...(this.id.role ? { role: this.id.role } : {}),
          unit,
          fc: req.fc,
          ...(addresses ? { addresses } : {}),
          ...(values ? { values } : {}),
        }
      : undefined;
    if (!d.allow) {
      this.counters.denied++;
      this.ctx.events?.denied(info!, d.rule, d.reason);
      // Modbus/TCP Security: an authorisation failure is exception 01; no partial effect.
      this.reply(tid, unit, exceptionPdu(req.fc, EX.ILLEGAL_FUNCTION));
      this.record({ unit, fc: req.fc, ...detail(info), allow: false, rule: d.rule, reason: d.reason, request: encodeRequest(req).toString("hex"), exception: EX.ILLEGAL_FUNCTION });
      return;
    }
    const route = this.ctx.router.route(this.listener, unit);
    if (!route) {
      this.reply(tid, unit, exceptionPdu(req.fc, EX.GATEWAY_PATH_UNAVAILABLE));
      this.ctx.events?.exception(this.label, this.id.address);
      this.record({ unit, fc: req.fc, ...detail(info ?? { addresses: describeAccesses(req) }), allow: true, rule: d.rule, reason: "no route for this unit", request: encodeRequest(req).toString("hex"), exception: EX.GATEWAY_PATH_UNAVAILABLE });
      return;
    }
    const up = route.upstream;
    if (info && isWrite(req)) this.ctx.events?.writeAllowed({ ...info, device: up.name, remote_unit: route.remoteUnit }, d.rule);
    this.outstanding++;
    const job = new Forwarded(this, tid, unit, route.remoteUnit, req, up.name, d.rule, info);
    // The promise-free path when the upstream offers it (no promise, no microtask per request).
    if (up.submit) up.submit(job, this);
    else void up.request(job.unit, req, job.pdu, this).then((resp) => job.answer(resp));
  }

  /** The device's answer (or a gateway exception) to a forwarded request. */
  complete(f: Forwarded, resp: Buffer): void {
    this.outstanding--;
    this.reply(f.tid, f.clientUnit, resp);
    const exc = resp[0]! & 0x80 ? resp[1] : undefined;
    if (exc !== undefined) this.ctx.events?.exception(this.label, this.id.address);
    else if (this.ctx.tap) this.tapResponse(f.device, f.unit, f.req, resp);
    if (this.ctx.decisions) this.recordAnswered(f, exc);
    if (this.paused && this.outstanding < this.ctx.limits.max_outstanding && !this.rateTimer) this.unblock();
  }

  /** An answered request's decision; a repeat of an allowed read is only counted. */
  private recordAnswered(f: Forwarded, exc: number | undefined): void {
    const ts = Date.now();
    const key = exc === undefined && !isWrite(f.req) ? this.repeatKey(f) : undefined;
    if (key !== undefined && this.ctx.decisions!.repeat(key, ts)) return;
    const info = f.info ?? { addresses: describeAccesses(f.req) };
    this.record({ unit: f.clientUnit, fc: f.req.fc, ...detail(info), allow: true, rule: f.rule, request: f.pdu.toString("hex"), ...(exc !== undefined ? { exception: exc } : {}) }, key, ts);
  }

  /**
   * What identical requests of this client share (listener, client, certificate, unit, rule,
   * request bytes). A client polling the same block again (FC 1–4) reuses the string it had.
   */
  private repeatKey(f: Forwarded): string {
    const r = f.req;
    const m = this.lastRead;
    if (m && r.fc <= 4 && m.fc === r.fc && m.unit === f.clientUnit && m.rule === f.rule) {
      const q = r as { address: number; quantity: number };
      if (m.address === q.address && m.quantity === q.quantity) return m.key;
    }
    const key = `${(this.repeatPrefix ??= `${this.listener}\n${this.label}\n${this.id.fingerprint ?? ""}\n`)}${f.clientUnit}\n${f.rule}\n${f.pdu.toString("hex")}`;
    if (r.fc <= 4) {
      const q = r as { address: number; quantity: number };
      this.lastRead = { fc: r.fc, unit: f.clientUnit, rule: f.rule, address: q.address, quantity: q.quantity, key };
    }
    return key;
  }

  private tapResponse(device: string, unit: number, req: ModbusRequest, resp: Buffer): void {
    const tap = this.ctx.tap!;
    const ts = Date.now();
    const rv = readValues(req, resp);
    if (rv) {
      const table: TapTable = req.fc === 1 ? "coil" : req.fc === 2 ? "discrete_input" : req.fc === 4 ? "input" : "holding";
      tap.read(device, unit, table, rv.address, rv.values, ts);
    }
    const w =
      req.fc === 5 || req.fc === 6
        ? { table: req.fc === 5 ? ("coil" as const) : ("holding" as const), address: req.address, values: [req.value] }
        : req.fc === 15 || req.fc === 16
          ? { table: req.fc === 15 ? ("coil" as const) : ("holding" as const), address: req.address, values: req.values }
          : req.fc === 23
            ? { table: "holding" as const, address: req.writeAddress, values: req.values }
            : undefined;
    if (w) tap.write({ identity: this.label, device, unit, ...w, ts });
  }
}

function detail(info: Pick<RequestInfo, "addresses" | "values"> | undefined): Pick<DecisionRecord, "addresses" | "values" | "role"> {
  if (!info) return {};
  return { ...(info.addresses ? { addresses: info.addresses } : {}), ...(info.values ? { values: [...info.values] } : {}) };
}
