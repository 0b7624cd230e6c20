import { afterEach, describe, expect, it } from "vitest";
import { closeSync, openSync, readdirSync, readFileSync, statSync, truncateSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { account, Daemon, unexpectedProblems } from "../helpers/daemon";
import { sleep, until } from "../helpers/fixture";
import { Harness, pick, TIMEOUT } from "./_harness";
import { formatStatus, type StatusView } from "../../agent/commands/daemon";
import { addModbusProxy, cpuMs, daemonStatus, ext4Image, mountUnavailable, ScadaPoller, smallTmpfs, told, type StorageStatus } from "./_storage";

/**
 * Storage faults under the real daemon (the bundle, as a child process) with its Modbus proxy
 * polled by SCADA and a SOC receiver: in each, SCADA keeps getting answers, nothing is lost
 * without a signed record of it, and the SOC is told.
 */
describe("fault: failing storage never takes the Modbus proxy down", () => {
  let h: Harness | undefined;
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const f of cleanups.splice(0).reverse()) await f();
    await h?.close();
    h = undefined;
  });

  async function site(settings: Record<string, string> = {}) {
    h = await Harness.create({ settings: { "simulate.events_per_s": "300", ...settings } });
    const { device, port } = await addModbusProxy(h.site.cfgFile);
    cleanups.push(() => device.close());
    const poller = new ScadaPoller(port);
    cleanups.push(() => poller.stop());
    const control = h.site.load().config.control.socket;
    const outbox = h.site.load().config.buffer.path;
    return { h, poller, control, outbox };
  }

  const startedAt = new WeakMap<Daemon, number>();
  function daemon(cfgFile: string): Daemon {
    const d = new Daemon(cfgFile);
    startedAt.set(d, Date.now());
    cleanups.push(() => void d.kill());
    return d;
  }

  /** Waits until the proxy of a daemon answers SCADA (the daemon's log is silent). */
  async function up(d: Daemon, poller: ScadaPoller): Promise<void> {
    const since = startedAt.get(d)!;
    await until(() => !d.running || poller.stats(since).answered > 0, 30_000, "the restarted Modbus proxy to answer");
    expect(d.running, d.output.slice(-2000)).toBe(true);
  }

  const damages: [string, (file: string) => void][] = [
    ["a page with flipped bytes", (f) => xorBytes(f, Math.floor(statSync(f).size / 2 / 4096) * 4096 + 64, 3000)],
    ["the file cut to 60 %", (f) => truncateSync(f, Math.floor((statSync(f).size * 0.6) / 4096) * 4096)],
    ["a zeroed header", (f) => zeroBytes(f, 0, 100)],
  ];

  it.each(damages)(
    "%s: the daemon starts, SCADA is answered, the damaged file is kept, the SOC is told what was salvaged",
    async (_name, damage) => {
      const s = await site();
      s.poller.start();
      let d = daemon(s.h.site.cfgFile);
      await up(d, s.poller);
      await until(() => s.h.events >= 200, 30_000, "events to reach the SOC");
      // Events pile up in the outbox while the broker is away, then a clean stop checkpoints them
      // into the database file, which is then damaged.
      await s.h.broker.pause();
      await sleep(pick(1500, 5000));
      await d.stop();
      damage(s.outbox);
      await s.h.broker.resume();
      d = daemon(s.h.site.cfgFile);
      await up(d, s.poller);
      const upAt = Date.now();
      await until(() => told(s.h.lines, "outbox_damaged").length > 0, 30_000, "the SOC to be told of the damaged outbox");
      await until(() => s.poller.stats(upAt + 500).answered >= 10, 10_000, "SCADA answers from the restarted proxy");
      expect(readdirSync(join(s.outbox, "..")).some((f) => f.startsWith("outbox.db.damaged-"))).toBe(true);
      const ev = told(s.h.lines, "outbox_damaged")[0] as { ocsf: { unmapped?: unknown } };
      const info = (ev.ocsf.unmapped as { outbox: { rows_recovered: number; positions_lost: number; moved_to: string } }).outbox;
      expect(info.moved_to).toContain("outbox.db.damaged-");
      const stopAt = Date.now();
      await d.stop();
      await sleep(500);
      // Every position of every boot was received once or named by a signed loss record.
      const a = account(s.h.lines);
      expect(unexpected(a)).toEqual([]);
      expect(a.missing).toEqual([]);
      expect(a.doubled).toEqual([]);
      const lost = a.problems.filter((p) => p.problem === "loss_record" && p.reason === "outbox_damaged");
      // The device names every position it lost, also rows the SOC received before the damage
      // (not yet acknowledged): the SOC's lines count those as received, the rest as lost.
      expect(lost.reduce((n, p) => n + (p.count ?? 0) + (p.received as { count: number }).count, 0)).toBe(info.positions_lost);
      expect(a.heldButToldLost).toEqual([]);
      // Once the daemon is up again SCADA is answered every time.
      const after = s.poller.stats(upAt + 500, stopAt);
      expect(after.answered).toBeGreaterThan(0);
      expect(after.failed).toBe(0);
    },
    TIMEOUT,
  );

  it(
    "the WAL deleted with the broker down, then SIGKILL: the next boot knows, nothing vanishes silently, the SOC is told",
    async () => {
      const s = await site({ "simulate.events_per_s": "500" });
      s.poller.start();
      let d = daemon(s.h.site.cfgFile);
      await up(d, s.poller);
      await until(() => s.h.events >= 100, 30_000, "events to reach the SOC");
      await s.h.broker.pause();
      await sleep(pick(1000, 5000));
      unlinkSync(`${s.outbox}-wal`);
      await sleep(pick(1000, 3000));
      // SCADA is answered while the outbox's file vanished.
      expect(s.poller.stats(Date.now() - 1000).failed).toBe(0);
      await d.kill("SIGKILL");
      await s.h.broker.resume();
      d = daemon(s.h.site.cfgFile);
      await up(d, s.poller);
      await until(() => told(s.h.lines, "outbox_files_changed").length + told(s.h.lines, "outbox_lost").length > 0, 30_000, "the SOC to be told of the deleted WAL");
      await d.stop();
      await sleep(500);
      const a = account(s.h.lines);
      expect(unexpected(a)).toEqual([]);
      expect(a.missing).toEqual([]);
      expect(a.doubled).toEqual([]);
    },
    TIMEOUT,
  );

  const noMount = mountUnavailable();
  it.skipIf(noMount !== undefined)(
    `read-only storage (a loop-mounted ext4 image the kernel remounts read-only)${noMount ? ` [skipped: ${noMount}]` : ""}: SCADA is answered, status says so, a restart runs from memory and the SOC is told`,
    async () => {
      const s0 = await site({ "heartbeat.interval_ms": "500" });
      const img = ext4Image(h!.t.dir);
      cleanups.push(img.unmount);
      const { setConfigValue } = await import("../../agent/config/edit");
      setConfigValue(s0.h.site.cfgFile, "buffer.path", join(img.mnt, "data", "outbox.db"));
      const control = s0.control;
      s0.poller.start();
      let d = daemon(s0.h.site.cfgFile);
      await up(d, s0.poller);
      await until(() => s0.h.events >= 100, 30_000, "events to reach the SOC");
      const before = s0.poller.stats();
      img.failReadOnly();
      await untilStatus(control, (st) => st.outbox.storage.state === "failing", "status to say storage fails");
      const failAt = Date.now();
      await sleep(pick(3000, 30_000));
      const during = s0.poller.stats(failAt);
      expect(d.running, d.output.slice(-2000)).toBe(true);
      expect(during.failed).toBe(0);
      expect(during.answered).toBeGreaterThan(10);
      const st = await daemonStatus(control);
      expect(st.outbox.storage.error).toMatch(/SQLITE_(IOERR|READONLY)|read-only|EROFS/i);
      // A few attempts with back-off, not one per event.
      expect(st.counters.commit_errors).toBeLessThan(20);
      await d.stop();
      // A restart on the read-only storage: it starts, the proxy answers, events go to the SOC.
      d = daemon(s0.h.site.cfgFile);
      await up(d, s0.poller);
      await until(() => told(s0.h.lines, "outbox_unavailable").length > 0, 30_000, "the SOC to be told the outbox runs in memory");
      const inMemory = await daemonStatus(control);
      expect(inMemory.outbox.storage.mode).toBe("memory");
      // What `gatewarden status` prints: not "ok".
      expect(formatStatus(inMemory as unknown as StatusView)).toContain("storage   AT RISK: events are kept in memory only");
      const restarted = Date.now();
      await until(() => s0.poller.stats(restarted).answered >= 5, 10_000, "SCADA answers from the restarted proxy");
      await d.stop();
      logFigures("read-only", { scada_before: before, scada_during: during });
    },
    TIMEOUT,
  );

  it.skipIf(noMount !== undefined)(
    `full storage (a small tmpfs, filled)${noMount ? ` [skipped: ${noMount}]` : ""}: SCADA's answers stay as fast, the daemon backs off, and once space is back the SOC is told`,
    async () => {
      // max_pending 2000: a full disk soon holds more than that in memory, where every new event
      // used to start a commit (and a re-sign) of 2000 events.
      const s0 = await site({ "simulate.events_per_s": "500", "buffer.max_pending": "2000", "buffer.max_bytes": "64MiB" });
      const fs = smallTmpfs(h!.t.dir, 24);
      cleanups.push(fs.unmount);
      const { setConfigValue } = await import("../../agent/config/edit");
      setConfigValue(s0.h.site.cfgFile, "buffer.path", join(fs.mnt, "outbox.db"));
      s0.poller.start();
      const d = daemon(s0.h.site.cfgFile);
      await up(d, s0.poller);
      await until(() => s0.h.events >= 2000, 30_000, "events to reach the SOC");
      const pid = d.proc.pid!;
      const window = pick(4000, 30_000);
      const c0 = cpuMs(pid);
      const t0 = Date.now();
      await sleep(window);
      const cpuBefore = ((cpuMs(pid) - c0) / (Date.now() - t0)) * 100;
      const before = s0.poller.stats(t0);
      // Fill the filesystem: the outbox's next pages find no space.
      const filler = join(fs.mnt, "filler");
      fillUp(filler);
      await untilStatus(s0.control, (st) => st.outbox.storage.state === "failing", "status to say storage fails");
      const c1 = cpuMs(pid);
      const t1 = Date.now();
      await sleep(window);
      const cpuFull = ((cpuMs(pid) - c1) / (Date.now() - t1)) * 100;
      const during = s0.poller.stats(t1);
      const st = await daemonStatus(s0.control);
      expect(st.outbox.storage.error).toMatch(/SQLITE_FULL|ENOSPC|full/i);
      expect(st.counters.commit_errors).toBeLessThan(20);
      expect(during.failed).toBe(0);
      expect(during.answered).toBeGreaterThan(10);
      // SCADA's median answer stays of the same order as before the disk filled.
      expect(during.p50_ms!).toBeLessThan(Math.max(50, before.p50_ms! * 10));
      unlinkSync(filler);
      await until(() => told(s0.h.lines, "storage_failed").length > 0, 40_000, "the SOC to be told storage failed");
      await d.stop();
      await sleep(500);
      const a = account(s0.h.lines);
      expect(unexpected(a)).toEqual([]);
      expect(a.missing).toEqual([]);
      logFigures("full", { cpu_pct_before: Math.round(cpuBefore), cpu_pct_full: Math.round(cpuFull), scada_before: before, scada_during: during, commit_errors: st.counters.commit_errors });
    },
    Math.max(TIMEOUT, 150_000),
  );
});

/**
 * Problems other than duplicates (resent batches) and loss records; the receiver's summary of a
 * message's many duplicate lines (`suppressed`) counts as duplicates.
 */
function unexpected(a: ReturnType<typeof account>): string[] {
  const dupOnly = (p: { problem: string }) => p.problem === "suppressed" && Object.keys((p as { counts?: object }).counts ?? { other: 1 }).every((k) => k === "duplicate");
  return unexpectedProblems({ ...a, problems: a.problems.filter((p) => !dupOnly(p)) }, ["duplicate", "loss_record"]);
}

async function untilStatus(control: string, cond: (s: StorageStatus) => boolean, what: string): Promise<void> {
  const end = Date.now() + 15_000;
  for (;;) {
    if (cond(await daemonStatus(control))) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** Figures for the record (GATEWARDEN_FAULT_FIGURES=1 prints them). */
function logFigures(what: string, f: object): void {
  if (process.env.GATEWARDEN_FAULT_FIGURES === "1") process.stderr.write(`[storage fault figures] ${what}: ${JSON.stringify(f)}\n`);
}

function fillUp(file: string): void {
  const fd = openSync(file, "w");
  const chunk = Buffer.alloc(1024 * 1024, 1);
  try {
    for (;;) writeSync(fd, chunk);
  } catch {
    /* ENOSPC: full */
  } finally {
    closeSync(fd);
  }
}

function xorBytes(file: string, at: number, len: number): void {
  const orig = readFileSync(file).subarray(at, at + len);
  const buf = Buffer.from(orig.map((b) => b ^ 0xa5));
  const fd = openSync(file, "r+");
  writeSync(fd, buf, 0, buf.length, at);
  closeSync(fd);
}

function zeroBytes(file: string, at: number, len: number): void {
  const fd = openSync(file, "r+");
  writeSync(fd, Buffer.alloc(len), 0, len, at);
  closeSync(fd);
}
