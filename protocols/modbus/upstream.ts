import { EX } from "./function-codes";
import { exceptionPdu, type ModbusRequest } from "./pdu";

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
   * Optional promise-free form of `request` for the proxy's hot path: `done` is called exactly
   * once with what `request` would resolve to, possibly before `submit` returns.
   */
  submit?(unit: number, req: ModbusRequest, pdu: Buffer, source: unknown, done: (pdu: Buffer) => void): void;
  status(): UpstreamStatus;
}

export const gatewayUnavailable = (fc: number): Buffer => exceptionPdu(fc, EX.GATEWAY_PATH_UNAVAILABLE);
export const gatewayTimeout = (fc: number): Buffer => exceptionPdu(fc, EX.GATEWAY_TARGET_FAILED);
export const deviceFailure = (fc: number): Buffer => exceptionPdu(fc, EX.SERVER_DEVICE_FAILURE);

export function backoffDelay(failures: number, min: number, max: number): number {
  return Math.min(max, min * 2 ** Math.min(30, Math.max(0, failures - 1)));
}
