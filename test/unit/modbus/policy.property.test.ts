import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decideFailClosed } from "../../../protocols/policy";
import { ModbusPolicy, accesses, isWrite } from "../../../protocols/modbus/policy/engine";
import { parsePolicy } from "../../../protocols/modbus/policy/schema";
import { requestArb } from "./_arbitraries";

const ident = fc.record({ transport: fc.constantFrom("tcp" as const, "tls" as const), address: fc.ipV4(), role: fc.option(fc.constantFrom("ops", "eng", "x"), { nil: undefined }) }).map((i) => (i.role === undefined ? { transport: i.transport, address: i.address } : i));

describe("policy properties", () => {
  it("an empty policy denies every request from anyone", () => {
    const pol = new ModbusPolicy(parsePolicy({}));
    fc.assert(fc.property(ident, fc.integer({ min: 0, max: 255 }), requestArb, (identity, unit, req) => !decideFailClosed(pol, { identity, unit, req, now: 0 }).allow), { numRuns: 2000 });
  });

  it("an allowed request only touches configured units, functions and ranges; writes never pass a read-only role", () => {
    const pol = new ModbusPolicy(
      parsePolicy({
        identities: [{ match: { address: "0.0.0.0/0" }, role: "ops" }],
        roles: { ops: { units: ["1-3"], functions: ["read-only"], read: { holding: ["100-199"], coil: ["0-63"], input: ["0-999"] } } },
      }),
    );
    fc.assert(
      fc.property(fc.ipV4(), fc.integer({ min: 0, max: 255 }), requestArb, (address, unit, req) => {
        const d = decideFailClosed(pol, { identity: { transport: "tcp", address }, unit, req, now: 0 });
        if (!d.allow) return;
        expect(unit).toBeGreaterThanOrEqual(1);
        expect(unit).toBeLessThanOrEqual(3);
        expect(isWrite(req)).toBe(false);
        for (const a of accesses(req)) {
          const [lo, hi] = a.table === "holding" ? [100, 199] : a.table === "coil" ? [0, 63] : a.table === "input" ? [0, 999] : [1, 0];
          expect(a.address).toBeGreaterThanOrEqual(lo);
          expect(a.address + a.quantity - 1).toBeLessThanOrEqual(hi);
        }
      }),
      { numRuns: 5000 },
    );
  });
});
