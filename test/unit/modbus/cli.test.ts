import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { afterAll, describe, expect, it, vi } from "vitest";
import { ControlServer } from "../../../agent/control/server";
import { isDaemonError } from "../../../agent/core/errors";
import type { CliDeps } from "../../../agent/commands/_deps";
import { registerModbus } from "../../../agent/commands/modbus";
import { DecisionLines } from "../../../protocols/modbus/policy/decision-lines";
import { registerPolicy } from "../../../agent/commands/policy";
import { registerWindow } from "../../../agent/commands/window";
import { parseUpstreamUrl } from "../../../protocols/modbus/requests";
import { createServer, type AddressInfo } from "node:net";
import type { DecisionRecord } from "../../../protocols/modbus/policy/decision-record";
import { parsePolicyText } from "../../../protocols/modbus/policy/schema";
import { ModbusPolicy } from "../../../protocols/modbus/policy/engine";
import { registerWindowControl } from "../../../protocols/modbus/window-control";
import { WindowStore } from "../../../protocols/modbus/policy/window-store";
import { SimDevice } from "../../../agent/demo/sim-server";
import { RawClient } from "../../integration/modbus/_harness";

const dir = mkdtempSync(join(tmpdir(), "gw-mbcli-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const policyYaml = `
identities:
  - match: { address: 10.0.0.0/24 }
    role: scada
roles:
  scada:
    units: [1]
    functions: [read-only]
    read: { holding: ["0-99"] }
  eng:
    units: [1]
    functions: [read-write]
    read: { holding: ["0-99"] }
    write: { holding: ["10-19"] }
    write_window: required
`;
const policyFile = join(dir, "policy.yaml");
writeFileSync(policyFile, policyYaml);

async function run(args: string[], extra: Partial<CliDeps> = {}): Promise<{ out: string; err: string; error?: unknown; exitCode?: number }> {
  let out = "";
  let err = "";
  let exitCode: number | undefined;
  const program = new Command("gatewarden").exitOverride().option("--socket <path>");
  const deps: CliDeps = { resolveSocket: async (o) => String(o.socket), stdout: (s) => (out += s), stderr: (s) => (err += s), setExitCode: (c) => (exitCode = c), ...extra };
  for (const register of [registerModbus, registerPolicy, registerWindow]) register(program, deps);
  try {
    await program.parseAsync(["node", "gatewarden", ...args]);
    return { out, err, ...(exitCode === undefined ? {} : { exitCode }) };
  } catch (error) {
    return { out, err, error };
  }
}

describe("policy test", () => {
  it("answers allow/deny with the rule, and exit status 1 on deny", async () => {
    const ok = await run(["policy", "test", "--policy", policyFile, "--from", "10.0.0.5", "--function", "3", "--address", "99"]);
    expect(ok.out).toBe("allow by roles.scada.read.holding\n");
    expect(ok.exitCode).toBeUndefined();
    const r = await run(["policy", "test", "--policy", policyFile, "--from", "10.0.0.5", "--function", "3", "--address", "100", "--json"]);
    expect(JSON.parse(r.out)).toMatchObject({ allow: false, rule: "roles.scada.read.holding", addresses: "holding 100" });
    expect(r.exitCode).toBe(1);
    expect((await run(["policy", "test", "--policy", policyFile, "--role", "eng", "--function", "6", "--address", "10", "--values", "5"])).out).toContain("deny by roles.eng.write_window");
    expect((await run(["policy", "test", "--policy", policyFile, "--role", "eng", "--function", "6", "--address", "10", "--values", "5", "--window"])).out).toBe("allow by roles.eng.write.holding\n");
    expect((await run(["policy", "test", "--policy", policyFile, "--from", "10.0.0.5", "--pdu", "0f00000004010f"])).out).toContain("deny by roles.scada.functions");
    const bad = await run(["policy", "test", "--policy", policyFile, "--function", "3"]);
    expect(isDaemonError(bad.error, "USAGE")).toBe(true);
  });
});

describe("policy learn and replay", () => {
  const rec = (over: Partial<DecisionRecord>): DecisionRecord => ({ ts: 1000, listener: "cli", identity: "ip:10.0.0.5", transport: "tcp", address: "10.0.0.5", unit: 1, fc: 3, function: "read_holding_registers", allow: true, rule: "x", request: "0300000002", ...over });
  const records = [
    rec({}),
    rec({ request: "0300050003" }),
    rec({ request: "0300640001" }),
    rec({ request: "06000a0032", fc: 6, ts: 2000 }),
    rec({ request: "06000a0040", fc: 6, ts: 3000 }),
    rec({ transport: "tls", address: "10.9.9.9", role: "eng", identity: "role:eng", unit: 2, request: "1000140002040001ffff", fc: 16 }),
    rec({ request: undefined, fc: 90, allow: false, rule: "frame" }),
  ];
  const input = join(dir, "traffic.jsonl");
  writeFileSync(input, records.map((r) => JSON.stringify(r)).join("\n") + "\nnot json\n");

  it("learns a policy that allows exactly the recorded traffic", async () => {
    const r = await run(["policy", "learn", "--input", input]);
    expect(r.error).toBeUndefined();
    const learned = parsePolicyText(r.out);
    expect(learned.roles["client-10-0-0-5"]).toMatchObject({ units: ["1"], functions: [3, 6], read: { holding: ["0-1", "5-7", "100"] }, write: { holding: ["10"] }, values: [{ table: "holding", address: 10, min: 50, max: 64 }] });
    expect(learned.roles.eng).toMatchObject({ units: ["2"], write: { holding: ["20-21"] } });
    const out = join(dir, "learned.yaml");
    writeFileSync(out, r.out);
    const rep = await run(["policy", "replay", "--policy", out, "--input", input, "--json"]);
    expect(JSON.parse(rep.out)).toMatchObject({ total: 7, replayed: 6, skipped: 1, allowed: 6, denied: 0 });
  });

  it("learns only from allowed traffic unless --include-denied", async () => {
    // Recorded under the read-only preset: the write was denied, and must not be proposed.
    const denied = join(dir, "denied.jsonl");
    writeFileSync(denied, [rec({}), rec({ request: "06000a0032", fc: 6, allow: false, rule: "read-only.functions" })].map((r) => JSON.stringify(r)).join("\n") + "\n");
    const strict = parsePolicyText((await run(["policy", "learn", "--input", denied])).out);
    expect(strict.roles["client-10-0-0-5"]).toMatchObject({ functions: [3] });
    expect(strict.roles["client-10-0-0-5"]!.write).toEqual({});
    const loose = parsePolicyText((await run(["policy", "learn", "--input", denied, "--include-denied"])).out);
    expect(loose.roles["client-10-0-0-5"]).toMatchObject({ functions: [3, 6], write: { holding: ["10"] } });
  });

  it("counts a line with `count` (repeats of an allowed read) as that many requests; a bad count is not a record", async () => {
    const counted = join(dir, "counted.jsonl");
    writeFileSync(counted, [rec({ count: 5, last_ts: 1090 }), rec({ request: "0300640001", count: 2 }), rec({ request: "0300c80001", count: 0 }), rec({ request: "0300c80001", count: 1.5 }), rec({ request: "0300c80001", count: "3" as unknown as number })].map((r) => JSON.stringify(r)).join("\n") + "\n");
    const rep = JSON.parse((await run(["policy", "replay", "--policy", policyFile, "--input", counted, "--json"])).out);
    expect(rep).toMatchObject({ total: 7, replayed: 7, allowed: 5, denied: 2, newly_denied: 2, by_rule: { "roles.scada.read.holding": 2 } });
    const learned = await run(["policy", "learn", "--input", counted]);
    expect(learned.out).toContain("from 7 recorded requests");
    expect(parsePolicyText(learned.out).roles["client-10-0-0-5"]).toMatchObject({ read: { holding: ["0-1", "100"] } });
  });

  it("replays a stricter candidate and reports what it would block", async () => {
    const r = await run(["policy", "replay", "--policy", policyFile, "--input", input, "--json"]);
    const rep = JSON.parse(r.out);
    expect(rep).toMatchObject({ replayed: 6, allowed: 2, denied: 4, newly_denied: 4 });
    expect(rep.by_rule).toEqual({ "roles.scada.read.holding": 1, "roles.scada.functions": 2, "roles.eng.units": 1 });
    const text = await run(["policy", "replay", "--policy", policyFile, "--input", input]);
    expect(text.out).toContain("6 requests replayed (1 malformed skipped): 2 allowed, 4 denied");
  });
});

describe("policy learn and replay: input and output they cannot use", () => {
  const good = JSON.stringify({ ts: 1000, listener: "cli", identity: "ip:10.0.0.5", transport: "tcp", address: "10.0.0.5", unit: 1, fc: 3, function: "read_holding_registers", allow: true, rule: "x", request: "0300000002" });

  it("an input with no decision record at all (garbage, /proc/self/status, empty) is INPUT_INVALID naming it, not an empty policy", async () => {
    const garbage = join(dir, "garbage.txt");
    writeFileSync(garbage, "garbage\nmore\n");
    const empty = join(dir, "empty.txt");
    writeFileSync(empty, "");
    for (const [f, text] of [[garbage, /--input .*garbage\.txt holds no decision record: none of its 2 non-blank lines is one .*line 1 is not/], ["/proc/self/status", /--input \/proc\/self\/status holds no decision record/], [empty, /--input .*empty\.txt is empty/]] as const) {
      for (const args of [["policy", "learn", "--input", f], ["policy", "replay", "--policy", policyFile, "--input", f]]) {
        const r = await run(args);
        expect(isDaemonError(r.error, "INPUT_INVALID"), `${args.join(" ")}: ${String(r.error)}`).toBe(true);
        expect((r.error as Error).message).toMatch(text);
        expect(r.out).toBe("");
      }
    }
  });

  it("lines that are not decision records are counted and said, in learn and replay", async () => {
    const mixed = join(dir, "mixed.jsonl");
    writeFileSync(mixed, `${good}\nnot json\nnull\n${good}\n`);
    const learned = await run(["policy", "learn", "--input", mixed]);
    expect(learned.err).toBe(`warning: --input ${mixed}: 2 lines are not decision records and were skipped (the first at line 2)\n`);
    expect(learned.out).toContain("from 2 recorded requests (2 input lines skipped: not decision records)");
    const rep = await run(["policy", "replay", "--policy", policyFile, "--input", mixed, "--json"]);
    expect(JSON.parse(rep.out)).toMatchObject({ replayed: 2, lines_skipped: 2 });
    expect(rep.err).toMatch(/2 lines are not decision records and were skipped/);
  });

  it("policy learn --out a directory or under a missing directory is PATH_UNUSABLE naming --out", async () => {
    const input = join(dir, "one.jsonl");
    writeFileSync(input, `${good}\n`);
    for (const [out, why] of [[dir, /it is a directory \(EISDIR\)/], [join(dir, "missing", "p.yaml"), /its directory does not exist \(ENOENT\)/], ["/proc/gw-policy.yaml", /.+\(E[A-Z]+\)/]] as const) {
      const r = await run(["policy", "learn", "--input", input, "--out", out]);
      expect(isDaemonError(r.error, "PATH_UNUSABLE"), `${out}: ${String(r.error)}`).toBe(true);
      expect((r.error as Error).message).toMatch(new RegExp(`^--out: file ${out.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} cannot be used: ${why.source}`));
    }
  });
});

describe("window commands through the control socket", () => {
  it("open, list and close reach the daemon's window store", async () => {
    const sockPath = join(dir, "ctl", "control.sock");
    const server = new ControlServer(sockPath);
    const events: string[] = [];
    const policy = new ModbusPolicy(parsePolicyText(policyYaml));
    const store = new WindowStore({ roles: () => policy.roleNames(), writes: (r) => policy.canWrite(r), events: { opened: (w) => events.push(`open ${w.role}`), closed: (w, how) => events.push(`${how} ${w.role}`) } });
    registerWindowControl(server, () => store);
    await server.listen();
    try {
      // The OS user is recorded, whatever the environment says (no USER under systemd or cron).
      const env = { USER: process.env.USER, SUDO_USER: process.env.SUDO_USER };
      delete process.env.USER;
      delete process.env.SUDO_USER;
      const o = await run(["--socket", sockPath, "window", "open", "--role", "eng", "--minutes", "15", "--reason", "replace pump 2 setpoint", "--json"]).finally(() => Object.assign(process.env, JSON.parse(JSON.stringify(env))));
      expect(o.error).toBeUndefined();
      const w = JSON.parse(o.out);
      expect(w).toMatchObject({ role: "eng", reason: "replace pump 2 setpoint", opened_by: userInfo().username });
      // A window for a read-only role would allow nothing: refused.
      const readOnly = await run(["--socket", sockPath, "window", "open", "--role", "scada", "--minutes", "5", "--reason", "x"]);
      expect(isDaemonError(readOnly.error, "USAGE")).toBe(true);
      expect(w.expires_at - w.opened_at).toBe(15 * 60_000);
      expect(store.isOpen("eng", Date.now())).toBe(true);
      const l = await run(["--socket", sockPath, "window", "list", "--json"]);
      expect(JSON.parse(l.out)).toHaveLength(1);
      const bad = await run(["--socket", sockPath, "window", "open", "--role", "nobody", "--minutes", "5", "--reason", "x"]);
      expect(isDaemonError(bad.error, "USAGE")).toBe(true);
      const c = await run(["--socket", sockPath, "window", "close", "--id", w.id]);
      expect(c.out).toBe("Closed 1 write window(s).\n");
      expect(store.isOpen("eng", Date.now())).toBe(false);
      expect(events).toEqual(["open eng", "closed eng"]);
      expect((await run(["--socket", sockPath, "window", "list"])).out).toBe("No write window is open.\n");
      // The lead's CLI finds the socket from --config.
      let asked: unknown;
      const viaConfig = await run(["window", "list", "--config", "/etc/gatewarden/gatewarden.yaml", "--json"], {
        resolveSocket: async (o) => {
          asked = o.config;
          return sockPath;
        },
      });
      expect(asked).toBe("/etc/gatewarden/gatewarden.yaml");
      expect(JSON.parse(viaConfig.out)).toEqual([]);
    } finally {
      store.dispose();
      await server.close();
    }
  });
});

describe("modbus proxy (commissioning mode)", () => {
  it("parses upstream URLs", () => {
    expect(parseUpstreamUrl("tcp://10.0.0.2:502")).toMatchObject({ type: "tcp", target: "10.0.0.2:502" });
    expect(parseUpstreamUrl("rtu:/dev/ttyUSB0?baud=9600&parity=none")).toMatchObject({ type: "rtu", device: "/dev/ttyUSB0", baud: 9600, parity: "none" });
    expect(parseUpstreamUrl("rtu-tcp://10.0.0.3:4001")).toMatchObject({ type: "rtu_tcp", target: "10.0.0.3:4001" });
    expect(() => parseUpstreamUrl("rtu:/dev/x?baud=12")).toThrow();
  });

  it.each([
    [[], "8301", false],
    [["--preset", "read-only"], "03020000", true],
  ])("prints one JSON line per decision (%j)", async (flags, expected, allow) => {
    const dev = new SimDevice({ record: true });
    const dport = await dev.listen();
    const ac = new AbortController();
    let port = 0;
    const listening = new Promise<void>((r) => {
      void run(["modbus", "proxy", "--listen", "127.0.0.1:0", "--upstream", `tcp://127.0.0.1:${dport}`, ...flags], {
        signal: ac.signal,
        onListening: (p) => {
          port = p;
          r();
        },
      }).then((res) => done(res));
    });
    let done: (r: { out: string; err: string; error?: unknown }) => void = () => {};
    const finished = new Promise<{ out: string; err: string; error?: unknown }>((r) => (done = r));
    await listening;
    const c = await RawClient.connect(port);
    expect(await c.request(1, "03 0000 0001")).toBe(expected);
    expect(await c.request(1, "06 0000 0001")).toBe("8601");
    c.close();
    ac.abort();
    const res = await finished;
    expect(res.error).toBeUndefined();
    const lines = res.out.trim().split("\n").map((l) => JSON.parse(l) as DecisionRecord);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ identity: "ip:127.0.0.1", unit: 1, fc: 3, addresses: "holding 0", allow, request: "0300000001" });
    expect(lines[1]).toMatchObject({ fc: 6, allow: false, values: [1] });
    expect(dev.received).toEqual(allow ? ["1:0300000001"] : []);
    await dev.close();
  });

  it("counts repeats of an allowed read on one line; every write, exception and malformed request keeps its own", async () => {
    // Only setTimeout is held (the 100 ms batch), so every decision lands in the one batch
    // written at the end, however slow the machine.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const dev = new SimDevice();
    try {
      const dport = await dev.listen();
      const ac = new AbortController();
      let port = 0;
      let done: (r: { out: string; err: string; error?: unknown }) => void = () => {};
      const finished = new Promise<{ out: string; err: string; error?: unknown }>((r) => (done = r));
      await new Promise<void>((r) => {
        void run(["modbus", "proxy", "--listen", "127.0.0.1:0", "--upstream", `tcp://127.0.0.1:${dport}`, "--preset", "read-write"], {
          signal: ac.signal,
          onListening: (p) => {
            port = p;
            r();
          },
        }).then((res) => done(res));
      });
      const c = await RawClient.connect(port);
      const c2 = await RawClient.connect(port, "127.0.0.2");
      const asked: string[] = [];
      for (const pdu of ["03 0000 0001", "03 0000 0001", "06 0000 0005", "06 0000 0005", "03 0000 0001", "03 0000 0002", "0c", "0c", "5a 00", "5a 00", "03 0000 0001"]) asked.push(await c.request(1, pdu));
      asked.push(await c2.request(1, "03 0000 0001"));
      expect(asked.filter((a) => a === "8c01" || a === "da01")).toHaveLength(4);
      c.close();
      c2.close();
      ac.abort();
      const res = await finished;
      expect(res.error).toBeUndefined();
      const lines = res.out.trim().split("\n").map((l) => JSON.parse(l) as DecisionRecord);
      expect(lines.map((l) => [l.address, l.request ?? l.rule, l.count ?? 1, l.exception])).toEqual([
        ["127.0.0.1", "0300000001", 4, undefined],
        ["127.0.0.1", "0600000005", 1, undefined],
        ["127.0.0.1", "0600000005", 1, undefined],
        ["127.0.0.1", "0300000002", 1, undefined],
        ["127.0.0.1", "0c", 1, 1],
        ["127.0.0.1", "0c", 1, 1],
        ["127.0.0.1", "frame", 1, 1],
        ["127.0.0.1", "frame", 1, 1],
        ["127.0.0.2", "0300000001", 1, undefined],
      ]);
      expect(lines[0]!.last_ts).toBeGreaterThanOrEqual(lines[0]!.ts);
    } finally {
      vi.useRealTimers();
      await dev.close();
    }
  });

  it("--max-in-flight forwards pipelined requests together: a device that answers only once it holds four gets them", async () => {
    // The device answers nothing until four requests have arrived: with one request in flight
    // (the default) the proxy would wait for the first answer for ever.
    const pending: Buffer[] = [];
    const server = createServer((s) => {
      s.on("data", (d: Buffer) => {
        for (let off = 0; off + 12 <= d.length; off += 12) pending.push(Buffer.from(d.subarray(off, off + 12)));
        if (pending.length >= 4) for (const f of pending.splice(0)) s.write(Buffer.concat([f.subarray(0, 4), Buffer.from([0, 5, f[6]!, 3, 2, 0, 7])]));
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const dport = (server.address() as AddressInfo).port;
    const ac = new AbortController();
    let port = 0;
    const listening = new Promise<void>((r) => {
      void run(["modbus", "proxy", "--listen", "127.0.0.1:0", "--upstream", `tcp://127.0.0.1:${dport}`, "--preset", "read-only", "--max-in-flight", "4"], {
        signal: ac.signal,
        onListening: (p) => {
          port = p;
          r();
        },
      });
    });
    await listening;
    const clients = await Promise.all([0, 1, 2, 3].map(() => RawClient.connect(port)));
    const answers = await Promise.all(clients.map((c) => c.request(1, "03 0000 0001")));
    expect(answers).toEqual(["03020007", "03020007", "03020007", "03020007"]);
    for (const c of clients) c.close();
    ac.abort();
    server.close();
  });

  it("--upstream-connections and --max-in-flight are refused for a serial bus", async () => {
    const r = await run(["modbus", "proxy", "--listen", "127.0.0.1:0", "--upstream", "rtu:/dev/ttyUSB9", "--max-in-flight", "4"]);
    expect(isDaemonError(r.error, "USAGE")).toBe(true);
  });
});

describe("DecisionLines", () => {
  const rec = (over: Partial<DecisionRecord>): DecisionRecord => ({ ts: 1, listener: "cli", identity: "ip:10.0.0.5", transport: "tcp", address: "10.0.0.5", unit: 1, fc: 3, function: "read_holding_registers", allow: true, rule: "r", request: "0300000001", ...over });

  it("writes the lines of up to 100 ms at once, in order; repeats are one line with a count, lines without a repeat key each their own", () => {
    vi.useFakeTimers();
    try {
      const writes: string[] = [];
      const d = new DecisionLines((s) => writes.push(s));
      d.add(rec({}), "a");
      d.add(rec({ ts: 2, allow: false, rule: "deny", request: "0600000001", fc: 6 }));
      d.add(rec({ ts: 3, allow: false, rule: "deny", request: "0600000001", fc: 6 }));
      vi.advanceTimersByTime(60);
      expect(d.repeat("a", 4)).toBe(true);
      expect(d.repeat("b", 5)).toBe(false);
      d.add(rec({ ts: 5, identity: "ip:10.0.0.6", address: "10.0.0.6" }), "b");
      d.add(rec({ ts: 6, request: "0300000002" }), "c");
      d.add(rec({ ts: 7 }), "a");
      vi.advanceTimersByTime(39);
      expect(writes).toEqual([]);
      vi.advanceTimersByTime(1);
      expect(writes).toHaveLength(1);
      const lines = writes[0]!.trim().split("\n").map((l) => JSON.parse(l) as DecisionRecord);
      expect(lines.map((l) => [l.ts, l.allow, l.count, l.last_ts])).toEqual([
        [1, true, 3, 7],
        [2, false, undefined, undefined],
        [3, false, undefined, undefined],
        [5, true, undefined, undefined],
        [6, true, undefined, undefined],
      ]);
      // A new batch counts afresh.
      expect(d.repeat("a", 8)).toBe(false);
      d.add(rec({ ts: 8 }), "a");
      d.flush();
      expect(JSON.parse(writes[1]!)).toMatchObject({ ts: 8 });
      expect(JSON.parse(writes[1]!).count).toBeUndefined();
    } finally {
      vi.useRealTimers();
    }
  });

  it("writes at once at the size or line bound", () => {
    const writes: string[] = [];
    const bySize = new DecisionLines((s) => writes.push(s), 300);
    bySize.add(rec({}), "a");
    expect(writes).toEqual([]);
    bySize.add(rec({ allow: false, rule: "deny".repeat(40) }));
    expect(writes).toHaveLength(1);
    const byLines = new DecisionLines((s) => writes.push(s), 1 << 20, 100, 3);
    for (let i = 0; i < 3; i++) byLines.add(rec({ request: `030000000${i + 1}` }), String(i));
    expect(writes).toHaveLength(2);
    expect(writes[1]!.trim().split("\n")).toHaveLength(3);
    bySize.flush();
    byLines.flush();
  });
});
