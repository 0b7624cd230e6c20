import { afterEach, describe, expect, it } from "vitest";
import { join } from "node:path";
import { setConfigValue } from "../../agent/config/edit";
import { controlCall } from "../../agent/core/control-client";
import type { Envelope } from "../../agent/core/envelope";
import { account, Daemon, unexpectedProblems } from "../helpers/daemon";
import { tempDir, until, sleep } from "../helpers/fixture";
import { havePeer } from "../helpers/peers";
import { Harness } from "../faults/_harness";
import { HAVE_FUSE, LAZYFS, LazyFs } from "./lazyfs";

/** Short in CI (where /dev/fuse exists); long with `npm run test:powercut`. */
const LONG = process.env.GATEWARDEN_POWERCUT === "long";
const CUTS = LONG ? 20 : 3;
const skip = !HAVE_FUSE || !havePeer(LAZYFS);
const why = !HAVE_FUSE ? " [skipped: no /dev/fuse]" : skip ? " [skipped: LazyFS not built: bash build/lazyfs.sh]" : "";
const DURABLE = new Set(["audit", "finding", "system"]);

/**
 * Power cuts while connected: the outbox lives on LazyFS, the daemon forwards to a broker and a
 * SOC receiver under load, and at a random point the daemon is frozen, every unsynced byte is
 * dropped and the daemon is killed. Nothing the SOC got may vanish from the device (no fork), no
 * committed audit, finding or system event may be lost, and every position up to what each boot
 * durably committed reaches the SOC once.
 */
describe("power cuts while connected (LazyFS)", () => {
  let h: Harness | undefined;
  let fs: LazyFs | undefined;
  const daemons: Daemon[] = [];
  const t = tempDir("gw-powercut.");
  afterEach(async () => {
    for (const d of daemons) await d.kill();
    await fs?.close();
    await h?.close();
    t.cleanup();
  });

  it.skipIf(skip)(`${CUTS} cuts at random points: no committed audit, finding or system event lost, no fork, no bad hash${why}`, async () => {
    fs = new LazyFs(t.dir);
    h = await Harness.create({ settings: { "buffer.path": join(fs.mnt, "outbox.db"), "simulate.events_per_s": "40", "buffer.flush_ms": "5", "heartbeat.interval_ms": "300", "upstream.max_batch_events": "64" } });
    const cfg = h.site.cfgFile;
    const socket = h.site.load().config.control.socket;
    /** Per cut boot: the highest seq of a durable class the daemon had committed before the cut. */
    const committed = new Map<number, number>();
    let lastBoot = -1;
    for (let i = 0; i < CUTS; i++) {
      await fs.mount();
      const d = new Daemon(cfg);
      daemons.push(d);
      const prev = lastBoot;
      const own = () => h!.lines.filter((l) => !("problem" in l) && l.boot > prev);
      await until(() => own().length > 30 || !d.running, 30_000, `boot ${i + 1} to deliver (output: ${d.output.slice(-500)})`);
      expect(d.running).toBe(true);
      await sleep(Math.floor(Math.random() * 400));
      // What this boot has committed so far (a later commit only makes the check weaker).
      const recent = (await controlCall(socket, "events.recent", { limit: 1000 })) as Envelope[];
      const boot = recent.at(-1)!.boot;
      committed.set(boot, Math.max(-1, ...recent.filter((e) => e.boot === boot && DURABLE.has(e.class)).map((e) => e.seq)));
      lastBoot = boot;
      await fs.cut(d.proc.pid!);
      await d.exited;
    }
    // A last, clean boot without load sends everything left, then stops.
    setConfigValue(cfg, "simulate.events_per_s", "0");
    setConfigValue(cfg, "heartbeat.interval_ms", "600000");
    await fs.mount();
    const d = new Daemon(cfg);
    daemons.push(d);
    await until(() => h!.lines.some((l) => !("problem" in l) && l.boot > lastBoot), 30_000, "the last boot to deliver");
    const depth = async () => ((await controlCall(socket, "status")) as { outbox: { depth: number } }).outbox.depth;
    // Judged on the reading that ended the wait: the daemon may record an event of its own just after.
    await until(async () => (await depth()) === 0, 60_000, "the outbox to drain");
    expect((await d.stop()).code).toBe(0);
    await fs.unmount();

    const a = account(h.lines);
    // An ordinary power cut is never tamper-class: no fork, bad hash, clone or chain reset.
    expect(unexpectedProblems(a, ["duplicate"])).toEqual([]);
    expect(a.missing).toEqual([]);
    expect(a.doubled).toEqual([]);
    for (const [boot, seq] of committed) {
      const declared = a.boots.find((b) => b.boot === boot)?.last;
      expect(declared, `boot ${boot}: the next boot event says it ended at ${declared}, but seq ${seq} (audit/finding/system) was committed`).toBeGreaterThanOrEqual(seq);
    }
    const v = await h.verifyOutput();
    expect(Object.keys(v.problems).filter((p) => p !== "duplicate")).toEqual([]);
  }, LONG ? 1_800_000 : 240_000);
});
