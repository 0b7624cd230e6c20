import { afterAll, describe, expect, it } from "vitest";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { Outbox } from "../../agent/outbox/store";
import { exited, gw, gwSpawn } from "../helpers/cli";
import { makeSite, tempDir, until } from "../helpers/fixture";
import { havePeer } from "../helpers/peers";
import { makePki } from "../helpers/tls";

/** What the engineer in the cabinet is told: a code, and the file, line and key at fault. */
describe("operator mistakes (built bundle)", () => {
  const t = tempDir();
  afterAll(t.cleanup);
  let n = 0;
  const site = () => makeSite(join(t.dir, `s${n}`), { device: `gw-${n++}` });
  const errorOf = (r: { stdout: string }) => (JSON.parse(r.stdout) as { error: { code: string; issues?: { code?: string; path: string; file?: string; line?: number; message: string }[] } }).error;

  it("config set reports a number's own error, not that it is not a string", () => {
    const s = site();
    for (const v of ["50", "0", "-5"]) {
      const r = gw(["config", "set", "heartbeat.interval_ms", v, "--config", s.cfgFile, "--json"]);
      expect(r.code).toBe(1);
      const e = errorOf(r);
      expect(e.code).toBe("CONFIG_INVALID");
      expect(e.issues).toEqual([expect.objectContaining({ path: "heartbeat.interval_ms", code: "too_small" })]);
    }
    const frac = errorOf(gw(["config", "set", "heartbeat.interval_ms", "1.5", "--config", s.cfgFile, "--json"]));
    expect(frac.issues?.[0]).toMatchObject({ path: "heartbeat.interval_ms", code: "invalid_type" });
    expect(frac.issues?.[0]?.message).not.toMatch(/string/);
  });

  it("every command prints its error one way: `window list --json` as `status --json` does", () => {
    const s = site(); // no daemon runs: the control socket does not answer
    for (const args of [["status"], ["window", "list"], ["modbus", "status"], ["maintenance", "list"], ["opcua", "pki", "list"]]) {
      const r = gw([...args, "--config", s.cfgFile, "--json"]);
      expect(r.code, args.join(" ")).toBe(1);
      expect(errorOf(r).code, args.join(" ")).toBe("CONTROL_UNAVAILABLE");
      expect(r.stderr, args.join(" ")).toMatch(/^error\[CONTROL_UNAVAILABLE\]: /);
      const plain = gw([...args, "--config", s.cfgFile]);
      expect(plain.stdout, args.join(" ")).toBe("");
      expect(plain.stderr, args.join(" ")).toMatch(/^error\[CONTROL_UNAVAILABLE\]: /);
    }
  });

  it.skipIf(!havePeer("/usr/bin/openssl"))("refuses an upstream TLS key readable by others at validate and at run, before any boot event", () => {
    const s = site();
    const pki = makePki(s.gwDir, ["gw"]);
    const loose = join(s.gwDir, "loose.key");
    copyFileSync(pki.clients.gw!.key, loose);
    chmodSync(loose, 0o644);
    for (const [k, v] of [["upstream.url", "mqtts://127.0.0.1:8883"], ["upstream.ca", pki.ca], ["upstream.cert", pki.clients.gw!.cert], ["upstream.key", loose], ["log.level", "info"]]) {
      expect(gw(["config", "set", k!, v!, "--config", s.cfgFile]).code).toBe(0);
    }
    const v = gw(["config", "validate", "--config", s.cfgFile, "--json"]);
    expect(v.code).toBe(1);
    expect(errorOf(v)).toMatchObject({ code: "KEY_PERMISSIONS", issues: [expect.objectContaining({ path: "upstream.key", code: "KEY_PERMISSIONS" })] });
    const run = gw(["run", "--config", s.cfgFile]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^error\[KEY_PERMISSIONS\]/m);
    expect(existsSync(join(s.gwDir, "data", "outbox.db"))).toBe(false);
  });

  it("config validate checks the policy file it names; run refuses it the same way", () => {
    const s = site();
    const policy = join(s.gwDir, "policy.yaml");
    writeFileSync(policy, "identities:\n  - match: { address: 10.0.0.300 }\n    role: scada\nroles:\n  scada: { units: [1], functions: [read-only] }\n");
    expect(gw(["config", "set", "modbus", JSON.stringify({ upstreams: [{ name: "plc", type: "tcp", target: "127.0.0.1:1502" }], policy_file: "policy.yaml" }), "--config", s.cfgFile]).code).toBe(0);
    const v = gw(["config", "validate", "--config", s.cfgFile, "--json"]);
    expect(v.code).toBe(1);
    expect(errorOf(v)).toMatchObject({ code: "POLICY_INVALID", issues: [expect.objectContaining({ file: policy, line: 2, path: "identities.0.match.address" })] });
    const run = gw(["run", "--config", s.cfgFile]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^error\[POLICY_INVALID\]/m);
    expect(existsSync(join(s.gwDir, "data", "outbox.db"))).toBe(false);
    writeFileSync(policy, "roles:\n  scada: { units: [1], functions: [read-only] }\n");
    expect(gw(["config", "validate", "--config", s.cfgFile]).code).toBe(0);
  });

  it("config validate refuses a site file naming a point that is not configured (file, line, key, a close name); run refuses it too", () => {
    const s = site();
    const siteFile = join(s.gwDir, "site.yaml");
    writeFileSync(siteFile, "name: station\nsignals:\n  L_T1: { kind: level }\n  F_PU1: { kind: flow }\nrelations:\n  - target: F_PU1\n    states: [S_PU1]\n    regressor: L_T1\n");
    const point = (address: number, kind: string) => ({ source: { modbus: { device: "plc", unit: 1, table: "holding", address } }, unit: "1", kind, range: { min: 0, max: 10 } });
    expect(gw(["config", "set", "modbus", JSON.stringify({ upstreams: [{ name: "plc", type: "tcp", target: "127.0.0.1:1502" }] }), "--config", s.cfgFile]).code).toBe(0);
    expect(gw(["config", "set", "points", JSON.stringify({ L_T1: point(0, "level"), F_PU1: point(1, "flow"), S_PU2: point(2, "state") }), "--config", s.cfgFile]).code).toBe(0);
    expect(gw(["config", "set", "detection.site", "site.yaml", "--config", s.cfgFile]).code).toBe(0);
    const v = gw(["config", "validate", "--config", s.cfgFile, "--json"]);
    expect(v.code).toBe(1);
    expect(errorOf(v)).toMatchObject({ code: "SITE_INVALID", issues: [expect.objectContaining({ file: siteFile, line: 7, path: "relations.0.states.0", code: "SITE_INVALID" })] });
    expect(errorOf(v).issues?.[0]?.message).toMatch(/^S_PU1 is not among the configured points \(did you mean S_PU2\?\) \(named by detection.site at /);
    const plain = gw(["config", "validate", "--config", s.cfgFile]);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toContain(`${siteFile}:7: relations.0.states.0: S_PU1 is not among the configured points (did you mean S_PU2?)`);
    const run = gw(["run", "--config", s.cfgFile]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^error\[SITE_INVALID\]/m);
    expect(run.stderr).toContain(`${siteFile}:7: relations.0.states.0`);
    expect(existsSync(join(s.gwDir, "data", "outbox.db"))).toBe(false);
    writeFileSync(siteFile, "name: station\nrelations:\n  - { target: F_PU1, states: [S_PU2], regressor: L_T1 }\n");
    expect(gw(["config", "validate", "--config", s.cfgFile]).code).toBe(0);
  });

  it("a Modbus port in use is LISTEN_FAILED, and the boot it ended records why", async () => {
    const s = site();
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", () => r()));
    try {
      const port = (taken.address() as AddressInfo).port;
      const modbus = { listeners: [{ name: "plain", type: "tcp", listen: `127.0.0.1:${port}` }], upstreams: [{ name: "plc", type: "tcp", target: "127.0.0.1:1502" }] };
      expect(gw(["config", "set", "modbus", JSON.stringify(modbus), "--config", s.cfgFile]).code).toBe(0);
      const run = gw(["run", "--config", s.cfgFile]);
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/^error\[LISTEN_FAILED\]/m);
      expect(run.stderr).toContain(`127.0.0.1:${port}`);
    } finally {
      taken.close();
    }
    const ob = new Outbox(join(s.gwDir, "data", "outbox.db"), 1024 ** 3);
    try {
      const events = ob.readAfter(0, 100).map((r) => JSON.parse(r.body) as { seq: number; ocsf: { activity_id: number; unmapped?: { error_type?: string; code?: string; stop?: { reason: string } } } });
      expect(events[0]!.seq).toBe(0);
      expect(events.find((e) => e.ocsf.unmapped?.error_type === "start_failed")?.ocsf.unmapped?.code).toBe("LISTEN_FAILED");
      expect(events.at(-1)!.ocsf).toMatchObject({ activity_id: 4, unmapped: { stop: { reason: "start failed: LISTEN_FAILED" } } });
    } finally {
      ob.close();
    }
  });

  it("config unset removes a key and says so; a required key stays, with the schema's reason", () => {
    const s = site();
    expect(gw(["config", "set", "heartbeat.interval_ms", "5000", "--config", s.cfgFile]).code).toBe(0);
    const r = gw(["config", "unset", "heartbeat.interval_ms", "--config", s.cfgFile]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("heartbeat.interval_ms removed (was 5000); takes effect when the daemon restarts");
    expect(gw(["config", "get", "heartbeat.interval_ms", "--config", s.cfgFile]).stdout.trim()).toBe("60000");
    const again = gw(["config", "unset", "heartbeat.interval_ms", "--config", s.cfgFile]);
    expect(again.stdout).toContain("was not set");
    const required = gw(["config", "unset", "device.id", "--config", s.cfgFile]);
    expect(required.code).toBe(1);
    expect(required.stderr).toMatch(/^error\[CONFIG_INVALID\]: refusing to unset device\.id/);
  });

  it("events tail -n takes 0..1000 only; a missing section and control errors say so once", async () => {
    const s = site();
    const set = gw(["config", "set", "upstream.client_id", "gw-x", "--config", s.cfgFile]);
    expect(set.stdout).toContain("(was unset)");
    const daemon = gwSpawn(["run", "--config", s.cfgFile]);
    try {
      await until(() => gw(["status", "--config", s.cfgFile]).code === 0, 15_000, "the daemon");
      for (const n of ["abc", "-5", "1.5", "1001"]) {
        const r = gw(["events", "tail", "-n", n, "--config", s.cfgFile]);
        expect(r.code, `-n ${n}`).toBe(2);
        expect(r.stderr).toMatch(/^error\[USAGE\]/);
      }
      const none = gw(["events", "tail", "-n", "0", "--json", "--config", s.cfgFile]);
      expect(none.code).toBe(0);
      expect(none.stdout).toBe("");
      expect(gw(["events", "tail", "-n", "1", "--json", "--config", s.cfgFile]).stdout.trim().split("\n")).toHaveLength(1);
      for (const cmd of [["opcua", "status"], ["modbus", "status"], ["window", "list"]]) {
        const r = gw([...cmd, "--config", s.cfgFile]);
        expect(r.code, cmd.join(" ")).toBe(1);
        // One code, printed once: `error[CONFIG_INCOMPLETE]: opcua is not running: ...`.
        expect(r.stderr).toMatch(/^error\[CONFIG_INCOMPLETE\]: (?!CONFIG_INCOMPLETE)/);
      }
    } finally {
      daemon.kill("SIGTERM");
      await exited(daemon);
    }
  });

  it("init and data paths: PATH_UNUSABLE naming the path, never a spin or INTERNAL, nothing created", () => {
    const file = join(t.dir, "a-file");
    writeFileSync(file, "x");
    const underFile = gw(["init", "--dir", join(file, "x"), "--device-id", "x"]);
    expect(underFile.code).toBe(1);
    expect(underFile.stderr).toMatch(/^error\[PATH_UNUSABLE\].*a-file/);
    if (existsSync("/proc/self")) {
      // Node's recursive mkdir loops for ever here; gw() would time out (code -1).
      const proc = gw(["init", "--dir", "/proc/nope", "--device-id", "x"]);
      expect(proc.code).toBe(1);
      expect(proc.stderr).toMatch(/^error\[PATH_UNUSABLE\].*\/proc\/nope/);
      // The SOC side too: it spun at full CPU until killed.
      const soc = gw(["soc", "keys", "init", "--dir", "/proc/nope"]);
      expect(soc.code).toBe(1);
      expect(soc.stderr).toMatch(/^error\[PATH_UNUSABLE\]: --dir \/proc\/nope cannot be used/);
    }
    const s = site();
    const typo = join(t.dir, "var-lib-typo", "gatewarden", "outbox.db");
    expect(gw(["config", "set", "buffer.path", typo, "--config", s.cfgFile]).code).toBe(0);
    const v = gw(["config", "validate", "--config", s.cfgFile, "--json"]);
    expect(errorOf(v)).toMatchObject({ code: "PATH_UNUSABLE", issues: [expect.objectContaining({ path: "buffer.path", line: expect.any(Number) })] });
    const run = gw(["run", "--config", s.cfgFile]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^error\[PATH_UNUSABLE\]/m);
    expect(existsSync(join(t.dir, "var-lib-typo"))).toBe(false);
  });

  it("detect's and soc's number options name the option and its range; --propose-site refuses options it would ignore", () => {
    const csv = join(t.dir, "readings.csv");
    writeFileSync(csv, "timestamp,a\n2020-01-01 00:00:00,1\n2020-01-01 00:00:01,2\n");
    const cases: [string[], RegExp][] = [
      [["detect", "--input", csv, "--close-after", "abc"], /^error\[USAGE\]: --close-after abc: give a whole number of quiet rows from 1 to 10000$/m],
      [["detect", "--input", csv, "--close-after", "0"], /^error\[USAGE\]: --close-after 0: give a whole number of quiet rows from 1 to 10000$/m],
      [["detect", "--input", csv, "--budget-per-day", "-3"], /^error\[USAGE\]: --budget-per-day -3: give a number of incidents per signal per day from 0\.01 to 10000$/m],
      [["detect", "--input", csv, "--propose-site", "--site", "x.yaml", "--events"], /^error\[USAGE\]: --propose-site prints the site file inferred from --input \(and --learn\) and exits: it takes no --site, --events$/m],
      [["soc", "verify", csv, "--clock-skew-ms", "5m"], /^error\[USAGE\]: --clock-skew-ms 5m: give a whole number of milliseconds$/m],
    ];
    for (const [args, message] of cases) {
      const r = gw(args);
      expect({ code: r.code, stderr: r.stderr }, args.join(" ")).toEqual({ code: 2, stderr: expect.stringMatching(message) });
    }
  });

  it("soc receive given the sealing key as its TLS key names the file: KEY_INVALID, not ERR_OSSL_UNSUPPORTED", () => {
    const soc = join(t.dir, "soc-keys");
    expect(gw(["soc", "keys", "init", "--dir", soc]).code).toBe(0);
    const r = gw(["soc", "receive", "--broker", "mqtts://127.0.0.1:1", "--dir", soc, "--out", join(soc, "out.jsonl"), "--key", join(soc, "soc.key")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error\[KEY_INVALID\]/);
    expect(r.stderr).toContain(join(soc, "soc.key"));
  });

  it("soc receive names the output or state file it cannot use: PATH_UNUSABLE, not INTERNAL", () => {
    const soc = join(t.dir, "soc-paths");
    expect(gw(["soc", "keys", "init", "--dir", soc]).code).toBe(0);
    const receive = (out: string) => gw(["soc", "receive", "--broker", "mqtt://127.0.0.1:1", "--dir", soc, "--out", out]);
    for (const [out, why] of [
      [soc, "it is a directory (EISDIR)"],
      [join(t.dir, "no-such-dir", "soc.jsonl"), "its directory does not exist (ENOENT)"],
    ] as const) {
      const r = receive(out);
      expect(r.code, out).toBe(1);
      expect(r.stderr.trim(), out).toBe(`error[PATH_UNUSABLE]: SOC output file (--out) ${out} cannot be used: ${why}`);
    }
    // receiver.db damaged, or a directory in its place: named, and the file is left as it was.
    const state = join(soc, "receiver.db");
    writeFileSync(state, Buffer.alloc(8192, 0x5a));
    let r = receive(join(soc, "out.jsonl"));
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`error[PATH_UNUSABLE]: SOC receiver state (in --dir) ${state} cannot be used: it is not a SQLite database (SQLITE_NOTADB)`);
    expect(readFileSync(state)).toEqual(Buffer.alloc(8192, 0x5a));
    rmSync(state);
    mkdirSync(state);
    r = receive(join(soc, "out.jsonl"));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error\\[PATH_UNUSABLE\\]: SOC receiver state \\(in --dir\\) ${state} cannot be used: it cannot be opened .*\\(SQLITE_CANTOPEN\\)$`, "m"));
  });

  it("keys export-public --out names a path it cannot write: PATH_UNUSABLE, not INTERNAL", () => {
    const s = site();
    for (const [out, why] of [
      [t.dir, "it is a directory (EISDIR)"],
      [join(t.dir, "no-such-dir", "gw.trust.json"), "its directory does not exist (ENOENT)"],
    ] as const) {
      const r = gw(["keys", "export-public", "--config", s.cfgFile, "--out", out]);
      expect(r.code, out).toBe(1);
      expect(r.stderr.trim(), out).toBe(`error[PATH_UNUSABLE]: file ${out} cannot be used: ${why}`);
    }
    const out = join(t.dir, "gw.trust.json");
    expect(gw(["keys", "export-public", "--config", s.cfgFile, "--out", out]).code).toBe(0);
    expect(JSON.parse(readFileSync(out, "utf8"))).toMatchObject({ device: expect.any(String) });
  });

  it("policy test exits 1 on deny and 0 on allow, so scripts can use it", () => {
    const p = join(t.dir, "exit-policy.yaml");
    writeFileSync(p, "identities:\n  - { match: { address: 10.0.0.1 }, role: s }\nroles:\n  s: { units: [1], functions: [read-only], read: { holding: ['0-9'] } }\n");
    expect(gw(["policy", "test", "--policy", p, "--from", "10.0.0.1", "--function", "6", "--address", "1", "--values", "5"]).code).toBe(1);
    expect(gw(["policy", "test", "--policy", p, "--from", "10.0.0.1", "--function", "3", "--address", "1"]).code).toBe(0);
  });
});
