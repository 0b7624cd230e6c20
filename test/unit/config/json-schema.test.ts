import { Ajv } from "ajv";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { describe, expect, it } from "vitest";
import { configJsonSchema, SCHEMA_FILE, schemaModeline } from "../../../agent/config/json-schema";
import { configTemplate } from "../../../agent/config/template";
import { gw } from "../../helpers/cli";

/** The editor's view of the config must agree with the daemon's: same schema, same verdicts. */
describe("config JSON Schema", () => {
  const ajv = new Ajv({ strict: false, allErrors: true });
  const validate = ajv.compile(configJsonSchema("test"));

  it("accepts the config that init writes", () => {
    const ok = validate(parse(configTemplate({ deviceId: "gw-01", dataDir: "data" })));
    expect(validate.errors ?? []).toEqual([]);
    expect(ok).toBe(true);
  });

  it("rejects an unknown key and a value below its minimum, as config validate does", () => {
    const doc = parse(configTemplate({ deviceId: "gw-01", dataDir: "data" })) as Record<string, Record<string, unknown>>;
    expect(validate({ ...doc, buffer: { ...doc.buffer, flush_msec: 5 } })).toBe(false);
    expect(validate.errors?.map((e) => e.keyword)).toContain("additionalProperties");
    expect(validate({ ...doc, heartbeat: { interval_ms: 50 } })).toBe(false);
    expect(validate.errors?.map((e) => e.instancePath)).toContain("/heartbeat/interval_ms");
  });

  it("config schema prints it and init puts it beside the config with the modeline", () => {
    const printed = gw(["config", "schema"]);
    expect(printed.code).toBe(0);
    expect(JSON.parse(printed.stdout).properties.upstream.properties.url.type).toBe("string");
    const dir = mkdtempSync(join(tmpdir(), "gw-schema-"));
    const r = gw(["init", "--dir", dir, "--device-id", "cab-1", "--json"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(readFileSync(join(dir, SCHEMA_FILE), "utf8"))).toEqual(JSON.parse(printed.stdout));
    expect(readFileSync(join(dir, "gatewarden.yaml"), "utf8").split("\n")[0]).toBe(schemaModeline);
  });

  it("an unwritable --out names the path", () => {
    const r = gw(["config", "schema", "--out", "/proc/nope/schema.json"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error\[PATH_UNUSABLE\]: .*\/proc\/nope\/schema\.json/m);
  });
});
