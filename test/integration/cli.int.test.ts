import { afterAll, describe, expect, it } from "vitest";
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { exited, gw, gwSpawn } from "../helpers/cli";
import { tempDir, until } from "../helpers/fixture";

describe("gatewarden CLI (built bundle)", () => {
  const t = tempDir();
  afterAll(t.cleanup);
  const dir = join(t.dir, "etc");
  const cfg = join(dir, "gatewarden.yaml");

  it("init writes a commented config and a 0600 identity, and refuses to overwrite", () => {
    const r = gw(["init", "--dir", dir, "--device-id", "cab-17", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ device: "cab-17", config: cfg });
    expect(readFileSync(cfg, "utf8")).toContain("# Disk budget including the write-ahead log.");
    expect(statSync(join(dir, "keys", "device.key")).mode & 0o777).toBe(0o600);
    const again = gw(["init", "--dir", dir, "--device-id", "cab-17"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^error\[KEY_EXISTS\]/);
  });

  it("config validate/get/set/show, with errors naming key and line", () => {
    expect(gw(["config", "validate", "--config", cfg]).code).toBe(0);
    const viaEnv = gw(["config", "get", "device.id"], { GATEWARDEN_CONFIG: cfg });
    expect(viaEnv.stdout.trim()).toBe("cab-17");
    const set = gw(["config", "set", "heartbeat.interval_ms", "1000", "--config", cfg, "--json"]);
    expect(JSON.parse(set.stdout)).toMatchObject({ key: "heartbeat.interval_ms", value: 1000, previous: 60000 });
    const bad = gw(["config", "set", "heartbeat.interval_ms", "often", "--config", cfg]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/error\[CONFIG_INVALID\].*heartbeat\.interval_ms/s);
    const show = gw(["config", "show", "--config", cfg, "--json"]);
    expect(JSON.parse(show.stdout).heartbeat.interval_ms).toBe(1000);
    const broken = join(t.dir, "broken.yaml");
    writeFileSync(broken, "device:\n  id: x\nbuffer:\n  max_bytez: 5\n");
    const v = gw(["config", "validate", "--config", broken, "--json"]);
    expect(v.code).toBe(1);
    expect(JSON.parse(v.stdout).error.issues).toEqual([{ path: "buffer.max_bytez", line: 4, message: "unknown key", code: "unrecognized_keys" }]);
    expect(gw(["config", "frobnicate"]).code).toBe(2);
  });

  it("keys show / export-public", () => {
    const show = JSON.parse(gw(["keys", "show", "--config", cfg, "--json"]).stdout);
    expect(show).toMatchObject({ device: "cab-17", mode: "0600", alg: "ed25519" });
    const trust = JSON.parse(gw(["keys", "export-public", "--config", cfg]).stdout);
    expect(trust.fingerprint).toBe(show.fingerprint);
  });

  it("run serves status and events over the owner-only socket, and stops cleanly on SIGTERM", async () => {
    const daemon = gwSpawn(["run", "--config", cfg]);
    try {
      const sock = join(dir, "data", "gatewarden.sock");
      await until(() => existsSync(sock), 10_000, "the control socket");
      expect(statSync(sock).mode & 0o777).toBe(0o600);
      await until(() => gw(["status", "--config", cfg, "--json"]).code === 0, 10_000, "status");
      const s = JSON.parse(gw(["status", "--config", cfg, "--json"]).stdout);
      expect(s).toMatchObject({ device: "cab-17", upstream: { state: "not_configured" } });
      expect(s.outbox.depth).toBeGreaterThanOrEqual(1);
      expect(gw(["status", "--config", cfg]).stdout).toMatch(/^device\s+cab-17/);
      const tail = gw(["events", "tail", "-n", "1000", "--json", "--config", cfg]);
      const tailed = tail.stdout.trim().split("\n").map((l) => JSON.parse(l) as { device: string; seq: number; class: string });
      expect(tailed[0], `events tail printed:\n${tail.stdout}\n${tail.stderr}`).toMatchObject({ device: "cab-17", seq: 0, class: "system" });
      expect(tailed.map((e) => e.seq)).toEqual(tailed.map((_, i) => i));
      // One owner per outbox: a second daemon on the same files is refused and leaves the first alone.
      const second = gw(["run", "--config", cfg]);
      expect(second.code).toBe(1);
      expect(second.stderr).toMatch(/^error\[OUTBOX_LOCKED\]: the outbox .* is held by the Gatewarden daemon \(pid \d+ on /);
      expect(gw(["status", "--config", cfg, "--json"]).code).toBe(0);
      // The daemon holds the outbox file exclusively: another process opening it is told so, by name.
      const busy = gw(["outbox", "check", "--config", cfg, "--json"]);
      expect(busy.code).toBe(1);
      expect(busy.stderr).toMatch(/^error\[OUTBOX_LOCKED\]/m);
      expect(busy.stderr).toContain(join(dir, "data", "outbox.db"));
      // Logs are JSON lines on stdout.
      await until(() => daemon.output().includes("Gatewarden started."), 5000, "the start log line");
      for (const line of daemon.output().trim().split("\n")) expect(() => JSON.parse(line)).not.toThrow();
      daemon.kill("SIGTERM");
      expect(await exited(daemon)).toBe(0);
      const check = JSON.parse(gw(["outbox", "check", "--config", cfg, "--json"]).stdout);
      expect(check.integrity).toBe("ok");
      expect(check.depth).toBeGreaterThanOrEqual(3); // boot, heartbeat, shutdown
    } finally {
      if (daemon.exitCode === null) daemon.kill("SIGKILL");
    }
  });

  it("refuses to start with a private key readable by others, and status says no daemon", () => {
    chmodSync(join(dir, "keys", "device.key"), 0o644);
    const r = gw(["run", "--config", cfg]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error\[KEY_PERMISSIONS\].*chmod 600/);
    chmodSync(join(dir, "keys", "device.key"), 0o600);
    const s = gw(["status", "--config", cfg]);
    expect(s.code).toBe(1);
    expect(s.stderr).toMatch(/error\[CONTROL_UNAVAILABLE\]/);
  });

  it("soc keys init, trust add, and verify of an empty file", () => {
    const soc = join(t.dir, "soc");
    expect(gw(["soc", "keys", "init", "--dir", soc]).code).toBe(0);
    expect(statSync(join(soc, "soc.key")).mode & 0o777).toBe(0o600);
    const trustFile = join(t.dir, "cab-17.trust.json");
    writeFileSync(trustFile, gw(["keys", "export-public", "--config", cfg]).stdout);
    const add = gw(["soc", "trust", "add", trustFile, "--dir", soc, "--json"]);
    expect(JSON.parse(add.stdout).device).toBe("cab-17");
    writeFileSync(join(t.dir, "garbage.json"), "{");
    expect(gw(["soc", "trust", "add", join(t.dir, "garbage.json"), "--dir", soc]).stderr).toMatch(/error\[TRUST_INVALID\]/);
    const empty = join(t.dir, "empty.jsonl");
    writeFileSync(empty, "");
    expect(gw(["soc", "verify", empty, "--dir", soc]).code).toBe(0);
  });
});
