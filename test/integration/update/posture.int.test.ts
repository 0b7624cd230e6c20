import { appendFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BIN } from "../../helpers/cli";
import { Daemon } from "../../helpers/daemon";
import { until } from "../../helpers/fixture";
import { runAsync } from "./_rauc";
import { updateSite } from "./_site";

const listen = (): Promise<{ server: Server; port: number }> =>
  new Promise((resolve) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => resolve({ server, port: (server.address() as { port: number }).port }));
  });

describe("posture", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  let s: Awaited<ReturnType<typeof updateSite>>;
  let declared: number;
  let rogue: number;

  beforeAll(async () => {
    s = await updateSite(cleanups);
    const a = await listen();
    const b = await listen();
    cleanups.push(() => void a.server.close(), () => void b.server.close());
    declared = a.port;
    rogue = b.port;
    appendFileSync(s.site.cfgFile, `posture:\n  declared_ports: [${declared}]\n`);
    const { setConfigValue } = await import("../../../agent/config/edit");
    setConfigValue(s.site.cfgFile, "heartbeat.interval_ms", "500");
    const daemon = new Daemon(s.site.cfgFile);
    cleanups.push(async () => void (await daemon.stop()));
  });
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  type Line = { class: string; ocsf: { message: string; unmapped?: { heartbeat?: { posture?: Record<string, unknown> }; posture?: { listener: { port: number } } } } };
  const events = () => s.lines.filter((l) => !("problem" in l)) as unknown as Line[];

  it("heartbeats carry the posture fields; an undeclared listener is a finding, a declared one is not", async () => {
    await until(() => events().some((e) => e.class === "heartbeat" && e.ocsf.unmapped?.heartbeat?.posture?.clock), 20_000, "a heartbeat with posture");
    const p = events().find((e) => e.class === "heartbeat" && e.ocsf.unmapped?.heartbeat?.posture?.clock)!.ocsf.unmapped!.heartbeat!.posture!;
    expect(p).toMatchObject({
      load_1m: expect.any(Number),
      mem_used_pct: expect.any(Number),
      outbox_used_pct: expect.any(Number),
      clock: { synchronized: expect.toBeOneOf([true, false, null]), source: expect.any(String) },
      kernel: expect.any(String),
      secure_boot: expect.toBeOneOf(["enabled", "disabled", "unknown"]),
      update: { slot: null, version: null, counter: 0, pending: null },
      integrity: "not_configured",
    });
    const listeners = p.listeners as { address: string; port: number; declared: boolean }[];
    expect(listeners).toContainEqual({ address: "127.0.0.1", port: declared, declared: true });
    expect(listeners).toContainEqual({ address: "127.0.0.1", port: rogue, declared: false });
    await until(() => events().some((e) => e.class === "finding" && e.ocsf.unmapped?.posture?.listener.port === rogue), 20_000, "the undeclared-listener finding");
    expect(events().some((e) => e.class === "finding" && e.ocsf.unmapped?.posture?.listener.port === declared)).toBe(false);
  });

  it("gatewarden posture --json answers from the running daemon", async () => {
    const r = await runAsync(process.execPath, [BIN, "posture", "--json", "--config", s.site.cfgFile], process.env);
    expect(r.status, r.stderr).toBe(0);
    const p = JSON.parse(r.stdout) as Record<string, unknown>;
    for (const k of ["load_1m", "mem_used_pct", "disk_used_pct", "temperature_c", "outbox_used_pct", "clock", "listeners", "undeclared_listeners", "kernel", "os", "secure_boot", "update", "integrity"]) expect(p).toHaveProperty(k);
    const human = await runAsync(process.execPath, [BIN, "posture", "--config", s.site.cfgFile], process.env);
    expect(human.stdout).toMatch(new RegExp(`127\\.0\\.0\\.1:${rogue} \\(undeclared\\)`));
  });
});
