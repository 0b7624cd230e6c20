import { afterEach, describe, expect, it } from "vitest";
import { until } from "../../helpers/fixture";
import { RawClient, startRig, type Rig } from "./_harness";

const policy = {
  identities: [{ match: { address: "127.0.0.1" }, role: "scada" }],
  roles: { scada: { units: [1], functions: ["read-only" as const], read: { holding: ["0-9"] } } },
};

const rigs: Rig[] = [];
afterEach(async () => {
  for (const r of rigs.splice(0)) await r.close();
});

describe("clients no identity rule matches cannot lock SCADA out", () => {
  it("caps unknown connections apart from known ones, closes silent ones fast, and SCADA gets every place it needs", async () => {
    const rig = await startRig(policy, { limits: { max_connections: 16, max_connections_per_identity: 8, max_unknown_connections: 6, unknown_idle_timeout_ms: 400, idle_timeout_ms: 60_000 } });
    rigs.push(rig);
    // 16 silent connections from 8 unknown addresses: as many as the listener takes in total.
    const unknown = await Promise.all(Array.from({ length: 16 }, (_, i) => RawClient.connect(rig.port, `127.0.0.${2 + (i % 8)}`)));
    await until(() => unknown.filter((c) => c.closed).length >= 10, 5000, "the unknown connections past the cap to be refused");
    expect(rig.service.status().listeners[0]!.unknown_connections).toBe(6);
    const refused = rig.sink.drafts.filter((d) => (d.ocsf.unmapped as { modbus?: { limit?: string } }).modbus?.limit === "unknown");
    expect(refused.length).toBeGreaterThan(0);
    // SCADA opens its 8 connections (its per-identity limit) while the unknown ones are held:
    // every one is served.
    const scada = await Promise.all(Array.from({ length: 8 }, () => RawClient.connect(rig.port)));
    const answers = await Promise.all(scada.map((c) => c.request(1, "03 0000 0001")));
    expect(answers).toEqual(Array(8).fill("03020000"));
    // The silent unknown connections are closed after unknown_idle_timeout_ms; SCADA's stay.
    await until(() => unknown.every((c) => c.closed), 5000, "silent unknown connections to be closed");
    expect(scada.some((c) => c.closed)).toBe(false);
    expect(rig.service.status().listeners[0]!.unknown_connections).toBe(0);
    // An unknown client that talks is denied (exception 01), and counted against the cap.
    const talker = await RawClient.connect(rig.port, "127.0.0.20");
    expect(await talker.request(1, "03 0000 0001")).toBe("8301");
    scada.forEach((c) => c.close());
    talker.close();
  });
});
