import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { exited, gwSpawn, ROOT } from "../helpers/cli";
import { makeSite, tempDir, until } from "../helpers/fixture";
import { havePeer } from "../helpers/peers";

interface DgramSocket {
  bind(path: string): void;
  on(ev: "message", cb: (b: Buffer) => void): void;
  close(): void;
}
const dgram = createRequire(import.meta.url)("unix-dgram") as { createSocket(t: "unix_dgram"): DgramSocket };

/** The service as systemd sees it: the notification protocol over a real socket, and the unit file. */
describe("systemd", () => {
  const t = tempDir("gw-systemd-");
  afterAll(() => t.cleanup());

  it("the daemon says READY=1 once it serves, feeds the watchdog, and says STOPPING=1 on SIGTERM", async () => {
    const site = makeSite(t.dir);
    const path = join(t.dir, "notify.sock");
    const sock = dgram.createSocket("unix_dgram");
    const got: string[] = [];
    sock.on("message", (b) => got.push(b.toString()));
    sock.bind(path);
    const d = gwSpawn(["run", "--config", site.cfgFile], { NOTIFY_SOCKET: path, WATCHDOG_USEC: "400000" });
    try {
      await until(() => got.some((m) => m.split("\n").includes("READY=1")), 30_000, "READY=1").catch((e: Error) => {
        throw new Error(`${e.message}; daemon said: ${d.output().slice(-800)}`);
      });
      expect(got.find((m) => m.includes("READY=1"))).toMatch(new RegExp(`MAINPID=${d.pid}`));
      await until(() => got.filter((m) => m === "WATCHDOG=1").length >= 3, 30_000, "three watchdog pings");
      d.kill("SIGTERM");
      expect(await exited(d)).toBe(0);
      expect(got).toContain("STOPPING=1");
      expect(got.indexOf("STOPPING=1")).toBeGreaterThan(got.findIndex((m) => m.includes("READY=1")));
    } finally {
      d.kill("SIGKILL");
      sock.close();
    }
  });

  it("a daemon that cannot start never says READY=1", async () => {
    const site = makeSite(t.dir, { device: "gw-bad" });
    writeFileSync(site.cfgFile, readFileSync(site.cfgFile, "utf8") + "\nnot_a_key: 1\n");
    const path = join(t.dir, "notify-bad.sock");
    const sock = dgram.createSocket("unix_dgram");
    const got: string[] = [];
    sock.on("message", (b) => got.push(b.toString()));
    sock.bind(path);
    const d = gwSpawn(["run", "--config", site.cfgFile], { NOTIFY_SOCKET: path });
    expect(await exited(d)).toBe(1);
    sock.close();
    expect(got.filter((m) => m.includes("READY=1"))).toEqual([]);
  });

  const analyze = "/usr/bin/systemd-analyze";
  it.skipIf(!havePeer(analyze)).each(["gatewarden.service", "gatewarden-soc-receiver.service"])("%s verifies and scores OK (exposure <= 2.0) with systemd-analyze security --offline", (name) => {
    const unit = join(t.dir, name);
    const text = readFileSync(join(ROOT, "build", "package", name), "utf8")
      .replaceAll("@NODE@", process.execPath)
      .replaceAll("@PREFIX@", "/opt/gatewarden")
      .replaceAll("@CONFDIR@", "/etc/gatewarden");
    writeFileSync(unit, text);
    execFileSync(analyze, ["verify", "--man=no", unit], { encoding: "utf8", stdio: "pipe" });
    const out = execFileSync(analyze, ["security", "--offline=yes", "--no-pager", unit], { encoding: "utf8" });
    const m = new RegExp(`Overall exposure level for ${name.replaceAll(".", "\\.")}: (\\d+\\.\\d+) (\\S+)`).exec(out);
    expect(m, out.slice(-400)).not.toBeNull();
    process.stdout.write(`systemd-analyze security: exposure ${m![1]} ${m![2]}\n`);
    expect(Number(m![1])).toBeLessThanOrEqual(2.0);
    expect(["OK", "SAFE"]).toContain(m![2]);
  });
});
