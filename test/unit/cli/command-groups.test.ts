import { Command } from "commander";
import { describe, expect, it } from "vitest";
import { buildProgram, commandNamed, COMMAND_GROUPS } from "../../../agent/cli";

const deps = { resolveSocket: async () => "/nonexistent.sock" };
const names = (p: Command) => p.commands.map((c) => c.name()).sort();

describe("command groups loaded by the command they add", () => {
  it("each row names exactly the top-level commands its file adds", async () => {
    for (const g of COMMAND_GROUPS) {
      const p = new Command("gatewarden");
      await g.register(p, deps);
      expect(names(p), g.names.join(",")).toEqual([...g.names].sort());
    }
  });

  it("a command loads only its own groups; none, help or an unknown one loads all", async () => {
    const all = names(await buildProgram());
    expect(all).toContain("run");
    expect(all).toContain("opcua");
    expect(all.length).toBeGreaterThan(15);
    expect(names(await buildProgram(["node", "gatewarden", "run", "--config", "x.yaml"]))).toEqual(["events", "outbox", "reload", "run", "status"]);
    // Two files add subcommands to `soc`: both are loaded.
    const soc = (await buildProgram(["node", "gatewarden", "soc", "receive"])).commands.find((c) => c.name() === "soc")!;
    expect(soc.commands.map((c) => c.name())).toEqual(expect.arrayContaining(["receive", "command"]));
    for (const argv of [[], ["--help"], ["help", "run"], ["no-such-command"]]) expect(names(await buildProgram(["node", "gatewarden", ...argv])), argv.join(" ")).toEqual(all);
  });

  it("the command is the first operand", () => {
    expect(commandNamed(["node", "gw", "--config", "x", "run"])).toBe("x");
    expect(commandNamed(["node", "gw", "-V"])).toBeUndefined();
    expect(commandNamed(["node", "gw", "status", "--json"])).toBe("status");
  });
});
