import { describe, expect, it } from "vitest";
import type { Config } from "../../../agent/config/schema";
import { restartNeeded, takesEffect } from "../../../agent/reload";

/** What a reload takes comes from each source's registry entry (`reloadable`), not from reload.ts. */
describe("reload: which changes wait for a restart", () => {
  it("takes the keys a source lists as reloadable, points and detection; the rest at a restart", () => {
    expect(takesEffect("modbus.policy")).toBe("reload");
    expect(takesEffect("modbus.policy_file")).toBe("reload");
    expect(takesEffect("modbus.listeners")).toBe("restart");
    expect(takesEffect("opcua.servers")).toBe("restart");
    expect(takesEffect("points.level.poll_interval_ms")).toBe("reload");
    expect(takesEffect("detection.groups")).toBe("reload");
    expect(takesEffect("detection.state_path")).toBe("restart");
    expect(takesEffect("upstream.url")).toBe("restart");
  });

  it("names a changed point of a source whose points a reload does not rebuild, and nothing for one whose points it does", () => {
    const modbusPoint = { source: { modbus: { device: "plc", register: 1 } } };
    const opcuaPoint = { source: { opcua: { server: "plc", node_id: "ns=1;s=Tank.Level" } } };
    const cfg = (points: Record<string, unknown>, policy = "a") => ({ modbus: { policy_file: policy, listeners: [1] }, points }) as unknown as Config;
    expect(restartNeeded(cfg({ m: modbusPoint }), cfg({ m: modbusPoint, m2: modbusPoint }, "b"))).toEqual([]);
    expect(restartNeeded(cfg({ m: modbusPoint, o: opcuaPoint }), cfg({ m: modbusPoint, o: { source: { opcua: { ...opcuaPoint.source.opcua, node_id: "ns=1;s=Other" } } } }))).toEqual(["points (opcua)"]);
    expect(restartNeeded(cfg({}), cfg({ m: modbusPoint }))).toEqual(["points"]);
    expect(restartNeeded(cfg({}), { ...cfg({}), modbus: { policy_file: "a", listeners: [2] } } as unknown as Config)).toEqual(["modbus.listeners"]);
  });
});
