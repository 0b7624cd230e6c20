import { afterEach, describe, expect, it } from "vitest";
import type { WriteWindow } from "../../../protocols/modbus/policy/window-store";
import { parsePolicy } from "../../../protocols/modbus/policy/schema";
import { RawClient, startRig, type Rig } from "./_harness";

const rigs: Rig[] = [];
const clients: RawClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const r of rigs.splice(0)) await r.close();
});

describe("write windows shared with the OPC UA front's roles", () => {
  it("one store: a window opens for a role of either protocol, each change is told, a reload keeps the other protocol's windows", async () => {
    const told: WriteWindow[][] = [];
    const eng = { units: [1], functions: ["read-write" as const], read: { holding: ["0-99"] }, write: { holding: ["10-19"] }, write_window: "required" as const };
    const policy = { identities: [{ match: { address: "127.0.0.1" }, role: "eng" }], roles: { eng } };
    const rig = await startRig(policy, {}, {
      windowRoles: { roles: () => ["ua-eng", "ua-view"], writes: (r) => r === "ua-eng", where: "opcua.front.roles" },
      onWindows: (open) => told.push(open),
    });
    rigs.push(rig);
    const store = rig.service.windows!;
    const c = await RawClient.connect(rig.port);
    clients.push(c);
    expect(await c.request(1, "06 000A 0001")).toBe("8601");
    const ua = store.openWindow({ role: "ua-eng", minutes: 5, reason: "OPC UA setpoint", by: "test" });
    expect(told.at(-1)).toEqual([ua]);
    // A window of the OPC UA role opens nothing on the Modbus side.
    expect(await c.request(1, "06 000A 0001")).toBe("8601");
    const mb = store.openWindow({ role: "eng", minutes: 5, reason: "Modbus setpoint", by: "test" });
    expect(told.at(-1)).toEqual([ua, mb]);
    expect(await c.request(1, "06 000A 0001")).toBe("06000a0001");
    expect(() => store.openWindow({ role: "ua-view", minutes: 5, reason: "x" })).toThrow("role ua-view may write nothing in the Modbus policy or opcua.front.roles: a write window would allow nothing");
    expect(() => store.openWindow({ role: "ghost", minutes: 5, reason: "x" })).toThrow("no role ghost in the Modbus policy or opcua.front.roles");
    // A reload whose policy lacks a Modbus role closes its windows, never the OPC UA role's.
    rig.service.reload({ policy: parsePolicy({ ...policy, identities: [], roles: { other: eng } }), points: [], poll: [] });
    expect(store.list().map((w) => w.role)).toEqual(["ua-eng"]);
    expect(told.at(-1)).toEqual([ua]);
    store.closeWindow({ role: "ua-eng" }, "test");
    expect(told.at(-1)).toEqual([]);
  });
});
