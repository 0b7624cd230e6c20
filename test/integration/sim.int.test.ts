import ModbusRTU from "modbus-serial";
import { afterEach, describe, expect, it } from "vitest";
import { exited, gw, gwSpawn } from "../helpers/cli";
import { until } from "../helpers/fixture";
import { parse } from "yaml";
import { pointsSchema } from "../../agent/config/points";

/** `gatewarden sim`: the simulators as a Modbus TCP client (modbus-serial) sees them. */
describe("gatewarden sim", () => {
  const children: ReturnType<typeof gwSpawn>[] = [];
  afterEach(async () => {
    for (const c of children.splice(0)) {
      c.kill("SIGTERM");
      expect(await exited(c)).toBe(0);
    }
  });

  async function start(args: string[]): Promise<{ port: number; client: ModbusRTU }> {
    const c = gwSpawn(["sim", ...args, "--listen", "127.0.0.1:0", "--json"]);
    children.push(c);
    await until(() => c.output().includes("\n"), 20_000, "the simulator's ready line");
    const port = Number((JSON.parse(c.output().split("\n")[0]!) as { listen: string }).listen.split(":")[1]);
    const client = new ModbusRTU();
    await client.connectTCP("127.0.0.1", { port });
    client.setID(1);
    client.setTimeout(2000);
    return { port, client };
  }
  const u32 = (d: number[]) => d[0]! * 65536 + d[1]!;
  /** Reads until the value satisfies `ok` (a condition, not a sleep), at most 20 s. */
  async function readUntil(read: () => Promise<number>, ok: (v: number) => boolean, what: string): Promise<number> {
    const end = Date.now() + 20_000;
    for (;;) {
      const v = await read();
      if (ok(v)) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what} (last ${v})`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  it("energy: the main meter carries the sub-meters plus losses; counters advance; P = V·I·PF per phase", async () => {
    const { client } = await start(["energy", "--seed", "7", "--speed", "3600"]);
    const first = u32((await client.readInputRegisters(0, 2)).data);
    const main = (await client.readInputRegisters(0, 10)).data;
    const subs = await Promise.all([100, 200, 300].map(async (a) => (await client.readInputRegisters(a, 10)).data));
    const subKw = subs.reduce((s, r) => s + r[2]! / 100, 0);
    expect(main[2]! / 100).toBeGreaterThan(subKw);
    expect(main[2]! / 100).toBeLessThan(subKw * 1.05 + 1);
    for (const r of [main, ...subs]) {
      const p = (r[3]! / 10) * (r[6]! / 10) * (r[9]! / 1000) * 3 / 1000;
      expect(Math.abs(p - r[2]! / 100)).toBeLessThan(0.05 + 0.02 * (r[2]! / 100));
    }
    const later = await readUntil(async () => u32((await client.readInputRegisters(0, 2)).data), (v) => v > first, "the main counter to advance");
    expect(later).toBeGreaterThan(first);
    client.close(() => {});
  });

  it("water: a spoofed level is served after --attack-after", async () => {
    const { client } = await start(["water", "--seed", "3", "--attack", "spoof-level", "--attack-after", "1"]);
    const before = (await client.readInputRegisters(30, 1)).data[0]!;
    expect(before).toBeLessThanOrEqual(650);
    expect(await readUntil(async () => (await client.readInputRegisters(30, 1)).data[0]!, (v) => v === 987, "the spoofed level")).toBe(987);
    client.close(() => {});
  });

  it("energy rollback: the main counter goes back by 100 kWh", async () => {
    const { client } = await start(["energy", "--seed", "9", "--attack", "rollback", "--attack-after", "1"]);
    const before = u32((await client.readInputRegisters(0, 2)).data);
    const now = await readUntil(async () => u32((await client.readInputRegisters(0, 2)).data), (v) => v <= before - 900, "the rolled-back counter");
    expect(before - now).toBeGreaterThanOrEqual(900);
    client.close(() => {});
  });

  it("--print-points gives points the config schema accepts; a bad attack or address is a usage error", () => {
    const r = gw(["sim", "energy", "--print-points", "--device", "feeder"]);
    expect(r.code).toBe(0);
    const pts = (parse(r.stdout) as { points: Record<string, { source: { modbus: { address: number } } }> }).points;
    expect(Object.keys(pts)).toHaveLength(36);
    expect(pointsSchema.safeParse(pts).success).toBe(true);
    expect(pts.EV_kW!.source.modbus.address).toBe(302);
    expect(gw(["sim", "water", "--attack", "nope"]).stderr).toMatch(/^error\[USAGE\]: --attack nope/m);
    expect(gw(["sim", "water", "--listen", "nope"]).code).toBe(2);
  });
});
