/**
 * Response PDUs from upstream devices: shape checks against the request that was sent, the
 * register/coil values of reads (for the readings tap), and the size of an RTU response.
 * Pure code. A response that does not fit its request is not passed on (the client gets 04).
 */
import { SUPPORTED_FUNCTION_CODES } from "./function-codes";
import { MAX_PDU, type ModbusRequest } from "./pdu";

export type ResponseCheck = { ok: true; exception?: number } | { ok: false; reason: string };

/** The answer for every well-formed non-exception response: one frozen object, no allocation. */
const OK: ResponseCheck = Object.freeze({ ok: true as const });
const bad = (reason: string): ResponseCheck => ({ ok: false, reason });
const u16 = (pdu: Uint8Array, o: number): number => (pdu[o]! << 8) | pdu[o + 1]!;
const len = (pdu: Uint8Array, n: number): ResponseCheck => (pdu.length === n ? OK : bad(`function ${pdu[0]} response needs ${n} bytes, got ${pdu.length}`));

/** Check that `pdu` is a well-formed response to `req` (or a well-formed exception). */
export function checkResponse(req: ModbusRequest, pdu: Uint8Array): ResponseCheck {
  if (pdu.length < 2 || pdu.length > MAX_PDU) return bad(`response PDU of ${pdu.length} bytes`);
  const fc = pdu[0]!;
  if (fc === (req.fc | 0x80)) return pdu.length === 2 ? { ok: true, exception: pdu[1]! } : bad("exception response longer than 2 bytes");
  if (fc !== req.fc) return bad(`response function ${fc} does not match request ${req.fc}`);
  switch (req.fc) {
    case 1:
    case 2: {
      const bc = Math.ceil(req.quantity / 8);
      return pdu[1] === bc ? len(pdu, 2 + bc) : bad("byte count does not match the requested quantity");
    }
    case 3:
    case 4:
      return pdu[1] === 2 * req.quantity ? len(pdu, 2 + 2 * req.quantity) : bad("byte count does not match the requested quantity");
    case 23:
      return pdu[1] === 2 * req.readQuantity ? len(pdu, 2 + 2 * req.readQuantity) : bad("byte count does not match the requested quantity");
    case 5:
    case 6: {
      const r = len(pdu, 5);
      if (!r.ok) return r;
      return u16(pdu, 1) === req.address ? r : bad("echoed address differs");
    }
    case 15:
    case 16: {
      const r = len(pdu, 5);
      if (!r.ok) return r;
      return u16(pdu, 1) === req.address && u16(pdu, 3) === req.values.length ? r : bad("echoed address or quantity differs");
    }
    case 22: {
      const r = len(pdu, 7);
      if (!r.ok) return r;
      return u16(pdu, 1) === req.address ? r : bad("echoed address differs");
    }
    case 7:
      return len(pdu, 2);
    case 8:
      if (u16(pdu, 1) !== req.sub) return bad("echoed sub-function differs");
      return req.sub === 0 ? len(pdu, 3 + req.data.length) : len(pdu, 5);
    case 11:
      return len(pdu, 5);
    case 12:
    case 17: {
      const bc = pdu[1]!;
      if (req.fc === 12 && bc < 6) return bad("event log byte count below 6");
      return len(pdu, 2 + bc);
    }
    case 20: {
      const n = pdu[1]!;
      const r = len(pdu, 2 + n);
      if (!r.ok) return r;
      let o = 2;
      let i = 0;
      while (o < pdu.length) {
        const gl = pdu[o]!;
        const want = req.records[i];
        if (!want || gl !== 1 + 2 * want.length || pdu[o + 1] !== 6) return bad("file record group does not match the request");
        o += 1 + gl;
        i++;
      }
      return o === pdu.length && i === req.records.length ? r : bad("file record groups do not match the request");
    }
    case 21:
      // The normal response is an echo of the request.
      return pdu.length >= 2 && pdu[1] === pdu.length - 2 ? OK : bad("write-file-record echo malformed");
    case 24: {
      if (pdu.length < 5) return bad("FIFO response shorter than 5 bytes");
      const bc = u16(pdu, 1);
      const count = u16(pdu, 3);
      if (count > 31 || bc !== 2 + 2 * count) return bad("FIFO count or byte count invalid");
      return len(pdu, 3 + bc);
    }
    case 43:
      return deviceIdSize(pdu, 0) === pdu.length ? OK : bad("device identification response malformed");
  }
}

/**
 * Why `pdu` is no Modbus answer at all, whatever was asked (undefined when it could be one):
 * an exception of other than 2 bytes, a function the proxy never forwards, or a byte count
 * or length that contradicts the frame. On a TCP stream such an answer means the framing is
 * lost (a device that interleaves the bytes of its answers, or anything not Modbus): the
 * bytes after it may form frames that look valid but carry another answer's data, so the
 * connection is not read further. An answer that is well formed but does not fit its request
 * (wrong function, unit or count) leaves the framing intact.
 */
export function answerShapeError(pdu: Uint8Array): string | undefined {
  const n = pdu.length;
  if (n < 2 || n > MAX_PDU) return `answer PDU of ${n} bytes`;
  const fc = pdu[0]!;
  if (fc & 0x80) return n === 2 && KNOWN_FUNCTIONS.has(fc & 0x7f) ? undefined : `exception answer of function ${fc & 0x7f} with ${n} bytes`;
  switch (fc) {
    case 1:
    case 2:
    case 3:
    case 4:
    case 12:
    case 17:
    case 20:
    case 21:
    case 23:
      return pdu[1] === n - 2 ? undefined : `function ${fc} answer with byte count ${pdu[1]} in ${n} bytes`;
    case 5:
    case 6:
    case 11:
    case 15:
    case 16:
      return n === 5 ? undefined : `function ${fc} answer of ${n} bytes`;
    case 22:
      return n === 7 ? undefined : `function ${fc} answer of ${n} bytes`;
    case 7:
      return n === 2 ? undefined : `function ${fc} answer of ${n} bytes`;
    case 8:
      return n >= 3 ? undefined : `function ${fc} answer of ${n} bytes`;
    case 24:
      return n >= 5 && ((pdu[1]! << 8) | pdu[2]!) === n - 3 ? undefined : `function ${fc} answer with a byte count that is not its length`;
    case 43:
      return deviceIdSize(pdu, 0) === n ? undefined : "device identification answer malformed";
    default:
      return `function ${fc} is not one the proxy forwards`;
  }
}

const KNOWN_FUNCTIONS = new Set(SUPPORTED_FUNCTION_CODES);

/** Size of a complete FC 43/14 response starting at `o` (fc first), or undefined if incomplete. */
function deviceIdSize(b: Uint8Array, o: number): number | undefined {
  // fc, MEI, read code, conformity, more follows, next object id, number of objects
  if (b.length < o + 7) return undefined;
  if (b[o + 1] !== 14) return -1;
  const n = b[o + 6]!;
  let p = o + 7;
  for (let i = 0; i < n; i++) {
    if (b.length < p + 2) return undefined;
    p += 2 + b[p + 1]!;
  }
  if (p - o > MAX_PDU) return -1;
  return b.length < p ? undefined : p - o;
}

/** Register values (FC 3, 4, 23) or bit values (FC 1, 2) of a checked read response. */
export function readValues(req: ModbusRequest, pdu: Uint8Array): { address: number; values: number[] } | undefined {
  if (pdu[0]! & 0x80) return undefined;
  if (req.fc === 3 || req.fc === 4 || req.fc === 23) {
    const address = req.fc === 23 ? req.readAddress : req.address;
    const q = req.fc === 23 ? req.readQuantity : req.quantity;
    const values: number[] = [];
    for (let i = 0; i < q; i++) values.push((pdu[2 + 2 * i]! << 8) | pdu[3 + 2 * i]!);
    return { address, values };
  }
  if (req.fc === 1 || req.fc === 2) {
    const values: number[] = [];
    for (let i = 0; i < req.quantity; i++) values.push((pdu[2 + (i >> 3)]! >> (i & 7)) & 1);
    return { address: req.address, values };
  }
  return undefined;
}

/**
 * Total size (address + PDU + CRC) of an RTU response to `req` whose first bytes are in
 * `b`; undefined while too few bytes are there to tell; -1 when it can never be valid.
 */
export function rtuResponseSize(req: ModbusRequest, reqPduLength: number, b: Uint8Array): number | undefined {
  if (b.length < 2) return undefined;
  const fc = b[1]!;
  if (fc & 0x80) return 5;
  if (fc !== req.fc) return -1;
  switch (req.fc) {
    case 1:
    case 2:
    case 3:
    case 4:
    case 12:
    case 17:
    case 20:
    case 23:
      return b.length < 3 ? undefined : 5 + b[2]!;
    case 5:
    case 6:
    case 15:
    case 16:
      return 8;
    case 22:
      return 10;
    case 7:
      return 5;
    case 11:
      return 8;
    case 8:
    case 21:
      return 1 + reqPduLength + 2;
    case 24:
      return b.length < 4 ? undefined : 1 + 1 + 2 + ((b[2]! << 8) | b[3]!) + 2;
    case 43: {
      const s = deviceIdSize(b, 1);
      return s === undefined ? undefined : s < 0 ? -1 : 1 + s + 2;
    }
  }
}
