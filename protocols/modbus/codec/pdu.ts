/**
 * Request PDUs: strict parsing and re-serialisation (Modbus Application Protocol v1.1b3 §6).
 * Pure code, no I/O. A request is only ever forwarded as `encodeRequest(parseRequest(pdu))`,
 * never as the client's bytes, so anything the parser did not understand cannot pass
 * (libmodbus #514: a length covering more than the function needs smuggled a second PDU).
 */
import { DIAG_SUBFUNCTIONS, EX, SUPPORTED_FUNCTION_CODES } from "./function-codes";

/** Largest PDU (§4.1: 256-byte serial ADU minus address and CRC). */
export const MAX_PDU = 253;

export type Table = "coil" | "discrete_input" | "input" | "holding";
export interface FileRecordRef {
  file: number;
  record: number;
  length: number;
}
export interface FileRecordWrite {
  file: number;
  record: number;
  data: number[];
}

export type ModbusRequest =
  | { fc: 1 | 2 | 3 | 4; address: number; quantity: number }
  | { fc: 5; address: number; value: 0 | 1 }
  | { fc: 6; address: number; value: number }
  | { fc: 7 | 11 | 12 | 17 }
  | { fc: 8; sub: number; data: number[] }
  | { fc: 15; address: number; values: (0 | 1)[] }
  | { fc: 16; address: number; values: number[] }
  | { fc: 20; records: FileRecordRef[] }
  | { fc: 21; records: FileRecordWrite[] }
  | { fc: 22; address: number; andMask: number; orMask: number }
  | { fc: 23; readAddress: number; readQuantity: number; writeAddress: number; values: number[] }
  | { fc: 24; address: number }
  | { fc: 43; meiType: 14; readCode: number; objectId: number };

/** A rejected request: the exception to answer and why. */
export interface Rejection {
  ok: false;
  exception: number;
  reason: string;
}
export type ParseResult = { ok: true; req: ModbusRequest } | Rejection;

const rej = (exception: number, reason: string): Rejection => ({ ok: false, exception, reason });

/** Bounds of §6: quantity ranges and address + quantity <= 65536. */
export const LIMITS = {
  readBits: 2000,
  readRegisters: 125,
  writeCoils: 1968,
  writeRegisters: 123,
  rwRead: 125,
  rwWrite: 121,
  fileRecordMax: 9999,
  fifoMax: 31,
} as const;

function range(address: number, quantity: number, max: number, what: string): Rejection | undefined {
  if (quantity < 1 || quantity > max) return rej(EX.ILLEGAL_DATA_VALUE, `${what} quantity ${quantity} outside 1..${max}`);
  if (address + quantity > 0x10000) return rej(EX.ILLEGAL_DATA_ADDRESS, `${what} address ${address} + quantity ${quantity} exceeds 65536`);
  return undefined;
}

function exactLength(pdu: Uint8Array, n: number, fc: number): Rejection | undefined {
  return pdu.length === n ? undefined : rej(EX.ILLEGAL_DATA_VALUE, `function ${fc} needs a ${n}-byte PDU, got ${pdu.length}`);
}

/** Big-endian 16-bit word at `o` (a module function: a closure over the PDU would be allocated per parse). */
const u16 = (p: Uint8Array, o: number): number => (p[o]! << 8) | p[o + 1]!;

/**
 * Parse a request PDU (function code first). Never throws for any input: every byte sequence
 * is either a request or a rejection with the exception code the specification asks for.
 */
export function parseRequest(pdu: Uint8Array): ParseResult {
  if (pdu.length < 1) return rej(EX.ILLEGAL_FUNCTION, "empty PDU");
  if (pdu.length > MAX_PDU) return rej(EX.ILLEGAL_DATA_VALUE, `PDU of ${pdu.length} bytes exceeds ${MAX_PDU}`);
  const fc = pdu[0]!;
  if (!SUPPORTED_FUNCTION_CODES.includes(fc)) return rej(EX.ILLEGAL_FUNCTION, `function code ${fc} is not supported`);
  switch (fc) {
    case 1:
    case 2:
    case 3:
    case 4: {
      const bad = exactLength(pdu, 5, fc);
      if (bad) return bad;
      const address = u16(pdu, 1);
      const quantity = u16(pdu, 3);
      const r = range(address, quantity, fc <= 2 ? LIMITS.readBits : LIMITS.readRegisters, "read");
      return r ?? { ok: true, req: { fc, address, quantity } };
    }
    case 5: {
      const bad = exactLength(pdu, 5, fc);
      if (bad) return bad;
      const v = u16(pdu, 3);
      // §6.5: 0xFF00 ON, 0x0000 OFF, anything else is illegal.
      if (v !== 0xff00 && v !== 0) return rej(EX.ILLEGAL_DATA_VALUE, `coil value 0x${v.toString(16)} is neither 0xFF00 nor 0x0000`);
      return { ok: true, req: { fc, address: u16(pdu, 1), value: v ? 1 : 0 } };
    }
    case 6: {
      const bad = exactLength(pdu, 5, fc);
      return bad ?? { ok: true, req: { fc, address: u16(pdu, 1), value: u16(pdu, 3) } };
    }
    case 7:
    case 11:
    case 12:
    case 17: {
      const bad = exactLength(pdu, 1, fc);
      return bad ?? { ok: true, req: { fc } };
    }
    case 8: {
      if (pdu.length < 3) return rej(EX.ILLEGAL_DATA_VALUE, "diagnostics PDU shorter than 3 bytes");
      const sub = u16(pdu, 1);
      if (!DIAG_SUBFUNCTIONS.includes(sub)) return rej(EX.ILLEGAL_FUNCTION, `diagnostics sub-function ${sub} is not supported`);
      const data = Array.from(pdu.subarray(3));
      if (sub === 0) {
        // Return query data: any data, echoed.
        if (data.length < 2 || data.length % 2) return rej(EX.ILLEGAL_DATA_VALUE, "return-query-data needs an even, non-zero data length");
      } else if (data.length !== 2) {
        return rej(EX.ILLEGAL_DATA_VALUE, `diagnostics sub-function ${sub} needs 2 data bytes`);
      } else if (sub === 1) {
        if (!((data[0] === 0 || data[0] === 0xff) && data[1] === 0)) return rej(EX.ILLEGAL_DATA_VALUE, "restart option must be 0x0000 or 0xFF00");
      } else if (sub === 3) {
        if (data[1] !== 0) return rej(EX.ILLEGAL_DATA_VALUE, "delimiter must be followed by 0x00");
      } else if (data[0] !== 0 || data[1] !== 0) {
        return rej(EX.ILLEGAL_DATA_VALUE, `diagnostics sub-function ${sub} needs data 0x0000`);
      }
      return { ok: true, req: { fc, sub, data } };
    }
    case 15: {
      if (pdu.length < 7) return rej(EX.ILLEGAL_DATA_VALUE, "write-multiple-coils PDU shorter than 7 bytes");
      const address = u16(pdu, 1);
      const quantity = u16(pdu, 3);
      const bad = writeBlock(pdu, fc, 5, address, quantity, LIMITS.writeCoils, Math.ceil(quantity / 8), "coils");
      if (bad) return bad;
      const values: (0 | 1)[] = [];
      for (let i = 0; i < quantity; i++) values.push(((pdu[6 + (i >> 3)]! >> (i & 7)) & 1) as 0 | 1);
      return { ok: true, req: { fc, address, values } };
    }
    case 16: {
      if (pdu.length < 8) return rej(EX.ILLEGAL_DATA_VALUE, "write-multiple-registers PDU shorter than 8 bytes");
      const address = u16(pdu, 1);
      const quantity = u16(pdu, 3);
      const bad = writeBlock(pdu, fc, 5, address, quantity, LIMITS.writeRegisters, quantity * 2, "registers");
      return bad ?? { ok: true, req: { fc, address, values: words(pdu, 6, quantity) } };
    }
    case 20: {
      // §6.14: byte count 0x07..0xF5, sub-requests of 7 bytes, reference type 6.
      const bc = pdu[1];
      if (bc === undefined || bc < 7 || bc > 0xf5 || bc % 7) return rej(EX.ILLEGAL_DATA_VALUE, `read-file-record byte count ${bc ?? "missing"} invalid`);
      const bad = exactLength(pdu, 2 + bc, fc);
      if (bad) return bad;
      const records: FileRecordRef[] = [];
      let respBytes = 0;
      for (let o = 2; o < pdu.length; o += 7) {
        const ref = fileRef(pdu, o);
        if ("ok" in ref) return ref;
        respBytes += 2 + 2 * ref.length;
        records.push(ref);
      }
      // The response must fit one PDU: fc, length byte, then per group length, type, data.
      if (2 + respBytes > MAX_PDU) return rej(EX.ILLEGAL_DATA_VALUE, "read-file-record response would exceed the PDU limit");
      return { ok: true, req: { fc, records } };
    }
    case 21: {
      // §6.15: byte count 0x09..0xFB, groups of 7 header bytes + 2 * length data bytes.
      const bc = pdu[1];
      if (bc === undefined || bc < 9 || bc > 0xfb) return rej(EX.ILLEGAL_DATA_VALUE, `write-file-record byte count ${bc ?? "missing"} invalid`);
      const bad = exactLength(pdu, 2 + bc, fc);
      if (bad) return bad;
      const records: FileRecordWrite[] = [];
      let o = 2;
      while (o < pdu.length) {
        if (o + 7 > pdu.length) return rej(EX.ILLEGAL_DATA_VALUE, "truncated write-file-record sub-request");
        const ref = fileRef(pdu, o);
        if ("ok" in ref) return ref;
        const { file, record, length } = ref;
        if (o + 7 + 2 * length > pdu.length) return rej(EX.ILLEGAL_DATA_VALUE, "write-file-record data overruns the byte count");
        records.push({ file, record, data: words(pdu, o + 7, length) });
        o += 7 + 2 * length;
      }
      return { ok: true, req: { fc, records } };
    }
    case 22: {
      const bad = exactLength(pdu, 7, fc);
      return bad ?? { ok: true, req: { fc, address: u16(pdu, 1), andMask: u16(pdu, 3), orMask: u16(pdu, 5) } };
    }
    case 23: {
      if (pdu.length < 12) return rej(EX.ILLEGAL_DATA_VALUE, "read-write-multiple PDU shorter than 12 bytes");
      const readAddress = u16(pdu, 1);
      const readQuantity = u16(pdu, 3);
      const writeAddress = u16(pdu, 5);
      const wq = u16(pdu, 7);
      const r1 = range(readAddress, readQuantity, LIMITS.rwRead, "read");
      if (r1) return r1;
      const bad = writeBlock(pdu, fc, 9, writeAddress, wq, LIMITS.rwWrite, wq * 2, "registers");
      return bad ?? { ok: true, req: { fc, readAddress, readQuantity, writeAddress, values: words(pdu, 10, wq) } };
    }
    case 24: {
      const bad = exactLength(pdu, 3, fc);
      return bad ?? { ok: true, req: { fc, address: u16(pdu, 1) } };
    }
    case 43: {
      // Only MEI 14 (read device identification, §6.21); 13 (CANopen) is not supported.
      if (pdu[1] !== 14) return rej(EX.ILLEGAL_FUNCTION, `MEI type ${pdu[1] ?? "missing"} is not supported`);
      const bad = exactLength(pdu, 4, fc);
      if (bad) return bad;
      const readCode = pdu[2]!;
      if (readCode < 1 || readCode > 4) return rej(EX.ILLEGAL_DATA_VALUE, `read device id code ${readCode} outside 1..4`);
      return { ok: true, req: { fc, meiType: 14, readCode, objectId: pdu[3]! } };
    }
  }
  return rej(EX.ILLEGAL_FUNCTION, `function code ${fc} is not supported`);
}

/** One file-record sub-request header at `o` (§6.14, §6.15): reference type 6, file, record, length. */
function fileRef(pdu: Uint8Array, o: number): FileRecordRef | Rejection {
  if (pdu[o] !== 6) return rej(EX.ILLEGAL_DATA_ADDRESS, `reference type ${pdu[o]} is not 6`);
  const file = u16(pdu, o + 1);
  const record = u16(pdu, o + 3);
  const length = u16(pdu, o + 5);
  if (file < 1) return rej(EX.ILLEGAL_DATA_ADDRESS, "file number 0 is not valid");
  if (record > LIMITS.fileRecordMax) return rej(EX.ILLEGAL_DATA_ADDRESS, `record number ${record} exceeds ${LIMITS.fileRecordMax}`);
  if (length < 1) return rej(EX.ILLEGAL_DATA_VALUE, "record length 0");
  if (record + length > LIMITS.fileRecordMax + 1) return rej(EX.ILLEGAL_DATA_ADDRESS, `records ${record}+${length} run past ${LIMITS.fileRecordMax}`);
  return { file, record, length };
}

/**
 * The write block of FC 15, 16 and 23: quantity in range, the byte count at `bcAt` equal to
 * `bytes`, and exactly those bytes after it.
 */
function writeBlock(
  pdu: Uint8Array,
  fc: number,
  bcAt: number,
  address: number,
  quantity: number,
  max: number,
  bytes: number,
  unit: string,
): Rejection | undefined {
  const r = range(address, quantity, max, "write");
  if (r) return r;
  if (pdu[bcAt] !== bytes) return rej(EX.ILLEGAL_DATA_VALUE, `byte count ${pdu[bcAt]} does not match ${quantity} ${unit}`);
  return exactLength(pdu, bcAt + 1 + bytes, fc);
}

/** `n` big-endian words from `off`. */
function words(pdu: Uint8Array, off: number, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(u16(pdu, off + 2 * i));
  return out;
}

/** Length of a request PDU that `writeFixedRequest` writes (FC 1-6); 0 for the others. */
export const fixedRequestLength = (req: ModbusRequest): number => (req.fc >= 1 && req.fc <= 6 ? 5 : 0);

/**
 * The fixed 5-byte forms (FC 1-6: function code, address, then quantity or value) written at
 * `off` of `buf`; returns 5, or 0 for any other function (use `encodeRequest`). An upstream
 * writes its batch with it, without a buffer per request.
 */
export function writeFixedRequest(req: ModbusRequest, buf: Uint8Array, off: number): number {
  let w: number;
  switch (req.fc) {
    case 1:
    case 2:
    case 3:
    case 4:
      w = req.quantity;
      break;
    case 5:
      w = req.value ? 0xff00 : 0;
      break;
    case 6:
      w = req.value;
      break;
    default:
      return 0;
  }
  buf[off] = req.fc;
  buf[off + 1] = (req.address >>> 8) & 0xff;
  buf[off + 2] = req.address & 0xff;
  buf[off + 3] = (w >>> 8) & 0xff;
  buf[off + 4] = w & 0xff;
  return 5;
}

/** Serialise a request that `parseRequest` produced (or one built by hand with valid fields). */
export function encodeRequest(req: ModbusRequest): Buffer {
  switch (req.fc) {
    case 1:
    case 2:
    case 3:
    case 4:
    case 5:
    case 6: {
      const b = Buffer.allocUnsafe(5);
      writeFixedRequest(req, b, 0);
      return b;
    }
    case 7:
    case 11:
    case 12:
    case 17:
      return Buffer.from([req.fc]);
    case 8: {
      const b = Buffer.alloc(3 + req.data.length);
      b[0] = 8;
      b.writeUInt16BE(req.sub, 1);
      for (let i = 0; i < req.data.length; i++) b[3 + i] = req.data[i]! & 0xff;
      return b;
    }
    case 15: {
      const n = req.values.length;
      const bytes = Math.ceil(n / 8);
      const b = Buffer.alloc(6 + bytes);
      b[0] = 15;
      b.writeUInt16BE(req.address, 1);
      b.writeUInt16BE(n, 3);
      b[5] = bytes;
      // Unused high bits of the last byte are zero-filled (§6.11).
      for (let i = 0; i < n; i++) if (req.values[i]) b[6 + (i >> 3)]! |= 1 << (i & 7);
      return b;
    }
    case 16: {
      const b = Buffer.alloc(6 + 2 * req.values.length);
      b[0] = 16;
      b.writeUInt16BE(req.address, 1);
      putWords(b, 3, req.values);
      return b;
    }
    case 20: {
      const b = Buffer.alloc(2 + 7 * req.records.length);
      b[0] = 20;
      b[1] = 7 * req.records.length;
      req.records.forEach((r, i) => putFileRef(b, 2 + 7 * i, r.file, r.record, r.length));
      return b;
    }
    case 21: {
      const size = req.records.reduce((s, r) => s + 7 + 2 * r.data.length, 0);
      const b = Buffer.alloc(2 + size);
      b[0] = 21;
      b[1] = size;
      let o = 2;
      for (const r of req.records) {
        putFileRef(b, o, r.file, r.record, r.data.length);
        r.data.forEach((v, i) => b.writeUInt16BE(v & 0xffff, o + 7 + 2 * i));
        o += 7 + 2 * r.data.length;
      }
      return b;
    }
    case 22:
      return u16s(22, req.address, req.andMask, req.orMask);
    case 23: {
      const b = Buffer.alloc(10 + 2 * req.values.length);
      b[0] = 23;
      b.writeUInt16BE(req.readAddress, 1);
      b.writeUInt16BE(req.readQuantity, 3);
      b.writeUInt16BE(req.writeAddress, 5);
      putWords(b, 7, req.values);
      return b;
    }
    case 24:
      return u16s(24, req.address);
    case 43:
      return Buffer.from([43, 14, req.readCode, req.objectId]);
  }
}

/** A count of `values` at `off`, the byte count after it, then the values as words (FC 16, 23). */
function putWords(b: Buffer, off: number, values: readonly number[]): void {
  b.writeUInt16BE(values.length, off);
  b[off + 2] = 2 * values.length;
  for (let i = 0; i < values.length; i++) b.writeUInt16BE(values[i]! & 0xffff, off + 3 + 2 * i);
}

/** A file-record sub-request header (reference type 6, file, record, length) at `o`. */
function putFileRef(b: Buffer, o: number, file: number, record: number, length: number): void {
  b[o] = 6;
  b.writeUInt16BE(file, o + 1);
  b.writeUInt16BE(record, o + 3);
  b.writeUInt16BE(length, o + 5);
}

/** Function code and one to three big-endian words; every byte is written (allocUnsafe is safe). */
function u16s(fc: number, w0: number, w1?: number, w2?: number): Buffer {
  const b = Buffer.allocUnsafe(w2 !== undefined ? 7 : w1 !== undefined ? 5 : 3);
  b[0] = fc;
  b[1] = (w0 >>> 8) & 0xff;
  b[2] = w0 & 0xff;
  if (w1 !== undefined) {
    b[3] = (w1 >>> 8) & 0xff;
    b[4] = w1 & 0xff;
  }
  if (w2 !== undefined) {
    b[5] = (w2 >>> 8) & 0xff;
    b[6] = w2 & 0xff;
  }
  return b;
}

/** An exception response PDU (§7): function code with the high bit set, then the code. */
export function exceptionPdu(fc: number, code: number): Buffer {
  return Buffer.from([(fc | 0x80) & 0xff, code & 0xff]);
}
