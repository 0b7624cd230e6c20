/**
 * The daemon crashing on an error nothing handled: the SOC gets the crash as the run's last
 * event (severity 4, with the error), and the next boot says how the run before it ended.
 * The error is thrown by a script `--require`d into the real daemon's process, on SIGUSR2,
 * from a timer callback: an uncaught exception from the event loop, as a bug would throw.
 * And the daemon held up (SIGSTOP, then SIGCONT): the SOC is told how long and why.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { EventLine, OutLine } from "../../agent/soc/verifier";
import { Daemon } from "../helpers/daemon";
import { sleep, until } from "../helpers/fixture";
import { Harness, TIMEOUT } from "./_harness";

const INJECTOR = `process.on("SIGUSR2", () => setTimeout(() => { throw new TypeError("injected by the test"); }, 0));\n`;

describe("fault: the daemon crashes on an uncaught error, or is held up", () => {
  let h: Harness | undefined;
  const daemons: Daemon[] = [];
  afterEach(async () => {
    for (const d of daemons) await d.kill("SIGKILL");
    daemons.length = 0;
    await h?.close();
    h = undefined;
  });

  it("records the crash as its last event before it exits, and the next boot names it", async () => {
    h = await Harness.create({ settings: { "log.level": "warn" } });
    const injector = join(h.site.gwDir, "throw-on-usr2.cjs");
    writeFileSync(injector, INJECTOR);
    const events = () => h!.lines.filter((l: OutLine): l is EventLine => !("problem" in l));
    const d = new Daemon(h.site.cfgFile, ["--require", injector]);
    daemons.push(d);
    await until(() => events().some((l) => l.seq === 0), 20_000, "the first boot to deliver");
    const boot = events().find((l) => l.seq === 0)!.boot;
    d.proc.kill("SIGUSR2");
    const r = await d.exited;
    expect({ code: r.code, output: d.output.slice(-2000) }).toEqual({ code: 70, output: expect.stringContaining("Gatewarden crashed on an error nothing handled.") });
    // systemd would restart it: the next run sends what the crashed one recorded.
    const d2 = new Daemon(h.site.cfgFile);
    daemons.push(d2);
    await until(() => events().some((l) => l.boot > boot && l.seq === 0), 20_000, "the second boot to deliver");
    const crash = events().filter((l) => l.boot === boot).at(-1)!;
    expect(crash).toMatchObject({ class: "system", severity: 4, ocsf: { class_uid: 6002, activity_id: 4, message: "Gatewarden crashed (uncaught error: TypeError: injected by the test)", unmapped: { stop: { reason: "uncaught error: TypeError: injected by the test", crashed: true } } } });
    const next = events().find((l) => l.boot > boot && l.seq === 0)!;
    expect(next.ocsf.unmapped).toMatchObject({ boot: { previous_boot: boot, previous_last_seq: crash.seq, previous_end: "crashed", previous_stop_reason: "uncaught error: TypeError: injected by the test" } });
    // A crash it recorded is not also reported as a run that ended without stopping.
    expect(events().filter((l) => (l.ocsf.finding_info as { types?: string[] } | undefined)?.types?.includes("gatewarden.unclean_end"))).toEqual([]);
    expect((await d2.stop()).code).toBe(0);
  }, TIMEOUT);

  it("a hold-up of the whole process (SIGSTOP for 2.5 s) reaches the SOC as a loop_stall event", async () => {
    h = await Harness.create({ settings: { "log.level": "warn", "heartbeat.stall_report_ms": "1500" } });
    const events = () => h!.lines.filter((l: OutLine): l is EventLine => !("problem" in l));
    const d = new Daemon(h.site.cfgFile);
    daemons.push(d);
    await until(() => events().some((l) => l.seq === 0), 20_000, "the daemon to deliver");
    d.proc.kill("SIGSTOP");
    await sleep(2500); // the fault itself: how long the process is held
    d.proc.kill("SIGCONT");
    const stall = () => events().find((l) => (l.ocsf.unmapped as { error_type?: string } | undefined)?.error_type === "loop_stall");
    await until(() => stall() !== undefined, 20_000, "the hold-up to reach the SOC");
    const e = stall()!;
    expect(e).toMatchObject({ class: "system", severity: 3, ocsf: { class_uid: 6002, activity_id: 99, message: expect.stringMatching(/^The daemon's event loop was held up for \d+\.\d s: the Modbus proxy did not answer, .*; no outbox commit explains it: the process was stopped, starved of CPU or busy/) } });
    expect((e.ocsf.unmapped as { stall_ms: number }).stall_ms).toBeGreaterThanOrEqual(2000);
    expect((await d.stop()).code).toBe(0);
  }, TIMEOUT);
});
