import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { importsOf, readSources, violations } from "./imports";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

describe("layers: the imports keep the house one-way", () => {
  const files = readSources(ROOT);

  it("reads the whole tree", () => {
    for (const f of ["agent/core/errors.ts", "agent/runtime.ts", "protocols/modbus/service.ts", "detectors/engine.ts", "firmware-hooks/hook.ts", "build/bench.ts", "test/architecture/imports.ts"]) expect(files.has(f), f).toBe(true);
    // Imports are found, or the check below would pass on nothing.
    expect([...files.values()].reduce((n, text) => n + importsOf("x.ts", text).length, 0)).toBeGreaterThan(1000);
  });

  it("has no forbidden edge", () => {
    expect(violations(files).map((v) => `${v.from}:${v.line} imports ${v.spec}: ${v.rule}`)).toEqual([]);
  });

  describe("the check itself", () => {
    const withFile = (path: string, text: string) => new Map([...files, [path, text]]);
    const cases: Array<[string, string, string, RegExp]> = [
      ["a protocol reaching into agent/", "protocols/modbus/evil.ts", 'import { Runtime } from "../../agent/runtime";\n', /protocols\/ imports only protocols\/ and agent\/core/],
      ["a detector reaching into agent/ with a dynamic import", "detectors/evil.ts", 'export const m = () => import("../agent/outbox/store");\n', /detectors\/ imports only detectors\/ and agent\/core/],
      ["a detector importing a protocol (type only)", "detectors/evil.ts", 'import type { ModbusSource } from "../protocols/modbus/points";\n', /detectors\/ imports only detectors\/ and agent\/core\/ \(never protocols/],
      ["a protocol importing a detector (re-export)", "protocols/opcua/evil.ts", 'export { DetectionEngine } from "../../detectors/engine";\n', /protocols\/ imports only protocols\/ and agent\/core\/ \(never detectors/],
      ["a protocol importing the firmware hooks", "protocols/opcua/evil.ts", 'import { runHook } from "../../firmware-hooks/hook";\n', /protocols\/ imports only protocols\/ and agent\/core/],
      ["the firmware hooks reaching into agent/", "firmware-hooks/evil.ts", 'import type { LoadedConfig } from "../agent/config/load";\n', /firmware-hooks\/ imports only firmware-hooks\/ and agent\/core/],
      ["the firmware hooks importing a protocol (dynamic)", "firmware-hooks/rauc/evil.ts", 'export const m = () => import("../../protocols/modbus/config");\n', /firmware-hooks\/ imports only firmware-hooks\/ and agent\/core\/ \(never protocols/],
      ["the core importing the agent", "agent/core/evil.ts", 'import { loadConfig } from "../config/load";\n', /agent\/core imports nothing outside/],
      ["a benchmark importing a test helper", "build/bench-evil.ts", 'import { prng } from "../test/helpers/prng";\n', /never import test\//],
      ["a CLI command outside agent/commands", "protocols/modbus/cli.ts", 'import type { Command } from "commander";\n', /CLI commands live in agent\/commands/],
    ];
    for (const [what, path, text, rule] of cases) {
      it(`reports ${what}`, () => {
        const v = violations(withFile(path, text));
        expect(v).toHaveLength(1);
        expect(v[0]).toMatchObject({ from: path, line: 1 });
        expect(v[0]!.rule).toMatch(rule);
      });
    }

    it("allows what the layers allow", () => {
      const ok = withFile("protocols/modbus/fine.ts", 'import { DaemonError } from "../../agent/core/errors";\nimport { z } from "zod";\nimport { EX } from "./codec/function-codes";\n');
      expect(violations(ok)).toEqual([]);
      expect(violations(withFile("firmware-hooks/fine.ts", 'import { canonicalize } from "../agent/core/canonical";\nimport { UpdateState } from "./state";\nimport { z } from "zod";\n'))).toEqual([]);
      expect(violations(withFile("agent/fine.ts", 'import { ModbusProxyService } from "../protocols/modbus/service";\nimport { DetectionEngine } from "../detectors/engine";\n'))).toEqual([]);
    });
  });
});
