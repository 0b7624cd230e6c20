import { EX } from "../codec/function-codes";
import { exceptionPdu, type ModbusRequest } from "../codec/pdu";

export interface UpstreamStatus {
  name: string;
  type: "tcp" | "rtu" | "rtu_tcp";
  target: string;
  state: "up" | "down" | "connecting" | "stopped";
  in_flight: number;
  queued: number;
  /** Units currently backed off after repeated timeouts (serial buses). */
  dead_units?: number[];
}

/** Reports upstream state changes (for events and logs). */
export interface UpstreamObserver {
  down(name: string, target: string, reason: string): void;
  up(name: string, target: string): void;
  /** The device sent bytes that are no Modbus answer; the connection is being dropped. */
  invalid?(name: string, target: string, reason: string): void;
}

/** A request handed to `Upstream.submit`. */
export interface UpstreamJob {
  /** The remote unit id. */
  readonly unit: number;
  readonly req: ModbusRequest;
  /** The re-serialised request PDU (may be encoded on first use: upstreams that write the
   * fixed-size requests themselves, with `writeFixedRequest`, do not ask for it). */
  readonly pdu: Buffer;
  /**
   * The answer PDU, or a gateway exception. It may view a read buffer that is reused once
   * `answer` returns: copy what outlives the call.
   */
  answer(pdu: Buffer): void;
}

/**
 * A device or bus behind the proxy. `request` never rejects: gateway failures come back as
 * exception PDUs (0A path unavailable, 0B target failed to respond, 04 invalid response).
 */
export interface Upstream {
  readonly name: string;
  start(): void;
  stop(): Promise<void>;
  /**
   * Send the re-serialised `pdu` of `req` to `unit`; resolves with the response PDU.
   * `source` (the client connection) keys fair queueing between clients.
   */
  request(unit: number, req: ModbusRequest, pdu: Buffer, source?: unknown): Promise<Buffer>;
  /**
   * Optional promise-free form of `request` for the proxy's hot path: the caller's own object
   * is the job (no promise, no closure, no wrapper per request); `job.answer` is called exactly
   * once with what `request` would resolve to, possibly before `submit` returns.
   */
  submit?(job: UpstreamJob, source: unknown): void;
  status(): UpstreamStatus;
}

export const gatewayUnavailable = (fc: number): Buffer => exceptionPdu(fc, EX.GATEWAY_PATH_UNAVAILABLE);
export const gatewayTimeout = (fc: number): Buffer => exceptionPdu(fc, EX.GATEWAY_TARGET_FAILED);
export const deviceFailure = (fc: number): Buffer => exceptionPdu(fc, EX.SERVER_DEVICE_FAILURE);

export function backoffDelay(failures: number, min: number, max: number): number {
  return Math.min(max, min * 2 ** Math.min(30, Math.max(0, failures - 1)));
}
