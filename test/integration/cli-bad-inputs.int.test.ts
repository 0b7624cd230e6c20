import { afterAll, describe, expect, it } from "vitest";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { createServer, type AddressInfo, type Server } from "node:net";
import { join } from "node:path";
import { BIN, exited, gw, gwSpawn } from "../helpers/cli";
import { makeSite, tempDir, until } from "../helpers/fixture";

/** Bad inputs and environments each get a named code and a sentence naming what is wrong. */
describe("bad inputs and environments (built bundle)", () => {
  const t = tempDir();
  afterAll(t.cleanup);
  let n = 0;
  const site = () => makeSite(join(t.dir, `s${n}`), { device: `gw-${n++}` });
  const errorOf = (r: { stdout: string }) => (JSON.parse(r.stdout) as { error: { code: string; message: string } }).error;

  it("sim water|energy --listen on a taken port or an address not this host's: LISTEN_FAILED naming the option, not an unhandled 'error' stack", async () => {
    const taken: Server = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", () => r()));
    try {
      const at = `127.0.0.1:${(taken.address() as AddressInfo).port}`;
      for (const [kind, listen] of [["water", at], ["energy", at], ["energy", "192.0.2.1:1502"]] as const) {
        const r = gw(["sim", kind, "--listen", listen]);
        expect(r.code, `${kind} ${listen}`).toBe(1);
        expect(r.stderr, `${kind} ${listen}`).toMatch(new RegExp(`^error\\[LISTEN_FAILED\\]: the ${kind} simulator \\(--listen\\) cannot listen on ${listen.replace(/\./g, "\\.")}: `));
        expect(r.stderr).not.toMatch(/Unhandled|node:events|\n\s+at /);
      }
    } finally {
      taken.close();
    }
  });

  it("decommission --timeout-ms beyond 24 h is USAGE naming the option and its range, not a timer overflow", () => {
    const s = site();
    for (const v of ["1073741824", "1e9", "86400001", "0"]) {
      const r = gw(["decommission", "--yes", "--timeout-ms", v, "--config", s.cfgFile, "--json"]);
      expect(r.code, v).toBe(2);
      expect(errorOf(r), v).toEqual({ code: "USAGE", message: `--timeout-ms ${v}: give a whole number of milliseconds from 1 to 86400000` });
      expect(r.stderr, v).not.toMatch(/TimeoutOverflowWarning/);
    }
  });
  it("a YAML 'billion laughs' file (anchors whose aliases multiply) is CONFIG_PARSE, SITE_INVALID or POLICY_INVALID naming the file, not INTERNAL", () => {
    const s = site();
    const laughs = join(s.gwDir, "laughs.yaml");
    const rows = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]'];
    for (let i = 1; i < 9; i++) rows.push(`${"abcdefghi"[i]}: &${"abcdefghi"[i]} [${Array(9).fill(`*${"abcdefghi"[i - 1]}`).join(", ")}]`);
    writeFileSync(laughs, rows.join("\n") + "\n");
    const csv = join(s.gwDir, "in.csv");
    writeFileSync(csv, "ts,a\n2024-01-01T00:00:00Z,1\n");
    const decisions = join(s.gwDir, "decisions.jsonl");
    writeFileSync(decisions, JSON.stringify({ ts: 1000, listener: "cli", identity: "ip:10.0.0.5", transport: "tcp", address: "10.0.0.5", unit: 1, fc: 3, function: "read_holding_registers", allow: true, rule: "x", request: "0300000002" }) + "\n");
    const expanded = `${laughs}: cannot be expanded: Excessive alias count indicates a resource exhaustion attack`;
    for (const [args, code] of [
      [["config", "validate", "--config", laughs], "CONFIG_PARSE"],
      [["config", "show", "--config", laughs], "CONFIG_PARSE"],
      [["config", "get", "log.level", "--config", laughs], "CONFIG_PARSE"],
      [["config", "set", "log.level", "debug", "--config", laughs], "CONFIG_PARSE"],
      [["detect", "--input", csv, "--site", laughs], "SITE_INVALID"],
      [["policy", "test", "--policy", laughs, "--from", "10.0.0.1", "--function", "3", "--address", "0", "--quantity", "1"], "POLICY_INVALID"],
      [["policy", "replay", "--policy", laughs, "--input", decisions], "POLICY_INVALID"],
      [["modbus", "proxy", "--listen", "127.0.0.1:0", "--upstream", "tcp://127.0.0.1:1", "--policy", laughs], "POLICY_INVALID"],
    ] as const) {
      const r = gw([...args]);
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.stderr, args.join(" ")).toBe(`error[${code}]: ${expanded}\n`);
    }
  });
  it("config unset of a key whose section is absent says it was not set; set makes missing sections; a value in the way or a file that is not a mapping is named", () => {
    const s = site();
    const before = readFileSync(s.cfgFile, "utf8");
    for (const key of ["update.release_keys", "detection.close_after", "integrity.interval_ms", "upstream.url"]) {
      const r = gw(["config", "unset", key, "--config", s.cfgFile]);
      expect(r.stderr, key).toBe("");
      expect(r.code, key).toBe(0);
      expect(r.stdout, key).toBe(`${key} was not set in ${s.cfgFile}; nothing changed\n`);
    }
    expect(readFileSync(s.cfgFile, "utf8")).toBe(before);
    expect(gw(["config", "set", "detection.close_after", "3", "--config", s.cfgFile]).code).toBe(0);
    expect(gw(["config", "get", "detection.close_after", "--config", s.cfgFile]).stdout).toBe("3\n");
    // Through a value: an unknown key, or a known one whose section holds a value.
    const through = gw(["config", "set", "device.id.x", "1", "--config", s.cfgFile, "--json"]);
    expect(through.code).toBe(1);
    expect(errorOf(through)).toEqual({ code: "CONFIG_KEY_UNKNOWN", message: "device.id.x is not a config key" });
    writeFileSync(s.cfgFile, readFileSync(s.cfgFile, "utf8") + "simulate: 5\n");
    const inTheWay = gw(["config", "set", "simulate.events_per_s", "2", "--config", s.cfgFile, "--json"]);
    expect(inTheWay.code).toBe(1);
    expect(errorOf(inTheWay).code).toBe("CONFIG_INVALID");
    expect(errorOf(inTheWay).message).toMatch(new RegExp(`^refusing to set simulate\\.events_per_s:\n${s.cfgFile}:\\d+: simulate: holds a value, not a section of keys`));
    // A file that is not a mapping of keys.
    const bad = join(s.gwDir, "bad.yaml");
    for (const [text, what] of [["", "empty"], ["null\n", "null"], ["42\n", "a single number"], ["- a\n- b\n", "a list"], ["\u0001\u0002 binary", "a single string"]] as const) {
      writeFileSync(bad, text);
      for (const args of [["set", "log.level", "debug"], ["unset", "log.level"]]) {
        const r = gw(["config", ...args, "--config", bad]);
        expect(r.code, `${args[0]} ${JSON.stringify(text)}`).toBe(1);
        expect(r.stderr, `${args[0]} ${JSON.stringify(text)}`).toBe(`error[CONFIG_INVALID]: ${bad}: the file is ${what}, not a YAML mapping of config keys (device:, upstream:, ...)\n`);
      }
      expect(readFileSync(bad, "utf8")).toBe(text);
    }
  });
  it("control.socket that cannot be bound (a directory or file there, too long, not permitted) is refused naming the key and path; a stale socket is still replaced", async () => {
    const s = site();
    const data = join(s.gwDir, "data");
    mkdirSync(data, { recursive: true });
    const set = (v: string) => gw(["config", "set", "control.socket", v, "--config", s.cfgFile]);
    // A directory or a file at the path: named at validate and run, and left where it is.
    const dir = join(data, "a-dir");
    mkdirSync(dir);
    const file = join(data, "a-file");
    writeFileSync(file, "keep me");
    for (const [at, what] of [[dir, "a directory"], [file, "a file that is not a socket"]] as const) {
      expect(set(at).code).toBe(0);
      const sentence = `control.socket ${at} cannot be used: ${what} is there (it is not removed: move it, or choose another path)`;
      const v = gw(["config", "validate", "--config", s.cfgFile]);
      expect(v.code, at).toBe(1);
      expect(v.stderr, at).toMatch(new RegExp(`^error\\[PATH_UNUSABLE\\]: ${s.cfgFile}:\\d+: control\\.socket: ${sentence.replace(/[.()]/g, "\\$&")}\n$`));
      const run = gw(["run", "--config", s.cfgFile]);
      expect(run.code, at).toBe(1);
      expect(run.stderr, at).toContain(`error[PATH_UNUSABLE]: ${s.cfgFile}:`);
      expect(run.stderr, at).toContain(sentence);
      expect(run.stderr).not.toMatch(/INTERNAL|EADDRINUSE/);
    }
    expect(statSync(dir).isDirectory()).toBe(true);
    expect(readFileSync(file, "utf8")).toBe("keep me");
    // Longer than a Unix socket path can be: as written (the schema), or once made absolute.
    const long = set("/tmp/" + "a".repeat(100) + ".sock");
    expect(long.code).toBe(1);
    expect(long.stderr).toMatch(/^error\[CONFIG_INVALID\]: refusing to set control\.socket = .*\n.*:\d+: control\.socket: at most 107 bytes: a Unix socket's path cannot be longer\n$/);
    const rel = "data/" + "b".repeat(95) + ".sock";
    expect(set(rel).code).toBe(0);
    const abs = join(s.gwDir, rel);
    for (const args of [["config", "validate"], ["run"]]) {
      const r = gw([...args, "--config", s.cfgFile]);
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.stderr, args.join(" ")).toContain(`error[PATH_UNUSABLE]: ${s.cfgFile}:`);
      expect(r.stderr, args.join(" ")).toContain(`control.socket ${abs} cannot be used: it is ${Buffer.byteLength(abs)} bytes long, and a Unix socket's path can be at most 107`);
    }
    expect(existsSync(join(s.gwDir, "data", "outbox.db"))).toBe(false);
    // Bind refused by the system (/proc: not permitted): PATH_UNUSABLE, not INTERNAL.
    expect(set("/proc/gw-test.sock").code).toBe(0);
    const proc = gw(["run", "--config", s.cfgFile]);
    expect(proc.code).toBe(1);
    expect(proc.stderr).toMatch(/error\[PATH_UNUSABLE\]: .*control\.socket \/proc\/gw-test\.sock cannot be used: (permission denied|not permitted)/);
    // A socket left by a killed daemon (nobody listens) is still removed and the daemon starts.
    const stale = join(data, "stale.sock");
    spawnSync(process.execPath, ["-e", `require("node:net").createServer().listen(${JSON.stringify(stale)}, () => process.exit(0))`]);
    expect(statSync(stale).isSocket()).toBe(true);
    expect(set(stale).code).toBe(0);
    const daemon = gwSpawn(["run", "--config", s.cfgFile]);
    try {
      await until(() => gw(["status", "--config", s.cfgFile]).code === 0, 20_000, "the daemon on the stale socket's path");
    } finally {
      daemon.kill("SIGTERM");
      await exited(daemon);
    }
  });
  it("a port outside 1-65535 (0 only to listen on any free port) is CONFIG_INVALID naming the key, or USAGE naming the option, not ERR_SOCKET_BAD_PORT", () => {
    const s = site();
    const base = readFileSync(s.cfgFile, "utf8");
    const modbus = (listen: string, target: string) => `modbus:\n  listeners:\n    - { name: p, type: tcp, listen: "${listen}" }\n  upstreams:\n    - { name: plc, type: tcp, target: "${target}" }\n  routes:\n    - { unit: 1, upstream: plc }\n`;
    for (const [extra, key, message] of [
      [modbus("127.0.0.1:99999", "127.0.0.1:1502"), "modbus.listeners.0.listen", "port 99999 is out of range: 0 to 65535 (0: any free port)"],
      [modbus("127.0.0.1:0", "127.0.0.1:0"), "modbus.upstreams.0.target", "port 0 is out of range: 1 to 65535"],
      [modbus("127.0.0.1:0", "127.0.0.1:65536"), "modbus.upstreams.0.target", "port 65536 is out of range: 1 to 65535"],
      ['opcua:\n  servers:\n    - { name: s, endpoint: "opc.tcp://h:99999" }\n', "opcua.servers.0.endpoint", "port 99999 is out of range: 1 to 65535"],
    ] as const) {
      writeFileSync(s.cfgFile, base + extra);
      for (const args of [["config", "validate"], ["doctor"], ["run"]]) {
        const r = gw([...args, "--config", s.cfgFile]);
        expect(r.code, `${args.join(" ")} ${key}`).toBe(1);
        // doctor lists it as a failed check on stdout (`CONFIG_INVALID: ...`); the others print `error[CONFIG_INVALID]: ...`.
        expect(r.stdout + r.stderr, `${args.join(" ")} ${key}`).toMatch(new RegExp(`(error\\[CONFIG_INVALID\\]|FAIL  config  CONFIG_INVALID): ${s.cfgFile}:\\d+: ${key.replace(/\./g, "\\.")}: ${message.replace(/[()]/g, "\\$&")}\n`));
        expect(r.stdout + r.stderr).not.toMatch(/INTERNAL|ERR_SOCKET_BAD_PORT/);
      }
    }
    writeFileSync(s.cfgFile, base);
    const url = gw(["config", "set", "upstream.url", "mqtts://broker:99999", "--config", s.cfgFile]);
    expect(url.code).toBe(1);
    expect(url.stderr).toMatch(/^error\[CONFIG_INVALID\]: refusing to set upstream\.url = "mqtts:\/\/broker:99999":\n.*:\d+: upstream\.url: must be mqtt:\/\/HOST\[:PORT\] or mqtts:\/\/HOST\[:PORT\], with a valid host and a port from 1 to 65535\n$/);
    for (const [args, message] of [
      [["--listen", "127.0.0.1:99999", "--upstream", "tcp://127.0.0.1:1502"], "--listen 127.0.0.1:99999: port 99999 is out of range: 0 to 65535 (0: any free port)"],
      [["--listen", "127.0.0.1:0", "--upstream", "tcp://x:99999"], "--upstream tcp://x:99999: target: port 99999 is out of range: 1 to 65535"],
      [["--listen", "127.0.0.1:0", "--upstream", "rtu-tcp://x:0"], "--upstream rtu-tcp://x:0: target: port 0 is out of range: 1 to 65535"],
    ] as const) {
      const r = gw(["modbus", "proxy", ...args]);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr, args.join(" ")).toBe(`error[USAGE]: ${message}\n`);
    }
    const soc = gw(["soc", "receive", "--broker", "mqtt://127.0.0.1:99999", "--dir", s.socDir, "--out", join(s.gwDir, "out.jsonl")]);
    expect(soc.code).toBe(2);
    expect(soc.stderr).toBe('error[USAGE]: --broker "mqtt://127.0.0.1:99999" must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], with a valid host and a port from 1 to 65535\n');
  });

  it("an option given an empty value is USAGE naming it (`init --dir \"\"` wrote into the current directory)", () => {
    const cwd = join(t.dir, "cwd");
    mkdirSync(cwd);
    for (const args of [["init", "--dir", "", "--device-id", "gw-e"], ["soc", "keys", "init", "--dir", ""], ["config", "schema", "--out", ""]]) {
      const r = spawnSync(process.execPath, [BIN, ...args], { cwd, encoding: "utf8" });
      expect(r.status, args.join(" ")).toBe(2);
      expect(r.stderr, args.join(" ")).toMatch(/^error\[USAGE\]: --(dir|out) was given an empty value\n$/);
      expect(r.stdout, args.join(" ")).toBe("");
    }
    expect(existsSync(join(cwd, "gatewarden.yaml")) || existsSync(join(cwd, "soc.key"))).toBe(false);
  });

  it("policy test --from that is not an IP address is USAGE, not a deny", () => {
    const s = site();
    const policy = join(s.gwDir, "p.yaml");
    writeFileSync(policy, "identities:\n  - { match: { address: 10.0.0.1 }, role: s }\nroles:\n  s: { units: [1], functions: [read-only], read: { holding: ['0-9'] } }\n");
    const r = gw(["policy", "test", "--policy", policy, "--from", "notip", "--function", "3", "--address", "1"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('error[USAGE]: --from "notip" is not an IPv4 or IPv6 address\n');
  });
});
