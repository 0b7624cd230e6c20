import { describe, expect, it } from "vitest";
import { encodeRequest, parseRequest, type ModbusRequest } from "../../../protocols/modbus/codec/pdu";
import { crc16 } from "../../../protocols/modbus/codec/crc";
import { decodeRtu, decodeTcpRequest, encodeMbap, encodeRtu, scanMbap } from "../../../protocols/modbus/codec/frame";
import { checkResponse, rtuResponseSize } from "../../../protocols/modbus/codec/response";
import { isDaemonError } from "../../../agent/core/errors";

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");

describe("request PDUs", () => {
  const valid: [string, ModbusRequest][] = [
    ["01 0000 07d0", { fc: 1, address: 0, quantity: 2000 }],
    ["02 ffff 0001", { fc: 2, address: 0xffff, quantity: 1 }],
    ["03 0000 007d", { fc: 3, address: 0, quantity: 125 }],
    ["04 ff83 007d", { fc: 4, address: 0xff83, quantity: 125 }],
    ["05 0010 ff00", { fc: 5, address: 16, value: 1 }],
    ["05 0010 0000", { fc: 5, address: 16, value: 0 }],
    ["06 0001 1234", { fc: 6, address: 1, value: 0x1234 }],
    ["07", { fc: 7 }],
    ["08 0000 a537", { fc: 8, sub: 0, data: [0xa5, 0x37] }],
    ["08 0004 0000", { fc: 8, sub: 4, data: [0, 0] }],
    ["0b", { fc: 11 }],
    ["0c", { fc: 12 }],
    ["0f 0013 000a 02 cd01", { fc: 15, address: 19, values: [1, 0, 1, 1, 0, 0, 1, 1, 1, 0] }],
    ["10 0001 0002 04 000a 0102", { fc: 16, address: 1, values: [10, 258] }],
    ["11", { fc: 17 }],
    ["14 0e 06 0004 0001 0002 06 0003 0009 0002", { fc: 20, records: [{ file: 4, record: 1, length: 2 }, { file: 3, record: 9, length: 2 }] }],
    ["15 0d 06 0004 0007 0003 06af 04be 100d", { fc: 21, records: [{ file: 4, record: 7, data: [0x06af, 0x04be, 0x100d] }] }],
    ["16 0004 00f2 0025", { fc: 22, address: 4, andMask: 0xf2, orMask: 0x25 }],
    ["17 0003 0006 000e 0003 06 00ff 00ff 00ff", { fc: 23, readAddress: 3, readQuantity: 6, writeAddress: 14, values: [255, 255, 255] }],
    ["18 04de", { fc: 24, address: 0x4de }],
    ["2b 0e 01 00", { fc: 43, meiType: 14, readCode: 1, objectId: 0 }],
  ];
  it.each(valid)("parses %s and re-serialises it byte for byte", (h, req) => {
    const p = parseRequest(hex(h));
    expect(p).toEqual({ ok: true, req });
    expect(encodeRequest(req).toString("hex")).toBe(h.replace(/\s+/g, ""));
  });

  const invalid: [string, string, number][] = [
    ["empty", "", 1],
    ["unknown fc", "41", 1],
    ["fc 0", "00", 1],
    ["read coils qty 0", "01 0000 0000", 3],
    ["read coils qty 2001", "01 0000 07d1", 3],
    ["read regs qty 126", "03 0000 007e", 3],
    ["read regs last allowed+1 address", "03 ff84 007d", 2],
    ["read regs with trailing bytes (libmodbus #514)", "03 0000 0001 10 0000 0001 02 ffff", 3],
    ["read regs short", "03 0000 00", 3],
    ["coil value 0x1234", "05 0000 1234", 3],
    ["write regs qty 124", "10 0000 007c f8" + "00".repeat(248), 3],
    ["write regs byte count mismatch", "10 0001 0002 03 000a 01", 3],
    ["write regs extra byte", "10 0001 0001 02 000a 00", 3],
    ["write coils qty 1969", "0f 0000 07b1 f7" + "00".repeat(247), 3],
    ["write coils address overflow", "0f ffff 0002 01 03", 2],
    ["fc23 write qty 122", "17 0000 0001 0000 007a f4" + "00".repeat(244), 3],
    ["fc23 read qty 126", "17 0000 007e 0000 0001 02 0000", 3],
    ["file record ref type 7", "14 07 07 0004 0001 0002", 2],
    ["file record overflow (record + length > 10000)", "14 07 06 0004 270f 0002", 2],
    ["file record response too large", "14 0e 06 0001 0000 0064 06 0001 0000 0064", 3],
    ["file record byte count inconsistent", "14 08 06 0004 0001 0002", 3],
    ["write file record data overrun", "15 0d 06 0004 0007 0009 06af 04be 100d", 3],
    ["file number 0", "14 07 06 0000 0001 0002", 2],
    ["diag unknown sub", "08 0005 0000", 1],
    ["diag listen-only with data", "08 0004 ff00", 3],
    ["mei 13", "2b 0d 00 00", 1],
    ["device id code 5", "2b 0e 05 00", 3],
    ["fc7 with data", "07 00", 3],
    ["PDU > 253", "10" + "00".repeat(253), 3],
  ];
  it.each(invalid)("rejects %s", (_n, h, ex) => {
    const p = parseRequest(hex(h));
    expect(p.ok).toBe(false);
    if (!p.ok) expect(p.exception).toBe(ex);
  });
});

describe("MBAP framing", () => {
  it("scans complete, incomplete and invalid headers", () => {
    const f = encodeMbap(0x1234, 7, hex("03 0000 0001"));
    expect(f.toString("hex")).toBe("123400000006070300000001");
    expect(scanMbap(f)).toMatchObject({ kind: "frame", tid: 0x1234, unit: 7, size: 12 });
    expect(scanMbap(f.subarray(0, 11)).kind).toBe("need");
    expect(scanMbap(hex("0001 0001")).kind).toBe("bad"); // protocol id 1
    expect(scanMbap(hex("0001 0000 ffff")).kind).toBe("bad"); // 0xFFFF length: rejected at once
    expect(scanMbap(hex("0001 0000 0001 01")).kind).toBe("bad"); // length 1: no PDU
    expect(scanMbap(hex("0001 0000 00ff")).kind).toBe("bad"); // 255 > 254
  });
  it("decodeTcpRequest throws only DaemonError(MODBUS_FRAME) for broken frames", () => {
    try {
      decodeTcpRequest(hex("0001 0005 0006 01 03"));
      expect.unreachable();
    } catch (e) {
      expect(isDaemonError(e, "MODBUS_FRAME")).toBe(true);
    }
  });
});

describe("RTU framing", () => {
  it("computes the Modbus CRC", () => {
    // Example from Modbus over Serial Line: 01 03 0000 0001 -> CRC 84 0A
    expect(encodeRtu(1, hex("03 0000 0001")).toString("hex")).toBe("010300000001840a");
    expect(crc16(hex("010300000001"))).toBe(0x0a84);
  });
  it("round-trips and rejects a bad CRC", () => {
    const f = encodeRtu(17, hex("10 0001 0002 04 000a 0102"));
    expect(decodeRtu(f)).toMatchObject({ ok: true, unit: 17 });
    f[3]! ^= 1;
    expect(decodeRtu(f).ok).toBe(false);
  });
  it("sizes responses", () => {
    const req: ModbusRequest = { fc: 3, address: 0, quantity: 2 };
    expect(rtuResponseSize(req, 5, hex("01 03"))).toBeUndefined();
    expect(rtuResponseSize(req, 5, hex("01 03 04"))).toBe(9);
    expect(rtuResponseSize(req, 5, hex("01 83"))).toBe(5);
    expect(rtuResponseSize(req, 5, hex("01 04"))).toBe(-1);
  });
});

describe("responses", () => {
  it("checks shape against the request", () => {
    const req: ModbusRequest = { fc: 3, address: 0, quantity: 2 };
    expect(checkResponse(req, hex("03 04 0001 0002")).ok).toBe(true);
    expect(checkResponse(req, hex("03 04 0001 000200")).ok).toBe(false);
    expect(checkResponse(req, hex("83 02"))).toEqual({ ok: true, exception: 2 });
    expect(checkResponse(req, hex("04 04 0001 0002")).ok).toBe(false);
  });
});
