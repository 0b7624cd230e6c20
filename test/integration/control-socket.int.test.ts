import { afterEach, describe, expect, it } from "vitest";
import { chmodSync, existsSync, lstatSync, rmSync, statSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { controlCall } from "../../agent/core/control-client";
import { Runtime } from "../../agent/runtime";
import { makeSite, silent, tempDir, until } from "../helpers/fixture";

type Env = { ocsf: { message: string; unmapped?: { error_type?: string; control_socket?: { what: string; restored: boolean; kept_at?: string } } } };

// The daemon's control socket deleted (a cleanup of the run directory) left the daemon running
// but unreachable: status, maintenance windows and update hooks' audit records failed as if it
// were stopped. Another process listening in its place would have answered them, and taken the
// audit records; a widened mode would let other local users send commands. Nothing said so.
describe("the daemon's control socket changed under it", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  it("deleted, replaced by another listener or widened: put right and reported as signed events", async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const site = makeSite(t.dir);
    const loaded = site.load();
    const sock = loaded.config.control.socket;
    const rt = new Runtime(loaded, silent);
    await rt.start();
    cleanups.push(() => rt.stop("test", 0));
    const status = async () => ((await controlCall(sock, "status", {}, 2000)) as { device: string }).device;
    const events: Env[] = [];
    rt.recorder.onCommit((envs) => events.push(...(envs as unknown as Env[])));
    const told = () => events.flatMap((e) => (e.ocsf.unmapped?.error_type === "control_socket_changed" ? [e.ocsf.unmapped.control_socket!] : []));
    const answers = async () => {
      try {
        return (await status()) === loaded.config.device.id;
      } catch {
        return false;
      }
    };
    expect(await status()).toBe(loaded.config.device.id);

    // Deleted: made again, and said so.
    rmSync(sock);
    await until(answers, 20_000, "the daemon to answer on its control socket again");
    await until(() => told().length === 1, 20_000, "the event about the deleted socket");
    expect(told()).toEqual([expect.objectContaining({ what: "deleted", restored: true })]);

    // Another process listening in its place: moved aside (kept), the daemon's socket back.
    rmSync(sock);
    const impostor: Server = createServer((s) => {
      s.on("error", () => undefined);
      s.end('{"id":1,"ok":true,"result":{"device":"impostor"}}\n');
    });
    await new Promise<void>((r) => impostor.listen(sock, () => r()));
    cleanups.push(() => new Promise<void>((r) => impostor.close(() => r())));
    await until(() => told().length === 2, 20_000, "the event about the impostor");
    const replaced = told()[1]!;
    expect(replaced).toMatchObject({ what: "replaced_by_listener", restored: true, kept_at: expect.stringMatching(/\.foreign-/) });
    expect(lstatSync(replaced.kept_at!).isSocket()).toBe(true);
    expect(await status()).toBe(loaded.config.device.id);

    // Widened: owner-only again.
    chmodSync(sock, 0o666);
    await until(() => (statSync(sock).mode & 0o777) === 0o600, 20_000, "the socket to be owner-only again");
    await until(() => told().length === 3, 20_000, "the event about the widened socket");
    expect(told()[2]).toMatchObject({ what: "permissions", restored: true });

    // Stopped: no socket is left behind.
    await rt.stop("test", 0);
    expect(existsSync(sock)).toBe(false);
  });
});
