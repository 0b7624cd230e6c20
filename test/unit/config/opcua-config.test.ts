import { describe, expect, it } from "vitest";
import { opcuaConfigSchema } from "../../../protocols/opcua/config";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../../../agent/config/load";
import { DaemonError } from "../../../agent/core/errors";
import { tempDir } from "../../helpers/fixture";
import { planReads, resolveNodeId, valueOf, type OpcuaPolledPoint } from "../../../protocols/opcua/poller";

const server = (over: Record<string, unknown> = {}) => ({ name: "plc", endpoint: "opc.tcp://10.0.0.5:4840", ...over });
const issues = (cfg: unknown) => {
  const r = opcuaConfigSchema.safeParse(cfg);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
};

describe("opcua config", () => {
  it("defaults to SignAndEncrypt with Basic256Sha256 and bounded messages", () => {
    const c = opcuaConfigSchema.parse({ servers: [server()] });
    expect(c.servers[0]).toMatchObject({ security_mode: "SignAndEncrypt", security_policy: "Basic256Sha256", allow_unsecured: false, request_timeout_ms: 5000 });
    expect(c).toMatchObject({ pki_dir: "data/opcua-pki", max_message_bytes: 4 * 1024 ** 2, max_chunk_count: 64 });
  });

  it("reads points by subscription with polling as the fallback unless points_mode says otherwise", () => {
    expect(opcuaConfigSchema.parse({ servers: [server()] }).servers[0]!.points_mode).toBe("auto");
    for (const m of ["subscription", "poll"]) expect(opcuaConfigSchema.parse({ servers: [server({ points_mode: m })] }).servers[0]!.points_mode).toBe(m);
  });

  it("accepts security mode None only when the config says so in as many words", () => {
    expect(issues({ servers: [server({ security_mode: "None" })] })).toEqual(["servers.0.security_mode: security_mode None sends everything in clear and unauthenticated: set allow_unsecured: true to accept that"]);
    expect(issues({ servers: [server({ security_mode: "None", allow_unsecured: true })] })).toEqual([]);
  });

  it("takes a legacy policy only when the server opts in, and bounds the OPC UA process by default", () => {
    for (const p of ["Basic256", "Basic128Rsa15"]) expect(issues({ servers: [server({ security_policy: p, allow_legacy_policy: true })] })).toEqual([]);
    expect(opcuaConfigSchema.parse({ servers: [server()] }).process).toEqual({ max_rss_mb: 320, unresponsive_ms: 60_000, restart_min_ms: 1000, restart_max_ms: 60_000 });
  });

  it.each([
    ["a deprecated policy", { servers: [server({ security_policy: "Basic128Rsa15" })] }, "servers.0.security_policy: Basic128Rsa15 is deprecated (SHA-1) and refused; use Basic256Sha256"],
    ["Basic256", { servers: [server({ security_policy: "Basic256" })] }, "servers.0.security_policy: Basic256 is deprecated (SHA-1) and refused"],
    ["an unknown policy", { servers: [server({ security_policy: "Best" })] }, "servers.0.security_policy: must be one of Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss (or, with allow_legacy_policy: true, Basic256, Basic128Rsa15)"],
    ["a legacy policy on the front", { servers: [server({ security_policy: "Basic256", allow_legacy_policy: true })], front: { server: "plc", security_policies: ["Basic256"] } }, "front.security_policies.0: Basic256 is deprecated (SHA-1) and never offered on the front"],
    ["an inverted restart back-off", { servers: [server()], process: { restart_min_ms: 5000, restart_max_ms: 1000 } }, "process.restart_min_ms"],
    ["a memory ceiling below 64 MB", { servers: [server()], process: { max_rss_mb: 10 } }, "process.max_rss_mb"],
    ["an http endpoint", { servers: [server({ endpoint: "http://10.0.0.5:4840" })] }, "servers.0.endpoint: must be opc.tcp://HOST[:PORT][/PATH]"],
    ["a duplicate name", { servers: [server(), server()] }, "servers.1.name: server name plc is used twice"],
    ["an unknown points_mode", { servers: [server({ points_mode: "push" })] }, "servers.0.points_mode"],
    ["no servers", { servers: [] }, "servers"],
    ["an unknown key", { servers: [server({ password: "x" })] }, "servers.0"],
    ["a user without password file", { servers: [server({ user: { username: "op" } })] }, "servers.0.user.password_file"],
    ["a certificate user without key file", { servers: [server({ user: { certificate_file: "u.pem" } })] }, "servers.0.user.key_file"],
    ["a user mixing both forms", { servers: [server({ user: { username: "op", key_file: "k" } })] }, "servers.0.user: Unrecognized key"],
    ["an unbounded message size", { servers: [server()], max_message_bytes: 1e9 }, "max_message_bytes"],
    ["inverted backoff", { servers: [server({ reconnect_min_ms: 5000, reconnect_max_ms: 1000 })] }, "servers.0.reconnect_min_ms"],
  ])("refuses %s", (_n, cfg, path) => {
    expect(issues(cfg).join("\n")).toContain(path);
  });
});

describe("opcua.front.limits.login_timeout_ms", () => {
  const front = (limits: Record<string, unknown> = {}) => ({ servers: [server()], front: { server: "plc", limits } });

  it("gives a connection 15 s after its secure channel opens to log in, 10 s before that to open it", () => {
    expect(opcuaConfigSchema.parse(front()).front!.limits).toMatchObject({ handshake_timeout_ms: 10_000, login_timeout_ms: 15_000 });
    expect(opcuaConfigSchema.parse(front({ login_timeout_ms: 5000 })).front!.limits.login_timeout_ms).toBe(5000);
  });

  it.each([
    ["below 1 s", 999, "Too small: expected number to be >=1000"],
    ["above 2 min", 120_001, "Too big: expected number to be <=120000"],
    ["a fraction", 1500.5, "Invalid input: expected int, received number"],
    ["a string", "15s", "Invalid input: expected number, received string"],
  ])("refuses a value %s, naming the key and its line", (_n, value, message) => {
    const t = tempDir();
    try {
      const file = join(t.dir, "gatewarden.yaml");
      const lines = ["device:", "  id: gw-01", "opcua:", "  servers:", '    - { name: plc, endpoint: "opc.tcp://10.0.0.5:4840" }', "  front:", "    server: plc", "    limits:", `      login_timeout_ms: ${JSON.stringify(value)}`, ""];
      writeFileSync(file, lines.join("\n"), { mode: 0o640 });
      let err: unknown;
      try {
        loadConfig(file);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(DaemonError);
      expect((err as DaemonError).code).toBe("CONFIG_INVALID");
      expect((err as unknown as { issues: unknown[] }).issues).toEqual([expect.objectContaining({ path: "opcua.front.limits.login_timeout_ms", line: 9, message })]);
    } finally {
      t.cleanup();
    }
  });
});

describe("OPC UA reads", () => {
  const pt = (id: string, interval_ms = 100): OpcuaPolledPoint => ({ id, source: { server: "plc", node_id: `ns=1;s=${id}`, scale: 1, offset: 0 }, interval_ms });

  it("groups points by interval into reads of at most max_nodes_per_read nodes", () => {
    const plan = planReads([pt("a"), pt("b"), pt("c"), pt("d", 1000), pt("e")], 2);
    expect(plan.get(100)!.map((b) => b.points.map((p) => p.id))).toEqual([["a", "b"], ["c", "e"]]);
    expect(plan.get(1000)!.map((b) => b.points.map((p) => p.id))).toEqual([["d"]]);
  });

  it("resolves namespace URIs on the connected server and leaves other forms alone", () => {
    const idx = (u: string) => (u === "urn:plc" ? 3 : undefined);
    expect(resolveNodeId("nsu=urn:plc;s=Tank;Level", idx)).toBe("ns=3;s=Tank;Level");
    expect(resolveNodeId("nsu=urn:other;i=5", idx)).toBeNull();
    expect(resolveNodeId("ns=2;s=X", idx)).toBe("ns=2;s=X");
    expect(resolveNodeId("i=2258", idx)).toBe("i=2258");
  });

  it("turns values into numbers, and says why it cannot", () => {
    const dv = (value: unknown, dataType = 11, status = 0, name = "Good") => ({ statusCode: { value: status, name }, value: { dataType, value } }) as never;
    expect(valueOf(dv(2.5))).toBe(2.5);
    expect(valueOf(dv(true, 1))).toBe(1);
    expect(valueOf(dv([0, 1234], 9))).toBe(1234); // UInt64 as [high, low]
    expect(valueOf(dv([0xffffffff, 0xfffffffe], 8))).toBe(-2); // Int64 -2
    expect(valueOf(dv([1, 0], 9))).toBe(2 ** 32);
    expect(valueOf(dv(7, 6, 0x40000000, "Uncertain"))).toBe(7); // uncertain still carries a value
    expect(valueOf(dv(null, 0, 0x80340000, "BadNodeIdUnknown"))).toBe("status BadNodeIdUnknown");
    expect(valueOf(dv("T1", 12))).toBe("the value is not a number (string)");
    expect(valueOf(dv(NaN))).toBe("the value is not finite");
    expect(valueOf(dv([1, 2, 3], 11))).toBe("the value is not a number (an array)");
    expect(valueOf(dv(null))).toBe("the node has no value");
  });
});

describe("refused certificates kept for review", () => {
  it("keeps only the newest ones", async () => {
    const { mkdtempSync, writeFileSync, utimesSync, readdirSync, rmSync } = await import("node:fs");
    const { join } = await import("node:path");
    const { tmpdir } = await import("node:os");
    const { pruneRejected } = await import("../../../protocols/opcua/link");
    const dir = mkdtempSync(join(tmpdir(), "gw-rejected-"));
    try {
      for (let i = 0; i < 40; i++) {
        const f = join(dir, `cert${i}.pem`);
        writeFileSync(f, "x");
        utimesSync(f, 1_000_000 + i, 1_000_000 + i);
      }
      writeFileSync(join(dir, "notes.txt"), "kept");
      pruneRejected(dir, 32);
      const left = readdirSync(dir).sort();
      expect(left.length).toBe(33);
      expect(left).toContain("notes.txt");
      expect(left).not.toContain("cert7.pem");
      expect(left).toContain("cert8.pem");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
