/**
 * The SOC receiver's own runs: while it is down nothing is verified or reported, so each start
 * says how the run before it ended (`receiver_restarted`): stopped on a signal, crashed on an
 * error nothing handled (recorded by the real `soc receive` process before it exits 70), or
 * killed without a trace (SIGKILL: the OOM killer, a power cut).
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { CliProcess } from "../helpers/daemon";
import { until } from "../helpers/fixture";
import { aedesSite, startReceiver, type Cleanups } from "../helpers/soc-rig";

const INJECTOR = `process.on("SIGUSR2", () => setTimeout(() => { throw new TypeError("injected by the test"); }, 0));\n`;

describe("the SOC receiver reports how its previous run ended", () => {
  const cleanups: Cleanups = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  /** `soc receive` as its own process on the site's SOC dir, subscribed. */
  async function receiverProcess(dir: string, broker: string, socDir: string, nodeArgs: string[] = []): Promise<CliProcess> {
    const p = new CliProcess(["soc", "receive", "--broker", broker, "--dir", socDir, "--out", join(dir, "soc.jsonl"), "--mqtt-version", "4", "--client-id", "soc-1"], nodeArgs);
    cleanups.push(async () => void (await p.kill("SIGKILL")));
    await until(() => p.output.includes("SOC receiver subscribed.") || !p.running, 30_000, "the receiver process to subscribe");
    expect(p.running, p.output).toBe(true);
    return p;
  }

  it("a first start writes no line; a restart after a stop names the stop and the time down", async () => {
    const { site, broker } = await aedesSite(cleanups);
    const first = await startReceiver(cleanups, { broker: broker.url, dir: site.socDir });
    expect(first.of("receiver_restarted")).toEqual([]);
    await first.rx.stop("stopped by SIGTERM");
    const again = await startReceiver(cleanups, { broker: broker.url, dir: site.socDir });
    const [l, ...more] = again.of("receiver_restarted");
    expect(more).toEqual([]);
    expect(l).toMatchObject({ problem: "receiver_restarted", device: null, previous_end: "stopped", previous_stop_reason: "stopped by SIGTERM", detail: expect.stringMatching(/^the receiver was stopped at \S+ \(stopped by SIGTERM\) and started again \d+\.\d s later$/) });
    expect(l!.down_ms).toBeGreaterThanOrEqual(0);
  });

  it("a crash is recorded before the process exits 70, and the next start names it", async () => {
    const { dir, site, broker } = await aedesSite(cleanups);
    const injector = join(dir, "throw-on-usr2.cjs");
    writeFileSync(injector, INJECTOR);
    const p = await receiverProcess(dir, broker.url, site.socDir, ["--require", injector]);
    p.proc.kill("SIGUSR2");
    const r = await p.exited;
    expect({ code: r.code, output: p.output.slice(-2000) }).toEqual({ code: 70, output: expect.stringContaining("The SOC receiver crashed on an error nothing handled.") });
    const next = await startReceiver(cleanups, { broker: broker.url, dir: site.socDir });
    expect(next.of("receiver_restarted")).toEqual([
      expect.objectContaining({ previous_end: "crashed", previous_stop_reason: "uncaught error: TypeError: injected by the test", detail: expect.stringContaining("crashed at") }),
    ]);
  });

  it("a run killed without a trace (SIGKILL) is reported unclean, with when it was last known to run", async () => {
    const { dir, site, broker } = await aedesSite(cleanups);
    const p = await receiverProcess(dir, broker.url, site.socDir);
    const t0 = Date.now();
    expect((await p.kill("SIGKILL")).signal).toBe("SIGKILL");
    const next = await startReceiver(cleanups, { broker: broker.url, dir: site.socDir });
    const [l, ...more] = next.of("receiver_restarted");
    expect(more).toEqual([]);
    expect(l).toMatchObject({ previous_end: "unclean", detail: expect.stringContaining("ended without stopping: it was killed") });
    expect(Date.parse(l!.previous_last_alive as string)).toBeLessThanOrEqual(t0);
  });
});
