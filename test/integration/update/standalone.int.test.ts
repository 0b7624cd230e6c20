import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadReleasePublicKeys, verifyRelease } from "../../../firmware-hooks/release";
import { STEPS } from "../../../firmware-hooks/standalone";
import { BIN } from "../../helpers/cli";
import { Daemon } from "../../helpers/daemon";
import { until } from "../../helpers/fixture";
import { runAsync } from "./_rauc";
import { updateSite } from "./_site";

/**
 * `gatewarden update apply` without an engine: release folders and an atomic `current` link.
 * The process is killed with SIGKILL after every step of an apply; each time `current` names a
 * complete, verified release (the old or the new one) whose program runs.
 */
describe("update apply: Gatewarden alone", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  let s: Awaited<ReturnType<typeof updateSite>>;
  let daemon: Daemon;
  let releases: string;

  beforeAll(async () => {
    s = await updateSite(cleanups);
    releases = join(s.site.gwDir, "releases");
    // The "service": a program in the release folder, restarted from `current`.
    writeFileSync(s.site.cfgFile, readFileSync(s.site.cfgFile, "utf8") + `  restart_command: [sh, -c, "${releases}/current/app.sh >> ${join(s.root, "running.log")}"]\nintegrity:\n  paths: [${releases}/current]\n`);
    daemon = new Daemon(s.site.cfgFile);
    cleanups.push(async () => void (await daemon.stop()));
    await until(() => s.lines.length > 0, 20_000, "the daemon's boot event at the SOC");
  });
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  const bundle = (version: string, counter: number) => {
    const dir = join(s.root, `bundle-${version}`);
    mkdirSync(join(dir, "lib"), { recursive: true });
    writeFileSync(join(dir, "app.sh"), `#!/bin/sh\necho ${version}\n`);
    chmodSync(join(dir, "app.sh"), 0o755);
    writeFileSync(join(dir, "lib", "payload.bin"), Buffer.alloc(200_000, counter));
    s.sign(dir, { version, counter });
    return dir;
  };
  const gw = (args: string[], env: Record<string, string> = {}) => runAsync(process.execPath, [BIN, ...args, "--config", s.site.cfgFile], { ...process.env, ...env });
  /** What runs after a crash: the program `current` names, from a complete, verified folder. */
  const running = () => {
    const v = readlinkSync(join(releases, "current"));
    verifyRelease(join(releases, v), { keys: loadReleasePublicKeys([join(s.fleet, "release.pub")]), deviceClass: "cabinet-test", minCounter: 0 });
    const out = spawnSync(join(releases, "current", "app.sh"), { encoding: "utf8" }).stdout.trim();
    expect(out).toBe(v);
    return v;
  };

  it("applies, commits after the health check; refuses an older release", async () => {
    const r = await gw(["update", "apply", bundle("1.0.0", 1)]);
    expect(r.status, r.stderr).toBe(0);
    expect(running()).toBe("1.0.0");
    expect(s.counter().counter).toBe(1);
    await s.waitUpdate((u) => u.engine === "gatewarden" && u.stage === "commit" && u.version === "1.0.0", "the commit");
    // The committed release's files are the new integrity manifest (taken at the update, audited).
    await until(() => s.lines.some((l) => /Integrity manifest accepted by update 1\.0\.0/.test((l as unknown as { ocsf: { message: string } }).ocsf?.message ?? "")), 20_000, "the re-measurement after the update");
    const ic = await gw(["integrity", "check", "--json"]);
    expect(ic.status, ic.stdout).toBe(0);
    expect(JSON.parse(ic.stdout)).toMatchObject({ state: "ok", files: expect.any(Number) });
    const old = await gw(["update", "apply", bundle("0.9.0", 0)]);
    expect(old.status).toBe(1);
    expect(old.stderr).toMatch(/error\[RELEASE_ROLLBACK\]/);
    await s.waitUpdate((u) => u.engine === "gatewarden" && u.reason === "RELEASE_ROLLBACK", "the refusal");
  });

  it("kill -9 after every step of an apply leaves the old or the new version, never neither", async () => {
    const b = bundle("2.0.0", 2);
    const seen: string[] = [];
    for (const step of STEPS) {
      const r = await gw(["update", "apply", b], { GATEWARDEN_FAULT_KILL_AT: step });
      expect(r.status, `${step}: ${r.stderr}`).toBeNull(); // killed by the signal
      const v = running();
      seen.push(`${step}:${v}`);
      const st = JSON.parse((await gw(["update", "status", "--json"])).stdout) as { pending: unknown; committed: { counter: number } };
      if (step === "committed") {
        expect(v).toBe("2.0.0");
        expect(st.committed.counter).toBe(2);
        const rb = await gw(["update", "rollback"]);
        expect(rb.stderr).toMatch(/^error\[RELEASE_ROLLBACK\]: .*already committed/m);
      } else {
        // Not committed: the operator (or the next boot's unit) rolls back to the old version.
        if (st.pending) expect((await gw(["update", "rollback"])).status).toBe(0);
        expect(running()).toBe("1.0.0");
        expect(s.counter().counter).toBe(1);
      }
    }
    // Before the switch the old version runs; after it the new one.
    expect(seen).toEqual(STEPS.map((st) => `${st}:${STEPS.indexOf(st) < STEPS.indexOf("switched") ? "1.0.0" : "2.0.0"}`));
    expect(JSON.parse((await gw(["update", "status", "--json"])).stdout)).toMatchObject({ current: "2.0.0", pending: null, committed: { counter: 2 } });
  }, 300_000); // about 40 CLI runs, each a Node start-up: slow on two shared cores

  it("a failed health check switches back automatically", async () => {
    await daemon.stop();
    const r = await gw(["update", "apply", bundle("3.0.0", 3)]);
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/failed its health check .*rolled back to 2\.0\.0/);
    expect(running()).toBe("2.0.0");
    expect(s.counter().counter).toBe(2);
    daemon = new Daemon(s.site.cfgFile);
    await s.waitUpdate((u) => u.engine === "gatewarden" && u.stage === "rollback" && u.version === "3.0.0", "the roll back");
    expect(s.problems()).toEqual([]);
  });
});
