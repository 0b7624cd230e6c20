import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { makeDirs } from "../../agent/core/dirs";
import { readSources } from "./imports";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

// Node's recursive mkdir loops for ever, at full CPU, where mkdir answers ENOENT under an
// existing parent (/proc, /sys): `gatewarden soc keys init --dir /proc/x` hung. Directories the
// product makes go through one function, makeDirs, which creates one level at a time and names
// the path when it cannot.
describe("directories are made in one place", () => {
  it("no product source calls a recursive mkdir but agent/core/dirs.ts", () => {
    const offenders = [...readSources(ROOT)]
      .filter(([f]) => !f.startsWith("test/") && f !== "agent/core/dirs.ts")
      .flatMap(([f, text]) => text.split("\n").map((l, i) => [f, i + 1, l] as const))
      .filter(([, , l]) => /\bmkdir(Sync)?\s*\(/.test(l) && /recursive\s*:\s*true/.test(l))
      .map(([f, n, l]) => `${f}:${n}: ${l.trim()}`);
    expect(offenders).toEqual([]);
  });

  it("a path where mkdir answers ENOENT is PATH_UNUSABLE at once, not a hang", () => {
    expect(() => makeDirs("/proc/gatewarden-test/a", "--dir")).toThrow(/^--dir \/proc\/gatewarden-test\/a cannot be used: this file system does not allow creating it \(ENOENT\)$/);
  });
});
