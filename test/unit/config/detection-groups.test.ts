import { afterAll, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import pino from "pino";
import { loadConfig } from "../../../agent/config/load";
import { startDetection } from "../../../agent/detection/start";
import { DaemonError } from "../../../agent/core/errors";
import type { EventDraft } from "../../../agent/core/events";
import { prng } from "../../helpers/prng";
import { tempDir } from "../../helpers/fixture";

const MODBUS = ["modbus:", "  upstreams:", '    - { name: plc, type: tcp, target: "127.0.0.1:1502" }'];
const point = (name: string, address: number, device = "plc") =>
  [`  ${name}:`, `    source: { modbus: { device: ${device}, unit: 1, table: holding, address: ${address} } }`, "    unit: bar", "    kind: pressure", "    range: { min: 0, max: 100 }"];

function issuesOf(fn: () => unknown): { path: string; line?: number; message: string }[] {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DaemonError);
    expect((e as DaemonError).code).toBe("CONFIG_INVALID");
    return (e as unknown as { issues: { path: string; line?: number; message: string }[] }).issues;
  }
  throw new Error("config was accepted");
}

describe("detection groups and references between config sections", () => {
  const t = tempDir();
  afterAll(t.cleanup);
  const file = join(t.dir, "gatewarden.yaml");
  const write = (lines: string[]) => writeFileSync(file, ["device:", "  id: gw-01", ...lines, ""].join("\n"), { mode: 0o640 });

  it("accepts groups of configured points", () => {
    write([...MODBUS, "points:", ...point("P_IN", 0), ...point("P_OUT", 1), "detection:", "  groups:", "    pump1: [P_IN, P_OUT]"]);
    expect(loadConfig(file).config.detection.groups).toEqual({ pump1: ["P_IN", "P_OUT"] });
  });

  it("names the line of a group member that is not a point, a duplicate member and a one-point group", () => {
    write([...MODBUS, "points:", ...point("P_IN", 0), ...point("P_OUT", 1), "detection:", "  groups:", "    pump1: [P_IN, P_OTU]", "    pump2: [P_IN, P_IN]", "    pump3: [P_IN]"]);
    expect(issuesOf(() => loadConfig(file))).toEqual([
      expect.objectContaining({ path: "detection.groups.pump1.1", line: 19, message: "no point named P_OTU" }),
      expect.objectContaining({ path: "detection.groups.pump2.1", line: 20, message: "P_IN is listed twice" }),
      expect.objectContaining({ path: "detection.groups.pump3", line: 21, message: "a group needs at least 2 points" }),
    ]);
  });

  it("refuses a point whose Modbus device or OPC UA server is not configured, and an OPC UA point with no poll interval", () => {
    write([...MODBUS, "points:", ...point("P_IN", 0, "plc2")]);
    expect(issuesOf(() => loadConfig(file))).toEqual([expect.objectContaining({ path: "points.P_IN.source.modbus.device", line: 8, message: "no modbus upstream named plc2" })]);
    write(["points:", ...point("P_IN", 0)]);
    expect(issuesOf(() => loadConfig(file))).toEqual([expect.objectContaining({ path: "points.P_IN.source.modbus.device", message: "modbus points need a modbus section with this upstream" })]);
    const ua = ["    unit: C", "    kind: pressure", "    range: { min: 0, max: 100 }"];
    write([...MODBUS, "points:", "  T:", '    source: { opcua: { server: plc, node_id: "ns=2;s=T" } }', ...ua, "    poll_interval_ms: 1000"]);
    expect(issuesOf(() => loadConfig(file))).toEqual([expect.objectContaining({ path: "points.T.source.opcua.server", line: 8, message: "opcua points need an opcua section with this server" })]);
    const OPCUA = ["opcua:", "  servers:", '    - { name: ua1, endpoint: "opc.tcp://10.0.0.5:4840", server_certificate: ua1.pem }'];
    write([...OPCUA, "points:", "  T:", '    source: { opcua: { server: ua2, node_id: "ns=2;s=T" } }', ...ua]);
    expect(issuesOf(() => loadConfig(file))).toEqual([
      expect.objectContaining({ path: "points.T.source.opcua.server", line: 8, message: "no opcua server named ua2" }),
      expect.objectContaining({ path: "points.T.poll_interval_ms", message: "OPC UA points are read by polling: set poll_interval_ms" }),
    ]);
    write([...OPCUA, "points:", "  T:", '    source: { opcua: { server: ua1, node_id: "nsu=urn:plc;s=T" } }', ...ua, "    poll_interval_ms: 1000"]);
    const c = loadConfig(file).config;
    expect(c.opcua!.servers[0]).toMatchObject({ security_mode: "SignAndEncrypt", security_policy: "Basic256Sha256", server_certificate: join(t.dir, "ua1.pem") });
    expect(c.opcua!.pki_dir).toBe(join(t.dir, "data/opcua-pki"));
  });

  it("a configured group reaches the daemon's engine and reports a joint shift no single signal shows", async () => {
    // Three pressures of one pump with independent noise; after the change each moves by about
    // 1.5 of its own noise spreads, which is inside any one signal's normal band for its mean.
    const run = async (groups: Record<string, string[]>) => {
      const events: EventDraft[] = [];
      const points = Object.fromEntries(["A", "B", "C"].map((p) => [p, { source: { modbus: { device: "plc", unit: 1, table: "holding" as const, address: 0, type: "uint16" as const, word_order: "big" as const, scale: 1, offset: 0 } }, unit: "bar", kind: "pressure" as const, range: { min: 0, max: 100 } }]));
      const d = await startDetection({
        points,
        config: { state_path: join(t.dir, `det-${Object.keys(groups).length}.db`), save_interval_ms: 60_000, groups, open_after: 1, close_after: 3, budget_per_day: 0.15, correlation_window_ms: 900_000, utc_offset_min: 0, disabled: [] },
        sink: { record: (e) => void events.push(e) },
        log: pino({ level: "silent" }),
      });
      const rnd = prng(7);
      const t0 = Date.UTC(2024, 0, 1);
      for (let i = 0; i < 3000; i++) {
        const shift = i >= 2500 ? 1.5 : 0;
        for (const p of ["A", "B", "C"]) d.readings.reading({ point: p, value: 50 + (rnd() - 0.5) * 2 * 1.7 + shift, ts: t0 + i * 10_000, source: "poll", quality: "good" });
      }
      d.stop();
      return events.filter((e) => e.class === "finding").map((e) => ({ detectors: (e.ocsf.unmapped as { detectors: string[] }).detectors, at: e.time }));
    };
    // Per-signal detectors may see the new extremes; none can tell that the three moved together.
    const joint = (fs: { detectors: string[]; at: number | undefined }[]) => fs.filter((f) => f.detectors.includes("group_shift"));
    expect(joint(await run({}))).toEqual([]);
    const withGroup = joint(await run({ pump: ["A", "B", "C"] }));
    expect(withGroup.length).toBeGreaterThan(0);
    expect(withGroup[0]!.at).toBeGreaterThanOrEqual(Date.UTC(2024, 0, 1) + 2500 * 10_000);
  });
});
