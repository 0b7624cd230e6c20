import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BIN } from "../../helpers/cli";
import { Daemon } from "../../helpers/daemon";
import { until } from "../../helpers/fixture";
import { GATEWARDEN, haveRauc, RaucSystem } from "./_rauc";
import { updateSite } from "./_site";

/**
 * The real RAUC from Debian installs bundles signed with a test CA into file-backed slots; the
 * Gatewarden hooks (system.conf pre-/post-install handlers, the bundle's install-check and
 * slot-post-install hooks) run inside it, and the verdict after the "reboot" commits with
 * `rauc status mark-good` or rolls back with mark-bad. Every step is a signed event the SOC
 * receiver verifies.
 */
describe.skipIf(!haveRauc())("RAUC installs only what the fleet signed", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  let s: Awaited<ReturnType<typeof updateSite>>;
  let rauc: RaucSystem;
  let daemon: Daemon;

  beforeAll(async () => {
    s = await updateSite(cleanups);
    rauc = new RaucSystem(s.root, { GATEWARDEN, GATEWARDEN_CONFIG: s.site.cfgFile });
    cleanups.push(() => rauc.stop());
    await rauc.start();
    daemon = new Daemon(s.site.cfgFile);
    cleanups.push(async () => void (await daemon.stop()));
    await until(() => s.lines.length > 0, 20_000, "the daemon's boot event at the SOC");
  });
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  const install = (bundle: string) => rauc.rauc(["install", bundle]);
  /** After a reboot: the daemon restarts, then the verdict unit runs the boot stage. */
  const rebootAndJudge = async () => {
    await daemon.stop();
    const booted = await rauc.reboot();
    daemon = new Daemon(s.site.cfgFile);
    const r = await rauc.run(process.execPath, [BIN, "update", "hook", "rauc", "boot", "--config", s.site.cfgFile]);
    return { booted, code: r.status, stderr: r.stderr };
  };

  it("a good bundle installs, and commits after a healthy reboot", async () => {
    const b = rauc.bundle("good", "2.0.0", (c) => s.sign(c, { version: "2.0.0", counter: 2 }));
    const r = await install(b);
    expect(r.status, r.stderr + rauc.serviceLog).toBe(0);
    expect(readFileSync(join(rauc.dir, "slotB.img")).subarray(0, 10).toString()).toBe("good 2.0.0");
    for (const stage of ["install-check", "pre-install", "slot-post-install", "post-install"]) await s.waitUpdate((u) => u.engine === "rauc" && u.stage === stage && u.outcome === "ok" && (u.version === "2.0.0" || stage.includes("post")), stage);
    const v = await rebootAndJudge();
    expect(v.booted).toBe("B");
    expect(v.code, v.stderr).toBe(0);
    expect(rauc.state("B")).toBe("good");
    expect(readFileSync(join(rauc.dir, "boot", "log"), "utf8")).toMatch(/set-state B good\s*$/);
    expect(s.counter()).toMatchObject({ counter: 2, version: "2.0.0" });
    const ev = await s.waitUpdate((u) => u.stage === "boot" && u.outcome === "ok", "the commit");
    expect(ev.ocsf.message).toMatch(/healthy .* committed \(rauc status mark-good\)/);
  });

  const refused = async (name: string, prepare: (content: string) => void, reason: string) => {
    const before = readFileSync(join(rauc.dir, "slotA.img"));
    const b = rauc.bundle(name, "9.0.0", prepare);
    const r = await install(b);
    expect(r.status, r.stdout).not.toBe(0);
    // Refused by the system.conf pre-install handler, before any slot was touched.
    expect(r.stderr + r.stdout).toMatch(/Pre-install handler error/);
    await until(() => rauc.serviceLog.includes(`Update refused at rauc pre-install (${reason})`), 10_000, "the refusal in RAUC's log, with its code");
    expect(readFileSync(join(rauc.dir, "slotA.img")).equals(before)).toBe(true);
    const ev = await s.waitUpdate((u) => u.outcome === "refused" && u.reason === reason && u.stage === "pre-install", `the ${name} refusal`);
    expect(ev.class).toBe("finding");
    expect(s.counter().counter).toBe(2);
  };

  it("refuses a manifest altered after signing", async () => {
    await refused(
      "altered",
      (c) => {
        s.sign(c, { version: "9.0.0", counter: 9 });
        const f = join(c, "gatewarden-release.json");
        writeFileSync(f, readFileSync(f, "utf8").replace('"counter": 9', '"counter": 10'));
      },
      "RELEASE_UNTRUSTED",
    );
  });

  it("refuses a release signed with a key the device does not trust", async () => {
    await refused("wrongkey", (c) => s.sign(c, { version: "9.0.0", counter: 9 }, join(s.other, "release.key")), "RELEASE_UNTRUSTED");
  });

  it("refuses an older release (anti-rollback counter)", async () => {
    await refused("older", (c) => s.sign(c, { version: "9.0.0", counter: 1 }), "RELEASE_ROLLBACK");
  });

  it("refuses a bundle whose file changed after the release was signed", async () => {
    await refused(
      "changed",
      (c) => {
        s.sign(c, { version: "9.0.0", counter: 9 });
        writeFileSync(join(c, "rootfs.img"), "a different image");
      },
      "RELEASE_MISMATCH",
    );
  });

  it("rolls back when the health check fails after the reboot", async () => {
    // Now booted from B; the update goes to A. The SOC is unreachable after the reboot.
    const b = rauc.bundle("unhealthy", "3.0.0", (c) => s.sign(c, { version: "3.0.0", counter: 3 }));
    const r = await install(b);
    expect(r.status, r.stderr).toBe(0);
    await s.waitUpdate((u) => u.stage === "post-install" && u.version === "3.0.0", "the 3.0.0 install");
    await s.broker.pause();
    const v = await rebootAndJudge();
    expect(v.booted).toBe("A");
    expect(v.code).toBe(1);
    expect(v.stderr).toMatch(/failed its health check \(soc: upstream/);
    expect(rauc.state("A")).toBe("bad");
    expect(s.counter().counter).toBe(2);
    await s.broker.resume();
    const ev = await s.waitUpdate((u) => u.stage === "boot" && u.outcome === "refused", "the roll-back verdict");
    expect(ev.ocsf.message).toMatch(/rolled back \(rauc status mark-bad\)/);
    // The bootloader falls back to B, the release still committed.
    await daemon.stop();
    expect(await rauc.reboot()).toBe("B");
    daemon = new Daemon(s.site.cfgFile);
    expect(s.problems()).toEqual([]);
  });
});
