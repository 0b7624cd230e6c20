import { afterAll, describe, expect, it } from "vitest";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { getConfigValue, setConfigValue, unsetConfigValue } from "../../../agent/config/edit";
import { loadConfig } from "../../../agent/config/load";
import { locateConfig } from "../../../agent/config/locate";
import { configTemplate } from "../../../agent/config/template";
import { DaemonError } from "../../../agent/core/errors";
import { redactUrl } from "../../../agent/mqtt-connection";
import { tempDir } from "../../helpers/fixture";

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof DaemonError ? e.code : "NOT_A_DAEMON_ERROR";
  }
  return undefined;
}

describe("config", () => {
  const t = tempDir();
  afterAll(t.cleanup);
  const file = join(t.dir, "gatewarden.yaml");
  const write = (s: string) => writeFileSync(file, s, { mode: 0o640 });

  it("the template from init is valid and carries the documented defaults", () => {
    write(configTemplate({ deviceId: "gw-01", dataDir: "data" }));
    const { config } = loadConfig(file);
    expect(config.device.id).toBe("gw-01");
    expect(config.buffer.max_bytes).toBe(256 * 1024 * 1024);
    expect(config.buffer.path).toBe(join(t.dir, "data", "outbox.db"));
    expect(config.heartbeat.interval_ms).toBe(60_000);
    expect(config.upstream.url).toBeUndefined();
    expect(config.upstream.max_message_bytes).toBe(256 * 1024);
  });

  it("names the key path and the line of every error, unknown keys included", () => {
    write(["device:", "  id: gw-01", "upstream:", "  url: http://nope", "  colour: blue", "buffer:", "  max_bytes: 12 parsecs", "heartbeat:", "  interval_ms: -5"].join("\n"));
    try {
      loadConfig(file);
      expect.unreachable();
    } catch (e) {
      expect((e as DaemonError).code).toBe("CONFIG_INVALID");
      const issues = (e as unknown as { issues: { path: string; line: number }[] }).issues;
      const by = Object.fromEntries(issues.map((i) => [i.path, i.line]));
      expect(by["upstream.url"]).toBe(4);
      expect(by["upstream.colour"]).toBe(5);
      expect(by["buffer.max_bytes"]).toBe(7);
      expect(by["heartbeat.interval_ms"]).toBe(9);
      expect((e as Error).message).toContain(`${file}:5: upstream.colour: unknown key`);
    }
  });

  it("reports YAML syntax errors with their line, and a missing file with advice", () => {
    write("device:\n  id: [unclosed\n");
    expect(codeOf(() => loadConfig(file))).toBe("CONFIG_PARSE");
    expect(codeOf(() => loadConfig(join(t.dir, "absent.yaml")))).toBe("CONFIG_NOT_FOUND");
    write("device:\n  id: a\n  id: b\n");
    expect(codeOf(() => loadConfig(file))).toBe("CONFIG_PARSE");
  });

  it("set keeps comments and layout, types the value, and refuses invalid values without touching the file", () => {
    write(configTemplate({ deviceId: "gw-01", dataDir: "data" }));
    const before = readFileSync(file, "utf8");
    setConfigValue(file, "upstream.url", "mqtts://soc.example.net:8883");
    setConfigValue(file, "heartbeat.interval_ms", "5000");
    setConfigValue(file, "buffer.max_bytes", "64MiB");
    setConfigValue(file, "device.id", "007");
    const after = readFileSync(file, "utf8");
    expect(after).toContain("# Disk budget including the write-ahead log.");
    expect(after.split("\n").filter((l) => l.trim().startsWith("#")).length).toBe(before.split("\n").filter((l) => l.trim().startsWith("#")).length);
    const { config } = loadConfig(file);
    expect(config.upstream.url).toBe("mqtts://soc.example.net:8883");
    expect(config.heartbeat.interval_ms).toBe(5000);
    expect(config.buffer.max_bytes).toBe(64 * 1024 * 1024);
    expect(config.device.id).toBe("007");
    expect((statSync(file).mode & 0o777).toString(8)).toBe("640");

    const snapshot = readFileSync(file, "utf8");
    expect(codeOf(() => setConfigValue(file, "heartbeat.interval_ms", "soon"))).toBe("CONFIG_INVALID");
    expect(codeOf(() => setConfigValue(file, "upstream.url", "ftp://x"))).toBe("CONFIG_INVALID");
    expect(codeOf(() => setConfigValue(file, "upstream.colour", "blue"))).toBe("CONFIG_KEY_UNKNOWN");
    expect(codeOf(() => setConfigValue(file, "bad key!", "1"))).toBe("USAGE");
    expect(readFileSync(file, "utf8")).toBe(snapshot);
  });

  it("unset removes a key so its default applies again, keeps comments, and refuses unknown or required keys", () => {
    write(configTemplate({ deviceId: "gw-01", dataDir: "data" }));
    setConfigValue(file, "heartbeat.interval_ms", "5000");
    setConfigValue(file, "upstream.client_id", "gw-x");
    const comments = readFileSync(file, "utf8").split("\n").filter((l) => l.trim().startsWith("#")).length;
    expect(unsetConfigValue(file, "heartbeat.interval_ms")).toEqual({ previous: 5000 });
    expect(unsetConfigValue(file, "upstream.client_id")).toEqual({ previous: "gw-x" });
    const { config } = loadConfig(file);
    expect(config.heartbeat.interval_ms).toBe(60_000); // the schema's default
    expect(readFileSync(file, "utf8")).not.toMatch(/^\s*interval_ms:/m);
    expect(config.upstream.client_id).toBeUndefined();
    expect(readFileSync(file, "utf8").split("\n").filter((l) => l.trim().startsWith("#")).length).toBe(comments);
    // Not set: nothing to remove, the file is untouched.
    const snapshot = readFileSync(file, "utf8");
    expect(unsetConfigValue(file, "upstream.client_id")).toEqual({ previous: undefined });
    expect(codeOf(() => unsetConfigValue(file, "upstream.colour"))).toBe("CONFIG_KEY_UNKNOWN");
    expect(codeOf(() => unsetConfigValue(file, "device.id"))).toBe("CONFIG_INVALID");
    expect(codeOf(() => unsetConfigValue(file, "bad key!"))).toBe("USAGE");
    expect(readFileSync(file, "utf8")).toBe(snapshot);
  });

  it("refuses credentials in upstream.url, pointing to upstream.password_file, and never echoes them", () => {
    write(configTemplate({ deviceId: "gw-01", dataDir: "data" }));
    const snapshot = readFileSync(file, "utf8");
    for (const url of ["mqtt://gw:s3cr3t-pw@soc.example.net", "mqtts://gw@soc.example.net:8883", "mqtts://:s3cr3t-pw@soc.example.net"]) {
      let err: Error | undefined;
      try {
        setConfigValue(file, "upstream.url", url);
      } catch (e) {
        err = e as Error;
      }
      expect((err as DaemonError).code).toBe("CONFIG_INVALID");
      expect(err!.message).toContain("upstream.url: must not hold a user name or password");
      expect(err!.message).toContain("upstream.password_file");
      expect(err!.message).not.toContain("s3cr3t");
    }
    expect(readFileSync(file, "utf8")).toBe(snapshot);
    // A file written by hand is refused the same way at load (validate, show, run).
    write(snapshot.replace(/^upstream:\n/m, "upstream:\n  url: mqtt://gw:s3cr3t-pw@soc.example.net\n"));
    let err: Error | undefined;
    try {
      loadConfig(file);
    } catch (e) {
      err = e as Error;
    }
    expect((err as DaemonError).code).toBe("CONFIG_INVALID");
    expect(err!.message).toMatch(/:\d+: upstream\.url: must not hold a user name or password/);
    expect(err!.message).not.toContain("s3cr3t");
  });

  it("redacts credentials from broker URLs wherever they are shown", () => {
    expect(redactUrl("mqtts://gw:s3cr3t@soc.example.net:8883")).toBe("mqtts://***@soc.example.net:8883");
    expect(redactUrl("mqtt://user@host")).toBe("mqtt://***@host");
    expect(redactUrl("mqtt://host:1883/")).toBe("mqtt://host:1883/");
    expect(redactUrl("mqtt://host/a@b")).toBe("mqtt://host/a@b");
  });

  it("get answers effective values, unset optional keys, and refuses unknown keys", () => {
    write(configTemplate({ deviceId: "gw-01", dataDir: "data" }));
    const { config } = loadConfig(file);
    expect(getConfigValue(config, "buffer.flush_ms")).toBe(20);
    expect(getConfigValue(config, "upstream.ca")).toBeUndefined();
    expect(codeOf(() => getConfigValue(config, "upstream.nothing"))).toBe("CONFIG_KEY_UNKNOWN");
  });

  it("is found by --config, then $GATEWARDEN_CONFIG, then ./gatewarden.yaml", () => {
    const old = process.env.GATEWARDEN_CONFIG;
    try {
      process.env.GATEWARDEN_CONFIG = "/etc/gw/from-env.yaml";
      expect(locateConfig("/x/flag.yaml")).toBe("/x/flag.yaml");
      expect(locateConfig()).toBe("/etc/gw/from-env.yaml");
      delete process.env.GATEWARDEN_CONFIG;
      expect(locateConfig()).toBe(join(process.cwd(), "gatewarden.yaml"));
    } finally {
      if (old === undefined) delete process.env.GATEWARDEN_CONFIG;
      else process.env.GATEWARDEN_CONFIG = old;
    }
  });
});
