import { spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { controlCall } from "../../agent/core/control-client";
import { EmbeddedBroker } from "../../agent/embedded-broker";
import { BIN } from "../helpers/cli";
import { makeSite, tempDir, until } from "../helpers/fixture";

/**
 * Sinks load lazily (agent/sinks/registry.ts): the real daemon runs with a preload hook that
 * notes every module it loads from the MQTT client library (external to the bundle). Without
 * `upstream.url` nothing of it is loaded; with it, the same hook notes it.
 */
describe("the daemon and the MQTT client library", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  const t = tempDir("gw-lazy-sink-");
  cleanups.push(t.cleanup);
  const hook = join(t.dir, "note-mqtt.cjs");

  /** Starts `gatewarden run` with the hook, waits for its status, returns what the hook noted and the status. */
  async function runNoting(settings: Record<string, string>, name: string): Promise<{ noted: string; status: { upstream: { state: string } } }> {
    const note = join(t.dir, `${name}.txt`);
    writeFileSync(
      hook,
      `const Module = require("node:module");
const load = Module._load;
Module._load = function (request, ...rest) {
  if (/^mqtt(\\/|$)/.test(request)) require("node:fs").appendFileSync(process.env.GW_NOTE, request + "\\n");
  return load.call(this, request, ...rest);
};
`,
    );
    const site = makeSite(join(t.dir, name), { settings: { "heartbeat.interval_ms": "3600000", ...settings } });
    const sock = site.load().config.control.socket;
    const daemon = spawn(process.execPath, ["-r", hook, BIN, "run", "--config", site.cfgFile], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, GW_NOTE: note } });
    let stderr = "";
    daemon.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise((r) => daemon.once("exit", r));
    const stop = async () => {
      daemon.kill("SIGTERM");
      await exited;
    };
    cleanups.push(stop);
    let status: { upstream: { state: string } } | undefined;
    await until(async () => (status = (await controlCall(sock, "status").catch(() => undefined)) as typeof status) !== undefined, 60_000, `the daemon's status (stderr: ${stderr.slice(-500)})`);
    await stop();
    return { noted: existsSync(note) ? readFileSync(note, "utf8") : "", status: status! };
  }

  it("loads none of it without upstream.url, and loads it with one", async () => {
    const off = await runNoting({}, "off");
    expect(off.status.upstream.state).toBe("not_configured");
    expect(off.noted).toBe("");

    // The hook notes what it should: the same daemon with an upstream loads the library.
    const broker = new EmbeddedBroker();
    await broker.start(0);
    cleanups.push(() => broker.stop());
    const on = await runNoting({ "upstream.url": broker.url, "upstream.protocol_version": "4" }, "on");
    expect(on.status.upstream.state).not.toBe("not_configured");
    expect(on.noted).toMatch(/^mqtt\n/m);
  }, 150_000);
});
