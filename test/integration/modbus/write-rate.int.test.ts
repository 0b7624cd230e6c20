import { afterEach, describe, expect, it } from "vitest";
import { RawClient, startRig, type Rig } from "./_harness";

const rigs: Rig[] = [];
const clients: RawClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const r of rigs.splice(0)) await r.close();
});

describe("write rates through the proxy", () => {
  it("two connections of one client share one write budget; a new connection brings none", async () => {
    const rig = await startRig({
      identities: [{ match: { address: "127.0.0.1" }, role: "eng" }],
      roles: { eng: { units: [1], functions: ["read-write"], read: { holding: ["0-99"] }, write: { holding: ["10-19"] }, write_rate: { max: 3, interval_ms: 60_000 } } },
    });
    rigs.push(rig);
    const a = await RawClient.connect(rig.port);
    const b = await RawClient.connect(rig.port);
    clients.push(a, b);
    expect(await a.request(1, "06 000a 0001")).toBe("06000a0001");
    expect(await b.request(1, "06 000b 0002")).toBe("06000b0002");
    expect(await a.request(1, "06 000c 0003")).toBe("06000c0003");
    // The budget of 3 per minute is spent, whichever connection asks.
    expect(await b.request(1, "06 000d 0004")).toBe("8601");
    expect(await a.request(1, "06 000d 0005")).toBe("8601");
    const c = await RawClient.connect(rig.port);
    clients.push(c);
    expect(await c.request(1, "06 000d 0006")).toBe("8601");
    expect(await c.request(1, "03 000a 0003")).toBe("0306000100020003"); // reads are not limited
    expect(rig.device.received).toEqual(["1:06000a0001", "1:06000b0002", "1:06000c0003", "1:03000a0003"]);
    const denied = rig.sink.drafts.filter((d) => d.ocsf.class_uid === 4001 && d.ocsf.activity_id === 5);
    expect(denied.map((d) => (d.ocsf.unmapped as { modbus: { rule: string } }).modbus.rule)).toEqual(["roles.eng.write_rate", "roles.eng.write_rate", "roles.eng.write_rate"]);
  });
});
