/**
 * Interop with independent implementations: pymodbus (Debian python3-pymodbus, run with
 * /usr/bin/python3) as client through the proxy and as device behind it, modbus-serial on the
 * other side, RTU over TCP to pymodbus's RTU framer, and RTU on a serial line through a socat
 * pseudo-terminal pair.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ModbusRTU, { ServerTCP } from "modbus-serial";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { modbusConfigSchema, type ModbusConfigInput } from "../../../protocols/modbus/config";
import { ModbusProxyService } from "../../../protocols/modbus/service";
import { until } from "../../helpers/fixture";
import { MemorySink, RawClient } from "./_harness";
import { freePort, PYTHON, pythonHas, runPyJson, SOCAT, startPyServer } from "./_peers";

const HAS_PYMODBUS = pythonHas("pymodbus");
const HAS_PYSERIAL = HAS_PYMODBUS && pythonHas("serial", "serial_asyncio");

const policy = {
  identities: [{ match: { address: "127.0.0.1" }, role: "ops" }],
  roles: {
    ops: {
      units: [1, 2],
      functions: ["read-write" as const],
      read: { holding: ["0-99"], input: ["0-99"], coil: ["0-99"] },
      write: { holding: ["10-19"] },
      values: [{ table: "holding" as const, address: "10-19", max: 1000 }],
    },
  },
};

const procs: ChildProcess[] = [];
const services: ModbusProxyService[] = [];
afterEach(async () => {
  for (const s of services.splice(0)) await s.stop();
});
afterAll(() => {
  for (const p of procs) p.kill("SIGKILL");
});

async function proxy(upstream: ModbusConfigInput["upstreams"]): Promise<{ port: number; sink: MemorySink }> {
  const sink = new MemorySink();
  const config = modbusConfigSchema.parse({
    listeners: [{ name: "plain", type: "tcp", listen: "127.0.0.1:0" }],
    upstreams: upstream,
    routes: [{ unit: "1-2", upstream: upstream![0]!.name }],
    policy,
  });
  const s = new ModbusProxyService({ config, events: sink });
  services.push(s);
  const b = await s.start();
  return { port: b[0]!.port, sink };
}

async function pyServer(kind: string): Promise<number> {
  const { proc, listening } = await startPyServer([kind, "0"]);
  procs.push(proc);
  return listening as number;
}

describe.skipIf(!HAS_PYMODBUS)(`pymodbus on both sides (needs ${PYTHON ?? "/usr/bin/python3"} with pymodbus)`, () => {
  it("pymodbus client -> proxy -> pymodbus TCP server", async () => {
    const dev = await pyServer("tcp");
    const { port } = await proxy([{ name: "py", type: "tcp", target: `127.0.0.1:${dev}` }]);
    const steps = Object.fromEntries((await runPyJson<{ step: string }>("client.py", [String(port)])).map((s) => [s.step, s]));
    expect(steps.read_holding).toEqual({ step: "read_holding", ok: true, registers: [0, 10, 20, 30, 40] });
    expect(steps.read_input).toEqual({ step: "read_input", ok: true, registers: [1002, 1003, 1004] });
    expect(steps.read_coils).toMatchObject({ ok: true, bits: [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0] });
    expect(steps.write_register_allowed).toMatchObject({ ok: true });
    expect(steps.read_back).toEqual({ step: "read_back", ok: true, registers: [77] });
    expect(steps.write_register_denied_value).toMatchObject({ ok: false, exception: 1 });
    expect(steps.write_registers_denied_range).toMatchObject({ ok: false, exception: 1 });
    expect(steps.write_coil_denied).toMatchObject({ ok: false, exception: 1 });
    expect(steps.read_unit_denied).toMatchObject({ ok: false, exception: 1 });
    expect(steps.rw_registers).toEqual({ step: "rw_registers", ok: true, registers: [0, 10] });
  });

  it("modbus-serial client -> proxy -> pymodbus RTU-over-TCP server", async () => {
    const dev = await pyServer("rtu-tcp");
    const { port } = await proxy([{ name: "dsrv", type: "rtu_tcp", target: `127.0.0.1:${dev}`, timeout_ms: 3000 }]);
    const c = new ModbusRTU();
    await c.connectTCP("127.0.0.1", { port });
    c.setTimeout(10_000);
    c.setID(2);
    expect((await c.readHoldingRegisters(3, 4)).data).toEqual([30, 40, 50, 60]);
    await c.writeRegisters(12, [100, 200]);
    expect((await c.readHoldingRegisters(12, 2)).data).toEqual([100, 200]);
    await expect(c.writeRegister(12, 5000)).rejects.toMatchObject({ modbusCode: 1 });
    c.setID(1);
    expect((await c.readInputRegisters(0, 2)).data).toEqual([1000, 1001]);
    // Unit 1 has its own registers: the write to unit 2 did not touch them.
    expect((await c.readHoldingRegisters(12, 1)).data).toEqual([120]);
    c.close(() => {});
  });
});

describe("modbus-serial ServerTCP behind the proxy", () => {
  it("forwards reads and allowed writes, never unauthorised ones", async () => {
    const regs = new Array(100).fill(0).map((_, i) => i);
    const seen: string[] = [];
    const devPort = await freePort();
    const server = new ServerTCP(
      {
        getHoldingRegister: (addr: number) => regs[addr] ?? 0,
        getInputRegister: (addr: number) => addr + 1,
        getCoil: () => false,
        setRegister: (addr: number, value: number) => {
          seen.push(`w${addr}=${value}`);
          regs[addr] = value;
        },
        setCoil: (addr: number) => {
          seen.push(`c${addr}`);
        },
      },
      { host: "127.0.0.1", port: devPort, unitID: 1 },
    );
    try {
      await once(server, "initialized");
      const { port } = await proxy([{ name: "ms", type: "tcp", target: `127.0.0.1:${devPort}` }]);
      const c = await RawClient.connect(port);
      expect(await c.request(1, "03 0005 0003")).toBe("0306000500060007");
      expect(await c.request(1, "06 000b 0009")).toBe("06000b0009");
      expect(await c.request(1, "06 0005 0009")).toBe("8601");
      expect(await c.request(1, "05 0001 ff00")).toBe("8501");
      expect(await c.request(1, "10 000a 0002 04 0001 2000")).toBe("9001"); // 0x2000 > max 1000
      expect(seen).toEqual(["w11=9"]);
      c.close();
    } finally {
      await new Promise((r) => server.close(() => r(undefined)));
    }
  });
});

describe.skipIf(!SOCAT || !HAS_PYSERIAL)(`RTU on a serial line via a socat pty pair (needs ${SOCAT ?? "socat"}, python3-serial and python3-serial-asyncio)`, () => {
  it("modbus-serial client -> proxy -> serial RTU bus -> pymodbus serial server (two units)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "gw-pty-"));
    const a = `${dir}/a`;
    const b = `${dir}/b`;
    const socat = spawn(SOCAT!, ["-d", "-d", `pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: "ignore" });
    procs.push(socat);
    await until(() => existsSync(a) && existsSync(b), 30_000, "socat's pseudo-terminal pair");
    procs.push((await startPyServer(["rtu-serial", b, "38400"])).proc);
    const { port, sink } = await proxy([
      { name: "bus", type: "rtu", device: a, baud: 38400, parity: "none", timeout_ms: 2000, dead_after: 2, dead_backoff: { min_ms: 5000, max_ms: 10000 } },
    ]);
    const c = new ModbusRTU();
    await c.connectTCP("127.0.0.1", { port });
    c.setTimeout(10_000);
    c.setID(1);
    let first: number[] | undefined;
    for (let i = 0; i < 10 && !first; i++) {
      try {
        first = (await c.readHoldingRegisters(0, 3)).data;
      } catch {
        await new Promise((r) => setTimeout(r, 300));
      }
    }
    expect(first).toEqual([0, 10, 20]);
    await c.writeRegister(15, 999);
    expect((await c.readHoldingRegisters(15, 1)).data).toEqual([999]);
    // Unit 2 exists on the bus; unit 1 keeps answering while unit 2 is also polled.
    c.setID(2);
    expect((await c.readInputRegisters(1, 2)).data).toEqual([1001, 1002]);
    void sink;
    c.close(() => {});
  });
});
