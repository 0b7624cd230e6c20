import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Daemon } from "../../helpers/daemon";
import { until } from "../../helpers/fixture";
import { GATEWARDEN, HOOKS, runAsync } from "./_rauc";
import { updateSite } from "./_site";

/**
 * SWUpdate and Mender call Gatewarden's scripts as their documented contracts say: SWUpdate's
 * shellscript with preinst / postinst / postfailure, Mender's state scripts by file name with
 * no arguments; exit 0 continues, non-zero fails the state. The scripts run here exactly so.
 */
describe("SWUpdate and Mender hooks", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  let s: Awaited<ReturnType<typeof updateSite>>;
  let daemon: Daemon;
  let marker: string;

  beforeAll(async () => {
    s = await updateSite(cleanups);
    marker = join(s.root, "bootloader-ustate");
    // SWUpdate's bootloader variable, set by the commit / roll-back commands (fw_setenv on a device).
    writeFileSync(s.site.cfgFile, readFileSync(s.site.cfgFile, "utf8") + `  commit_command: [sh, -c, "echo 0 > ${marker}"]\n  rollback_command: [sh, -c, "echo 3 > ${marker}"]\n`);
    daemon = new Daemon(s.site.cfgFile);
    cleanups.push(async () => void (await daemon.stop()));
    await until(() => s.lines.length > 0, 20_000, "the daemon's boot event at the SOC");
  });
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  const release = (name: string, version: string, counter: number, key?: string) => {
    const dir = join(s.root, `artifact-${name}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "rootfs.ext4"), `${name} ${version}`);
    s.sign(dir, { version, counter }, key);
    return dir;
  };
  const env = (dir?: string) => ({ ...process.env, GATEWARDEN, GATEWARDEN_CONFIG: s.site.cfgFile, ...(dir ? { GATEWARDEN_RELEASE_DIR: dir } : {}) });
  const swupdate = (stage: string, dir?: string) => runAsync("sh", [join(HOOKS, "swupdate", "gatewarden.sh"), stage], env(dir));
  const mender = (state: string, dir?: string) => {
    const scripts = join(s.root, "mender-scripts");
    mkdirSync(scripts, { recursive: true });
    const f = join(scripts, `${state}_50_gatewarden`);
    if (!existsSync(f)) {
      copyFileSync(join(HOOKS, "mender", "gatewarden-state-script"), f);
      chmodSync(f, 0o755);
    }
    return runAsync(f, [], env(dir));
  };

  it("SWUpdate: preinst accepts a signed release, postinst records, the boot verdict commits", async () => {
    const dir = release("sw5", "5.0.0", 5);
    expect((await swupdate("preinst", dir)).status).toBe(0);
    expect((await swupdate("postinst", dir)).status).toBe(0);
    const v = await runAsync(process.execPath, [join(HOOKS, "..", "dist", "gatewarden.cjs"), "update", "hook", "swupdate", "boot"], env());
    expect(v.status, v.stderr).toBe(0);
    expect(readFileSync(marker, "utf8").trim()).toBe("0");
    expect(s.counter()).toMatchObject({ counter: 5, version: "5.0.0" });
    await s.waitUpdate((u) => u.engine === "swupdate" && u.stage === "preinst" && u.outcome === "ok", "preinst");
    await s.waitUpdate((u) => u.engine === "swupdate" && u.stage === "postinst", "postinst");
    await s.waitUpdate((u) => u.engine === "swupdate" && u.stage === "boot" && u.outcome === "ok", "the commit");
  });

  it("SWUpdate: preinst refuses an older release; postfailure is recorded", async () => {
    const r = await swupdate("preinst", release("sw4", "4.0.0", 4));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/Update refused at swupdate preinst \(RELEASE_ROLLBACK\): .*counter 4, below the installed counter 5/);
    expect((await swupdate("postfailure")).status).toBe(0);
    await s.waitUpdate((u) => u.engine === "swupdate" && u.stage === "preinst" && u.reason === "RELEASE_ROLLBACK", "the refusal");
    await s.waitUpdate((u) => u.engine === "swupdate" && u.stage === "postfailure" && u.outcome === "refused", "postfailure");
  });

  it("Mender: ArtifactInstall_Enter refuses a release signed by another key", async () => {
    const r = await mender("ArtifactInstall_Enter", release("m-other", "6.0.0", 6, join(s.other, "release.key")));
    expect(r.status).toBe(1);
    await s.waitUpdate((u) => u.engine === "mender" && u.stage === "ArtifactInstall_Enter" && u.reason === "RELEASE_UNTRUSTED", "the refusal");
  });

  it("Mender: install, healthy reboot, commit raises the counter", async () => {
    expect((await mender("ArtifactInstall_Enter", release("m6", "6.0.0", 6))).status).toBe(0);
    const h = await mender("ArtifactReboot_Leave");
    expect(h.status, h.stderr).toBe(0);
    expect(s.counter().counter).toBe(5); // not before ArtifactCommit_Enter
    expect((await mender("ArtifactCommit_Enter")).status).toBe(0);
    expect(s.counter()).toMatchObject({ counter: 6, version: "6.0.0" });
    await s.waitUpdate((u) => u.engine === "mender" && u.stage === "ArtifactCommit_Enter" && u.outcome === "ok", "the commit");
  });

  it("Mender: a failed health check (daemon down) fails ArtifactReboot_Leave; events go straight into the outbox", async () => {
    expect((await mender("ArtifactInstall_Enter", release("m7", "7.0.0", 7))).status).toBe(0);
    await daemon.stop();
    const h = await mender("ArtifactReboot_Leave");
    expect(h.status).toBe(1);
    expect(h.stderr).toMatch(/failed its health check \(daemon: .*CONTROL_UNAVAILABLE/);
    expect((await mender("ArtifactRollback_Enter")).status).toBe(0);
    expect(s.counter().counter).toBe(6);
    daemon = new Daemon(s.site.cfgFile);
    const ev = await s.waitUpdate((u) => u.engine === "mender" && u.stage === "ArtifactReboot_Leave" && u.outcome === "refused", "the failed verdict, recorded while the daemon was down");
    expect(ev.class).toBe("finding");
    await s.waitUpdate((u) => u.engine === "mender" && u.stage === "ArtifactRollback_Enter", "the roll back");
    expect(s.problems()).toEqual([]);
  });
});
