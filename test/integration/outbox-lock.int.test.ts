import { afterAll, describe, expect, it } from "vitest";
import { hostname } from "node:os";
import { join } from "node:path";
import { openOffline } from "../../agent/outbox/offline";
import { recordAudit } from "../../agent/audit";
import { loadConfig } from "../../agent/config/load";
import { Outbox } from "../../agent/outbox/store";
import { exited, gw, gwSpawn } from "../helpers/cli";
import { makeSite, tempDir, until } from "../helpers/fixture";

const MB = 1024 ** 2;

/**
 * The outbox has one holder at a time: the daemon, or a command that opens the file itself.
 * Two real openers in two processes: the daemon (the built bundle) and this test process,
 * which holds the outbox as `gatewarden outbox check` does (or, without taking the lock, as an
 * older Gatewarden or a sqlite3 shell would).
 */
describe("outbox held by another process (built bundle)", () => {
  const t = tempDir();
  afterAll(t.cleanup);
  let n = 0;
  const site = (settings: Record<string, string> = {}) => {
    const s = makeSite(join(t.dir, `s${n}`), { device: `gw-lock-${n++}`, settings: { "log.level": "info", ...settings } });
    return { ...s, outbox: join(s.gwDir, "data", "outbox.db") };
  };
  const rows = (path: string) => {
    const held = openOffline(path, 64 * MB, "test");
    try {
      return held.outbox.readAfter(0, 100).map((r) => JSON.parse(r.body) as { seq: number; ocsf: { unmapped?: { boot?: Record<string, unknown> } } });
    } finally {
      held.close();
    }
  };
  /** Starts the daemon; resolves once it has started or exited. */
  const start = async (cfgFile: string) => {
    const d = gwSpawn(["run", "--config", cfgFile]);
    await until(() => d.exitCode !== null || d.output().includes('"msg":"Gatewarden started."'), 50_000, "the daemon to start or exit");
    return d;
  };

  it("`outbox check` while the daemon runs is refused at once, naming the daemon's pid and host and what to ask it instead", async () => {
    const s = site();
    const d = gwSpawn(["run", "--config", s.cfgFile]);
    try {
      await until(() => gw(["status", "--config", s.cfgFile, "--json"]).code === 0, 30_000, "status");
      const r = gw(["outbox", "check", "--config", s.cfgFile, "--json"]);
      expect(r.code).toBe(1);
      expect(JSON.parse(r.stdout).error.code).toBe("OUTBOX_LOCKED");
      expect(r.stderr).toContain(`error[OUTBOX_LOCKED]: the outbox ${s.outbox} is held by the Gatewarden daemon (pid ${d.pid} on ${hostname()}, since `);
      expect(r.stderr).toContain("ask the running daemon instead (`gatewarden status`");
      // A second daemon is refused at once too, naming the first.
      const second = gw(["run", "--config", s.cfgFile]);
      expect(second.code).toBe(1);
      expect(second.stderr).toContain(`error[OUTBOX_LOCKED]: the outbox ${s.outbox} is held by the Gatewarden daemon (pid ${d.pid} on ${hostname()}`);
      expect(second.stderr).toContain("stop it first");
      expect(gw(["status", "--config", s.cfgFile, "--json"]).code).toBe(0);
    } finally {
      d.kill("SIGTERM");
      expect(await exited(d)).toBe(0);
    }
    // Stopped, the check runs (and names itself while it holds the file).
    expect(JSON.parse(gw(["outbox", "check", "--config", s.cfgFile, "--json"]).stdout).integrity).toBe("ok");
  });

  it("a command holding the outbox past buffer.lock_wait_ms: the start refuses with OUTBOX_LOCKED naming it, and records nothing (no outbox in memory)", async () => {
    const s = site({ "buffer.lock_wait_ms": "200" });
    const holder = openOffline(s.outbox, 64 * MB, "gatewarden outbox check");
    let d: Awaited<ReturnType<typeof start>> | undefined;
    try {
      d = await start(s.cfgFile);
      expect(d.output()).not.toContain("keeping events in memory");
      expect(await exited(d)).toBe(1);
      expect(d.output()).toContain(`error[OUTBOX_LOCKED]: the outbox ${s.outbox} is held by \`gatewarden outbox check\` (pid ${process.pid} on ${hostname()}, since `);
      expect(d.output()).toContain("waited 0.2 s for it to end (buffer.lock_wait_ms); nothing was recorded");
    } finally {
      if (d?.exitCode === null) d.kill("SIGKILL");
      holder.close();
    }
    expect(rows(s.outbox)).toEqual([]);
  });

  it("a command holding the outbox for a moment: the start waits for it, says whom it waits for, and starts on the file", async () => {
    const s = site({ "buffer.lock_wait_ms": "120000" });
    const holder = openOffline(s.outbox, 64 * MB, "gatewarden outbox check");
    const d = gwSpawn(["run", "--config", s.cfgFile]);
    try {
      await until(() => d.output().includes(`held by \`gatewarden outbox check\` (pid ${process.pid} on ${hostname()}`) || d.exitCode !== null, 30_000, "the daemon to say whom it waits for");
      expect(d.output()).toContain("waiting up to 120 s for it to end");
      holder.close();
      await until(() => gw(["status", "--config", s.cfgFile, "--json"]).code === 0, 30_000, "status");
      const st = JSON.parse(gw(["status", "--config", s.cfgFile, "--json"]).stdout) as { outbox: { storage: { mode: string } } };
      expect(st.outbox.storage.mode).toBe("disk");
    } finally {
      holder.close();
      d.kill("SIGTERM");
      expect(await exited(d)).toBe(0);
    }
    const boot = rows(s.outbox)[0]!;
    expect(boot.seq).toBe(0);
    expect(boot.ocsf.unmapped?.boot?.outbox_wait).toMatchObject({ holder: expect.stringContaining(`\`gatewarden outbox check\` (pid ${process.pid}`) });
  });

  it("a process holding the outbox without naming itself (an older Gatewarden, a sqlite3 shell): the start waits, then refuses naming the file, and records nothing", async () => {
    const s = site({ "buffer.lock_wait_ms": "200" });
    const holder = new Outbox(s.outbox, 64 * MB);
    let d: Awaited<ReturnType<typeof start>> | undefined;
    try {
      d = await start(s.cfgFile);
      expect(d.output()).not.toContain("keeping events in memory");
      expect(await exited(d)).toBe(1);
      expect(d.output()).toMatch(/"The outbox is held by another process; waiting up to [\d.]+ s for it to end \(buffer\.lock_wait_ms\)\."/);
      expect(d.output()).toContain(`error[OUTBOX_LOCKED]: the outbox ${s.outbox} is held by another process, which does not name itself in ${s.outbox}.lock`);
      expect(d.output()).toContain("(buffer.lock_wait_ms); nothing was recorded");
    } finally {
      if (d?.exitCode === null) d.kill("SIGKILL");
      holder.close();
    }
    expect(rows(s.outbox)).toEqual([]);
  });
  // An update hook or `integrity accept` in the moment a daemon starts (it holds the outbox before
  // its control socket listens) or while a command holds it: the audit record waits for either.
  it("an audit record while the outbox is held and no daemon answers waits for it (buffer.lock_wait_ms), says so once, and is recorded; with no wait it is refused", async () => {
    const s = site();
    const loaded = loadConfig(s.cfgFile);
    const draft = { class: "audit" as const, severity: 1 as const, ocsf: { class_uid: 6003, activity_id: 1, message: "test: audit while the outbox is held" } };
    const held = openOffline(s.outbox, 64 * MB, "gatewarden outbox check");
    const said: string[] = [];
    const r = await recordAudit(loaded, draft, (m) => {
      said.push(m);
      held.close(); // the command ends
    });
    expect(r.via).toBe("outbox");
    expect(said).toEqual([expect.stringContaining(`the outbox ${s.outbox} is held by \`gatewarden outbox check\` (pid ${process.pid}`)]);
    expect(said[0]).toContain("waiting up to 30 s (buffer.lock_wait_ms)");
    expect(rows(s.outbox).map((e) => (e as unknown as { ocsf: { message: string } }).ocsf.message)).toContain("test: audit while the outbox is held");
    const s2 = site({ "buffer.lock_wait_ms": "0" });
    const held2 = openOffline(s2.outbox, 64 * MB, "gatewarden outbox check");
    try {
      await expect(recordAudit(loadConfig(s2.cfgFile), draft, () => undefined)).rejects.toMatchObject({ code: "OUTBOX_LOCKED" });
    } finally {
      held2.close();
    }
  });
});
