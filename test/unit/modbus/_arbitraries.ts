import fc from "fast-check";
import type { ModbusRequest } from "../../../protocols/modbus/codec/pdu";

const u16 = fc.integer({ min: 0, max: 0xffff });
const addrQty = (max: number) => fc.integer({ min: 1, max }).chain((q) => fc.integer({ min: 0, max: 0x10000 - q }).map((a) => [a, q] as const));
const file = fc.record({ file: fc.integer({ min: 1, max: 0xffff }), record: fc.integer({ min: 0, max: 9990 }), length: fc.integer({ min: 1, max: 9 }) });

/** Every valid request shape, within the limits of the specification. */
export const requestArb: fc.Arbitrary<ModbusRequest> = fc.oneof(
  fc.tuple(fc.constantFrom(1 as const, 2 as const), addrQty(2000)).map(([f, [address, quantity]]) => ({ fc: f, address, quantity })),
  fc.tuple(fc.constantFrom(3 as const, 4 as const), addrQty(125)).map(([f, [address, quantity]]) => ({ fc: f, address, quantity })),
  fc.tuple(u16, fc.constantFrom(0 as const, 1 as const)).map(([address, value]) => ({ fc: 5 as const, address, value })),
  fc.tuple(u16, u16).map(([address, value]) => ({ fc: 6 as const, address, value })),
  fc.constantFrom(7 as const, 11 as const, 12 as const, 17 as const).map((f) => ({ fc: f })),
  fc.constantFrom(2, 4, 10, 11, 12, 13, 14, 15, 16, 17, 18, 20).map((sub) => ({ fc: 8 as const, sub, data: [0, 0] })),
  fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 120 }).map((d) => ({ fc: 8 as const, sub: 0, data: d.length % 2 ? [...d, 0] : d })),
  addrQty(1968).chain(([address, q]) => fc.array(fc.constantFrom(0 as const, 1 as const), { minLength: q, maxLength: q }).map((values) => ({ fc: 15 as const, address, values }))),
  addrQty(123).chain(([address, q]) => fc.array(u16, { minLength: q, maxLength: q }).map((values) => ({ fc: 16 as const, address, values }))),
  fc.array(file, { minLength: 1, maxLength: 10 }).map((records) => ({ fc: 20 as const, records })),
  fc.array(fc.record({ file: fc.integer({ min: 1, max: 0xffff }), record: fc.integer({ min: 0, max: 9990 }), data: fc.array(u16, { minLength: 1, maxLength: 9 }) }), { minLength: 1, maxLength: 3 }).map((records) => ({ fc: 21 as const, records })),
  fc.tuple(u16, u16, u16).map(([address, andMask, orMask]) => ({ fc: 22 as const, address, andMask, orMask })),
  fc
    .tuple(addrQty(125), addrQty(121))
    .chain(([[ra, rq], [wa, wq]]) => fc.array(u16, { minLength: wq, maxLength: wq }).map((values) => ({ fc: 23 as const, readAddress: ra, readQuantity: rq, writeAddress: wa, values }))),
  u16.map((address) => ({ fc: 24 as const, address })),
  fc.tuple(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 0, max: 255 })).map(([readCode, objectId]) => ({ fc: 43 as const, meiType: 14 as const, readCode, objectId })),
);

