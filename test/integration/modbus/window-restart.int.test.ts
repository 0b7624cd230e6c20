import Database from "better-sqlite3";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Command } from "commander";
import { afterEach, describe, expect, it } from "vitest";
import { createPublicKey } from "node:crypto";
import { controlCall } from "../../../agent/core/control-client";
import { checkEnvelope } from "../../../agent/core/envelope";
import { Runtime } from "../../../agent/runtime";
import { registerWindow } from "../../../agent/commands/window";
import type { WriteWindow } from "../../../protocols/modbus/policy/window-store";
import { silent, tempDir } from "../../helpers/fixture";
import { RawClient, startRig } from "./_harness";
import { engineerProxySite } from "./_daemon-site";

type Body = { class: string; ocsf: { class_uid: number; message: string; unmapped?: { modbus?: { window?: WriteWindow; how?: string } } } };

/** `gatewarden window <args>` against the daemon's control socket, as the CLI runs it. */
async function cli(socket: string, args: string[]): Promise<string> {
  let out = "";
  const program = new Command("gatewarden").exitOverride();
  registerWindow(program, { resolveSocket: async () => socket, stdout: (s) => (out += s), stderr: () => {} });
  await program.parseAsync(["node", "gatewarden", "window", ...args]);
  return out;
}

describe("write windows survive a daemon restart", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  it("keeps an open window with its expiry across a restart, and closes one that expired while down", async () => {
    const { site, device, port } = await engineerProxySite(cleanups);
    const loaded = site.load();
    const socket = loaded.config.control.socket;
    const statePath = loaded.config.modbus!.windows.state_path;
    expect(statePath).toBe(join(site.gwDir, "data", "modbus.db")); // relative to the config file

    const boot = async () => {
      const rt = new Runtime(loaded, silent);
      await rt.start();
      let stopped = false;
      const stop = async () => {
        if (stopped) return;
        stopped = true;
        await rt.stop("test");
      };
      cleanups.push(stop);
      const c = await RawClient.connect(port);
      cleanups.push(() => c.close());
      return { rt, c, stop };
    };
    const windowEvents = (rt: Runtime) => {
      rt.recorder.flush();
      return rt.outbox
        .readAfter(0, 100_000)
        .map((r) => JSON.parse(r.body) as Body)
        .filter((b) => b.ocsf.class_uid === 5019);
    };

    // First run: open a window with the CLI; the write goes through.
    const first = await boot();
    expect(await first.c.request(1, "06 0064 0001")).toBe("8601");
    const opened = JSON.parse(await cli(socket, ["open", "--role", "engineer", "--minutes", "30", "--reason", "pump 1 speed", "--json"])) as WriteWindow;
    expect(await first.c.request(1, "06 0064 0002")).toBe("0600640002");
    const listedBefore = await cli(socket, ["list"]);
    expect(listedBefore).toBe(`${opened.id}  role engineer  until ${new Date(opened.expires_at).toISOString()}  by ${opened.opened_by}: pump 1 speed\n`);
    first.c.close();
    await first.stop();
    expect(existsSync(statePath)).toBe(true);

    // Second run: the same window, same expiry, still in force; `window list` prints the same.
    const second = await boot();
    expect(await cli(socket, ["list"])).toBe(listedBefore);
    expect(JSON.parse(await cli(socket, ["list", "--json"]))).toEqual([opened]);
    expect(await second.c.request(1, "06 0064 0003")).toBe("0600640003");
    const status = (await controlCall(socket, "modbus.status")) as { windows: WriteWindow[] };
    expect(status.windows).toEqual([opened]);
    expect(windowEvents(second.rt).filter((b) => b.ocsf.unmapped?.modbus?.how)).toEqual([]); // nothing closed it
    second.c.close();
    await second.stop();

    // While the daemon is down, the window's time runs out (its expiry is moved into the past,
    // as if 30 minutes had gone by).
    const db = new Database(statePath);
    db.prepare("UPDATE write_windows SET expires_at = ? WHERE id = ?").run(Date.now() - 1000, opened.id);
    db.close();

    // Third run: closed at start, with a signed "window closed" audit event (how: expired).
    const third = await boot();
    expect(await cli(socket, ["list"])).toBe("No write window is open.\n");
    expect(await third.c.request(1, "06 0064 0004")).toBe("8601");
    const closed = windowEvents(third.rt).filter((b) => b.ocsf.unmapped?.modbus?.how === "expired");
    expect(closed).toHaveLength(1);
    expect(closed[0]!.class).toBe("audit");
    expect(closed[0]!.ocsf.message).toBe("Write window for role engineer expired");
    expect(closed[0]!.ocsf.unmapped!.modbus!.window!.id).toBe(opened.id);
    expect(checkEnvelope(closed[0], createPublicKey(readFileSync(join(site.gwDir, "keys", "device.pub"))))).toBe("ok"); // signed
    third.c.close();
    await third.stop();
    expect(device.holding[100]).toBe(3);

    // Fourth run: the expired window is not reported twice.
    const fourth = await boot();
    const before = closed.length;
    expect(windowEvents(fourth.rt).filter((b) => b.ocsf.unmapped?.modbus?.how === "expired")).toHaveLength(before);
    await fourth.stop();
  });

  it("moves an unreadable state file aside with a system event and starts with no window open", async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const statePath = join(t.dir, "data", "modbus.db");
    mkdirSync(join(t.dir, "data"));
    writeFileSync(statePath, "this is not an SQLite database, it was cut short by a power failure".repeat(100));
    const rig = await startRig(
      { identities: [{ match: { address: "127.0.0.1" }, role: "eng" }], roles: { eng: { units: [1], functions: ["read-write"], write: { holding: ["1"] }, write_window: "required" } } },
      {},
      { windowStatePath: statePath },
    );
    cleanups.push(() => rig.close());
    const errors = rig.sink.drafts.filter((d) => (d.ocsf.unmapped as { error_type?: string } | undefined)?.error_type === "window_state");
    expect(errors).toHaveLength(1);
    expect(errors[0]!.class).toBe("system");
    const aside = readdirSync(join(t.dir, "data")).filter((f) => f.startsWith("modbus.db.unreadable-"));
    expect(aside).toHaveLength(1);
    expect(readFileSync(join(t.dir, "data", aside[0]!), "utf8")).toMatch(/^this is not an SQLite database/);
    expect(rig.service.windows!.list()).toEqual([]);
    const c = await RawClient.connect(rig.port);
    cleanups.push(() => c.close());
    expect(await c.request(1, "06 0001 0001")).toBe("8601");
    // The new state file works: a window opened now is kept.
    const w = rig.service.windows!.openWindow({ role: "eng", minutes: 5, reason: "after recovery" });
    expect(await c.request(1, "06 0001 0001")).toBe("0600010001");
    const db = new Database(statePath, { readonly: true });
    expect(db.prepare("SELECT id FROM write_windows").all()).toEqual([{ id: w.id }]);
    db.close();
  });
});
