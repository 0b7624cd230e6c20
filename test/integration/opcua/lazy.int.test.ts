import { spawn, spawnSync } from "node:child_process";
import { appendFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { controlCall } from "../../../agent/core/control-client";
import { BIN, ROOT } from "../../helpers/cli";
import { makeSite, tempDir, until } from "../../helpers/fixture";
import { stationYaml, TestOpcuaServer } from "./_server";

/**
 * node-opcua is never loaded by the core: the real daemon runs with a preload hook that notes
 * every module it loads from node-opcua; with an `opcua` section the OPC UA process (which the
 * core starts without the hook) reads the points, and the core's note stays empty.
 */
describe("the core process and node-opcua", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it("never loads node-opcua, even with an opcua section", async () => {
    const t = tempDir("gw-opcua-lazy-");
    cleanups.push(t.cleanup);
    const hook = join(t.dir, "note-opcua.cjs");
    const note = join(t.dir, "loaded.txt");
    writeFileSync(
      hook,
      `const Module = require("node:module");
const load = Module._load;
Module._load = function (request, ...rest) {
  if (/^node-opcua/.test(request)) require("node:fs").appendFileSync(${JSON.stringify(note)}, process.pid + " " + request + "\\n");
  return load.call(this, request, ...rest);
};
`,
    );
    // The hook notes what it should: a process that loads node-opcua is noted.
    const control = spawnSync(process.execPath, ["-r", hook, "-e", "require('node-opcua-certificate-manager')"], { cwd: ROOT, encoding: "utf8" });
    expect(control.status, control.stderr).toBe(0);
    expect(readFileSync(note, "utf8")).toMatch(/ node-opcua-certificate-manager\n/);
    writeFileSync(note, "");

    const ua = new TestOpcuaServer({ dir: t.dir, users: { gatewarden: "cabinet-42" } });
    await ua.start();
    cleanups.push(() => ua.stop());
    const site = makeSite(t.dir);
    writeFileSync(join(site.gwDir, "keys", "plc.pass"), "cabinet-42\n", { mode: 0o600 });
    appendFileSync(site.cfgFile, stationYaml(ua));
    const sock = site.load().config.control.socket;
    const daemon = spawn(process.execPath, ["-r", hook, BIN, "run", "--config", site.cfgFile], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    daemon.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise((r) => daemon.once("exit", r));
    cleanups.push(async () => {
      daemon.kill("SIGTERM");
      await exited;
    });
    type St = { process: { state: string; pid: number }; servers: { state: string; readings: number }[] };
    const st = async () => (await controlCall(sock, "opcua.status").catch(() => undefined)) as St | undefined;
    await until(async () => ((await st())?.servers[0]?.readings ?? 0) > 0, 60_000, `readings from the OPC UA process (daemon stderr: ${stderr.slice(-500)})`);
    const s = (await st())!;
    expect(s.process.state).toBe("running");
    expect(s.process.pid).not.toBe(daemon.pid);
    expect(existsSync(note) ? readFileSync(note, "utf8") : "").toBe("");
  }, 90_000);
});
