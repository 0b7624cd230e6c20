/**
 * Random traffic through a real proxy: whatever the bytes, the device behind it only ever
 * receives well-formed requests that the policy allows, and the proxy keeps serving.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodeMbap } from "../../../protocols/modbus/codec/frame";
import { encodeRequest, parseRequest } from "../../../protocols/modbus/codec/pdu";
import { ModbusPolicy } from "../../../protocols/modbus/policy/engine";
import { parsePolicy } from "../../../protocols/modbus/policy/schema";
import { requestArb } from "../../unit/modbus/_arbitraries";
import { exchange, RawClient, startRig } from "./_harness";

const policy = {
  identities: [{ match: { address: "127.0.0.1" }, role: "ops" }],
  roles: {
    ops: {
      units: [1, 2],
      functions: ["read-write" as const, 8, 43],
      read: { holding: ["0-499"], input: ["0-99"], coil: ["0-99"], discrete_input: ["0-99"], file: [{ file: 1, records: "0-99" }] },
      write: { holding: ["100-199"], coil: ["0-15"] },
      values: [{ table: "holding" as const, address: "100-149", min: 0, max: 1000 }],
    },
  },
};

describe("fuzzing the proxy", () => {
  it("forwards only valid, allowed requests whatever it is sent", async () => {
    const rig = await startRig(policy, { limits: { max_requests_per_s: 0, frame_timeout_ms: 100 } });
    const pol = new ModbusPolicy(parsePolicy(policy));
    try {
      const frame = fc.oneof(
        // Valid requests to allowed and disallowed units.
        fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 3 }), requestArb).map(([tid, unit, req]) => encodeMbap(tid, unit, encodeRequest(req))),
        // Valid MBAP around random PDUs.
        fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 3 }), fc.uint8Array({ minLength: 1, maxLength: 253 })).map(([tid, unit, pdu]) => encodeMbap(tid, unit, pdu)),
        // Random bytes.
        fc.uint8Array({ minLength: 1, maxLength: 300 }).map((b) => Buffer.from(b)),
      );
      await fc.assert(
        fc.asyncProperty(fc.array(frame, { minLength: 1, maxLength: 6 }), async (frames) => {
          await exchange(rig.port, Buffer.concat(frames), frames.length, 300, true);
        }),
        { numRuns: 150 },
      );
      await new Promise((r) => setTimeout(r, 100));
      expect(rig.device.received.length).toBeGreaterThan(0);
      for (const rec of rig.device.received) {
        const [unit, hex] = rec.split(":");
        const p = parseRequest(Buffer.from(hex!, "hex"));
        expect(p.ok, rec).toBe(true);
        if (!p.ok) continue;
        expect(encodeRequest(p.req).toString("hex")).toBe(hex);
        const d = pol.decide({ identity: { transport: "tcp", address: "127.0.0.1" }, unit: Number(unit), req: p.req, now: 0 });
        expect(d.allow, rec).toBe(true);
      }
      const c = await RawClient.connect(rig.port);
      expect(await c.request(1, "03 0000 0001")).toBe("03020000");
      c.close();
    } finally {
      await rig.close();
    }
  });
});
