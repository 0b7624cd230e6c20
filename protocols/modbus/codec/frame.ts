/**
 * ADU framing, pure: Modbus/TCP MBAP (Modbus Messaging on TCP/IP v1.0b §3.1.3) and Modbus RTU
 * (Modbus over Serial Line v1.02 §2.5.1). Requests are decoded then checked by `parseRequest`.
 */
import { DaemonError } from "../../../agent/core/errors";
import { crc16 } from "./crc";
import { MAX_PDU, parseRequest, type ModbusRequest, type Rejection } from "./pdu";

export const MBAP_HEADER = 7;
/** Largest MBAP length field: unit id + a 253-byte PDU. */
export const MAX_MBAP_LENGTH = 1 + MAX_PDU;

/** One step of scanning a TCP byte stream. */
export type MbapScan =
  | { kind: "need" }
  | { kind: "frame"; tid: number; unit: number; pdu: Buffer; size: number }
  | { kind: "bad"; reason: string };

/** A complete frame's header fields, or why the stream is bad: filled by `scanMbapInto`. */
export interface MbapFrameSlot {
  tid: number;
  unit: number;
  /** Header and PDU; the PDU is bytes offset + 7 to offset + size. */
  size: number;
  reason: string;
}

/**
 * Look at the bytes at `offset`. A header whose protocol id is not 0 or whose length field is
 * outside 2..254 is rejected as soon as those bytes arrive (never wait for 65535 bytes that
 * may never come: the 0xFFFF-length loop); the stream cannot be resynchronised after that.
 * Fills `out` (one object the caller reuses: no allocation per frame on the proxy's path);
 * the bytes end at `end`.
 */
export function scanMbapInto(buf: Buffer, offset: number, out: MbapFrameSlot, end = buf.length): "need" | "frame" | "bad" {
  const avail = end - offset;
  if (avail >= 4 && (buf[offset + 2] !== 0 || buf[offset + 3] !== 0)) {
    out.reason = "protocol identifier is not 0";
    return "bad";
  }
  if (avail < 6) return "need";
  const len = buf.readUInt16BE(offset + 4);
  if (len < 2 || len > MAX_MBAP_LENGTH) {
    out.reason = `MBAP length ${len} outside 2..${MAX_MBAP_LENGTH}`;
    return "bad";
  }
  const size = 6 + len;
  if (avail < size) return "need";
  out.tid = buf.readUInt16BE(offset);
  out.unit = buf[offset + 6]!;
  out.size = size;
  return "frame";
}

/** A fresh slot for `scanMbapInto`. */
export const mbapFrameSlot = (): MbapFrameSlot => ({ tid: 0, unit: 0, size: 0, reason: "" });

/** `scanMbapInto` returning a new object, with the PDU as a view of `buf`. */
export function scanMbap(buf: Buffer, offset = 0): MbapScan {
  const f = mbapFrameSlot();
  const kind = scanMbapInto(buf, offset, f);
  if (kind === "frame") return { kind, tid: f.tid, unit: f.unit, pdu: buf.subarray(offset + 7, offset + f.size), size: f.size };
  return kind === "bad" ? { kind, reason: f.reason } : { kind };
}

export function encodeMbap(tid: number, unit: number, pdu: Uint8Array): Buffer {
  const n = pdu.length;
  const b = Buffer.allocUnsafe(7 + n);
  b[0] = (tid >>> 8) & 0xff;
  b[1] = tid & 0xff;
  b[2] = 0;
  b[3] = 0;
  b[4] = ((n + 1) >>> 8) & 0xff;
  b[5] = (n + 1) & 0xff;
  b[6] = unit & 0xff;
  b.set(pdu, 7);
  return b;
}

export function encodeRtu(unit: number, pdu: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(3 + pdu.length);
  b[0] = unit & 0xff;
  b.set(pdu, 1);
  const crc = crc16(b, 0, 1 + pdu.length);
  b.writeUInt16LE(crc, 1 + pdu.length);
  return b;
}

/** A complete RTU frame (address, PDU, CRC low byte first). */
export function decodeRtu(frame: Uint8Array): { ok: true; unit: number; pdu: Buffer } | { ok: false; reason: string } {
  if (frame.length < 4) return { ok: false, reason: "RTU frame shorter than 4 bytes" };
  if (frame.length > 256) return { ok: false, reason: "RTU frame longer than 256 bytes" };
  const n = frame.length;
  const crc = frame[n - 2]! | (frame[n - 1]! << 8);
  if (crc !== crc16(frame, 0, n - 2)) return { ok: false, reason: "CRC mismatch" };
  return { ok: true, unit: frame[0]!, pdu: Buffer.from(frame.subarray(1, n - 2)) };
}

/** A whole MBAP request decoded and validated; what the proxy and the golden tests use. */
export type DecodedTcpRequest =
  | { ok: true; tid: number; unit: number; req: ModbusRequest; size: number }
  | (Rejection & { tid: number; unit: number; fc: number; size: number })
  | { ok: false; fatal: true; reason: string };

/**
 * Decode the first request of `buf` for tests and tools: throws `DaemonError(MODBUS_FRAME)`
 * when the bytes are incomplete or the stream is unrecoverable; otherwise returns the request
 * or its rejection. No other exception escapes for any input.
 */
export function decodeTcpRequest(buf: Buffer): Exclude<DecodedTcpRequest, { fatal: true }> {
  const s = scanMbap(buf);
  if (s.kind === "need") throw new DaemonError("MODBUS_FRAME", "incomplete MBAP frame");
  if (s.kind === "bad") throw new DaemonError("MODBUS_FRAME", s.reason);
  const p = parseRequest(s.pdu);
  if (p.ok) return { ok: true, tid: s.tid, unit: s.unit, req: p.req, size: s.size };
  return { ...p, tid: s.tid, unit: s.unit, fc: s.pdu[0] ?? 0, size: s.size };
}
