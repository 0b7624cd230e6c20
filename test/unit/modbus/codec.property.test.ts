import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { isDaemonError } from "../../../agent/core/errors";
import { roleFromCertificate } from "../../../protocols/modbus/tls/cert-role";
import { decodeRtu, decodeTcpRequest, encodeMbap, encodeRtu, scanMbap } from "../../../protocols/modbus/codec/frame";
import { encodeRequest, fixedRequestLength, MAX_PDU, parseRequest, writeFixedRequest } from "../../../protocols/modbus/codec/pdu";
import { requestArb } from "./_arbitraries";
import { answerShapeError, checkResponse, rtuResponseSize } from "../../../protocols/modbus/codec/response";
import { SimDevice } from "../../../agent/demo/sim-server";

const u16 = fc.integer({ min: 0, max: 0xffff });

describe("codec properties", () => {
  it("encode then parse gives the same request", () => {
    fc.assert(
      fc.property(requestArb, (req) => {
        const pdu = encodeRequest(req);
        expect(pdu.length).toBeLessThanOrEqual(MAX_PDU);
        expect(parseRequest(pdu)).toEqual({ ok: true, req });
      }),
      { numRuns: 3000 },
    );
  });

  it("the batch writer's fixed forms are encodeRequest's bytes, and say their length", () => {
    fc.assert(
      fc.property(requestArb, fc.integer({ min: 0, max: 16 }), (req, off) => {
        const buf = Buffer.alloc(off + 8, 0xee);
        const n = writeFixedRequest(req, buf, off);
        expect(n).toBe(fixedRequestLength(req));
        if (n) expect(buf.subarray(off, off + n).equals(encodeRequest(req))).toBe(true);
        expect(buf.subarray(off + n).every((b) => b === 0xee)).toBe(true); // nothing past its end
      }),
      { numRuns: 2000 },
    );
  });

  it("MBAP and RTU framing round-trip", () => {
    fc.assert(
      fc.property(requestArb, u16, fc.integer({ min: 0, max: 255 }), (req, tid, unit) => {
        const pdu = encodeRequest(req);
        const d = decodeTcpRequest(encodeMbap(tid, unit, pdu));
        expect(d).toMatchObject({ ok: true, tid, unit, req });
        const r = decodeRtu(encodeRtu(unit, pdu));
        expect(r.ok && r.pdu.equals(pdu) && r.unit === unit).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it("no byte sequence makes the request parser throw; accepted bytes are canonical", () => {
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      // Mostly-valid shapes: a known function code followed by noise.
      fc.tuple(fc.constantFrom(1, 2, 3, 4, 5, 6, 8, 15, 16, 20, 21, 22, 23, 24, 43), fc.uint8Array({ maxLength: 260 })).map(([f, rest]) => Uint8Array.from([f, ...rest])),
    );
    fc.assert(
      fc.property(bytes, (b) => {
        const p = parseRequest(b);
        if (p.ok) {
          const again = encodeRequest(p.req);
          expect(parseRequest(again)).toEqual(p);
          // Re-serialisation may only differ from the input in FC 15's unused padding bits.
          if (p.req.fc !== 15) expect(Buffer.from(b).equals(again)).toBe(true);
        } else {
          expect([1, 2, 3]).toContain(p.exception);
        }
      }),
      { numRuns: 5000 },
    );
  });

  it("decodeTcpRequest throws nothing but DaemonError(MODBUS_FRAME)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.boolean(), (b, fix) => {
        const buf = Buffer.from(b);
        if (fix && buf.length >= 4) buf.writeUInt16BE(0, 2);
        try {
          decodeTcpRequest(buf);
        } catch (e) {
          expect(isDaemonError(e, "MODBUS_FRAME")).toBe(true);
        }
        const s = scanMbap(buf);
        expect(["need", "frame", "bad"]).toContain(s.kind);
      }),
      { numRuns: 5000 },
    );
  });

  it("response checks and RTU sizing never throw", () => {
    fc.assert(
      fc.property(requestArb, fc.uint8Array({ maxLength: 260 }), (req, b) => {
        checkResponse(req, b);
        rtuResponseSize(req, encodeRequest(req).length, b);
        decodeRtu(b);
      }),
      { numRuns: 3000 },
    );
  });

  it("every answer that fits some request has a Modbus answer's shape (a device's answer never drops the connection)", () => {
    const device = new SimDevice();
    let fitted = 0;
    fc.assert(
      fc.property(requestArb, fc.uint8Array({ maxLength: 260 }), (req, noise) => {
        const answer = device.handle(1, encodeRequest(req));
        for (const b of [answer, noise, Buffer.concat([Buffer.from([req.fc, noise.length]), noise])]) {
          if (!b || !checkResponse(req, b).ok) continue;
          fitted++;
          expect(answerShapeError(b), Buffer.from(b).toString("hex")).toBeUndefined();
        }
      }),
      { numRuns: 3000 },
    );
    expect(fitted).toBeGreaterThan(1000);
  });

  it("bytes that are no Modbus answer are told apart (what interleaved answers read as)", () => {
    // Two answers' first five bytes read as one frame: the PDU starts with a protocol id byte.
    expect(answerShapeError(Buffer.from("000000", "hex"))).toBe("function 0 is not one the proxy forwards");
    expect(answerShapeError(Buffer.from("0302030000", "hex"))).toBe("function 3 answer with byte count 2 in 5 bytes");
    expect(answerShapeError(Buffer.from("830200", "hex"))).toBe("exception answer of function 3 with 3 bytes");
    expect(answerShapeError(Buffer.from("0600010002aa", "hex"))).toBe("function 6 answer of 6 bytes");
    expect(answerShapeError(Buffer.from("03", "hex"))).toBe("answer PDU of 1 bytes");
    // Well formed though it fits no request sent: the framing holds (the client gets 04).
    expect(answerShapeError(Buffer.from("0304000000aa", "hex"))).toBeUndefined();
    expect(answerShapeError(Buffer.from("8302", "hex"))).toBeUndefined();
  });

  it("the certificate role parser never throws", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (b) => {
        const r = roleFromCertificate(b);
        expect(r.ok).toBe(false);
      }),
      { numRuns: 3000 },
    );
  });
});
