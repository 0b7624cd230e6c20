import { describe, expect, it } from "vitest";
import { gwSpawn, exited } from "../helpers/cli";
import type { DemoSummary } from "../../agent/commands/demo";

describe("gatewarden demo", () => {
  it("runs the plant, the proxy, the detectors, an outage and the SOC end to end; each client gets what its identity allows, and the SOC sees it", async () => {
    const demo = gwSpawn(["demo", "--duration", "9", "--rate", "20", "--json"]);
    const code = await exited(demo);
    const out = demo.output();
    const summary = JSON.parse(out.slice(out.indexOf("{\n"))) as DemoSummary;
    expect(code, out).toBe(0);
    expect(summary.ok).toBe(true);
    expect(summary.soc_verified).toBe(summary.committed);
    // Each identity is a client of its own (SCADA 127.0.0.2, engineer .3, intruder .4).
    expect(summary.outcomes).toMatchObject({
      scada_write: "denied (exception 01 illegal function)",
      intruder_write: "denied (exception 01 illegal function)",
      intruder_diagnostics: "denied (exception 01 illegal function)",
      engineer_write_no_window: "denied (exception 01 illegal function)",
      engineer_write: "allowed (0600640640)",
      level_spoof: expect.stringMatching(/^detected after /),
      meter_rollback: expect.stringMatching(/^detected after /),
    });
    expect(summary.outcomes.intruder_smuggle).toMatch(/^(denied \(exception 03 illegal data value\)|closed).*; the setpoint is unchanged \(1450 rpm\)$/);
    expect(summary.setpoint_rpm).toEqual({ before: 1450, after: 1600 });
    // The SOC verified the denials of each client, the smuggling frame and the spoofed level.
    const d = summary.soc_findings.modbus_denied;
    expect(d["ip:127.0.0.2"]).toBe(1);
    expect(d["ip:127.0.0.4"]).toBe(2);
    expect(d["ip:127.0.0.3"]).toBe(1);
    expect(summary.soc_findings.modbus_malformed).toBe(1);
    expect(summary.soc_findings.level_out_of_range).toBeGreaterThanOrEqual(1);
    expect(summary.soc_findings.meter_rollback).toBeGreaterThanOrEqual(1);
  }, 120_000);
});
