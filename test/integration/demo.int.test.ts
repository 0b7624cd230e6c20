import { describe, expect, it } from "vitest";
import { gwSpawn, exited } from "../helpers/cli";

describe("gatewarden demo", () => {
  it("runs the plant, the proxy, the detectors, an outage and the SOC end to end, and every event verifies", async () => {
    const demo = gwSpawn(["demo", "--duration", "9", "--rate", "20", "--json"]);
    const code = await exited(demo);
    const out = demo.output();
    const summary = JSON.parse(out.slice(out.indexOf("{\n"))) as { ok: boolean; committed: number; soc_verified: number; problems: Record<string, number> };
    expect(code, out).toBe(0);
    expect(summary.ok).toBe(true);
    expect(summary.soc_verified).toBe(summary.committed);
  }, 90_000);
});
