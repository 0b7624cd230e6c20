import { afterEach, describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import { join } from "node:path";
import { setConfigValue } from "../../agent/config/edit";
import { loadConfig } from "../../agent/config/load";
import { controlCall } from "../../agent/core/control-client";
import { account, Daemon, outboxCheck, unexpectedProblems } from "../helpers/daemon";
import { sleep, until } from "../helpers/fixture";
import { Harness, pick, TIMEOUT } from "./_harness";

describe("fault: the daemon killed with SIGKILL mid-batch, repeatedly", () => {
  let h: Harness | undefined;
  const daemons: Daemon[] = [];
  afterEach(async () => {
    for (const d of daemons) await d.kill("SIGKILL");
    daemons.length = 0;
    await h?.close();
    h = undefined;
  });

  const kills = pick(3, 30);
  it(`is killed ${kills} times at 2000 events/s; the outbox passes its integrity check every time; the SOC gets every committed event once`, async () => {
    h = await Harness.create({ settings: { "simulate.events_per_s": "2000", "upstream.max_batch_events": "128", "heartbeat.interval_ms": "500", "log.level": "warn" } });
    const cfg = h.site.cfgFile;
    const dbPath = join(h.site.gwDir, "data", "outbox.db");
    const checks: string[] = [];
    let lastHead = -1;
    for (let i = 0; i < kills; i++) {
      const d = new Daemon(cfg);
      daemons.push(d);
      // Wait until this boot is delivering (its own events reach the SOC: the receiver may still
      // be working through the previous boot's backlog), then kill it mid-stream.
      const prevHead = lastHead;
      const ownEvents = () => h!.lines.filter((l) => !("problem" in l) && l.boot > prevHead).length;
      await until(() => ownEvents() > 50 || !d.running, 20_000, `boot ${i + 1} to deliver`).catch((e: Error) => {
        throw new Error(`${e.message} (output: ${d.output.slice(-2000)})`);
      });
      // A restart right after a SIGKILL must not be refused (the killed one's locks are gone).
      if (!d.running) throw new Error(`boot ${i + 1} exited on its own (${d.proc.exitCode ?? d.proc.signalCode}): ${d.output.slice(-2000)}`);
      // It delivers from the outbox file, not from memory or a file it moved aside.
      const own = h.lines.find((l) => !("problem" in l) && l.boot > prevHead && l.seq === 0);
      expect(own, `boot ${i + 1}: its boot event`).toBeDefined();
      const bootInfo = own && !("problem" in own) ? (own.ocsf.unmapped as { boot?: Record<string, unknown> } | undefined)?.boot : undefined;
      // Each boot after a kill says the run before it ended without stopping.
      expect({ boot: i + 1, outbox_incident: bootInfo?.outbox_incident, outbox_lock: bootInfo?.outbox_lock, previous_end: bootInfo?.previous_end, output: d.output.slice(-2000) }).toEqual({ boot: i + 1, outbox_incident: undefined, outbox_lock: undefined, previous_end: i === 0 ? null : "unclean", output: d.output.slice(-2000) });
      await sleep(Math.floor(Math.random() * 200));
      const r = await d.kill("SIGKILL");
      expect(r.signal).toBe("SIGKILL");
      // The integrity check after every kill: in-process (fast), and through the CLI after the last.
      const c = i === kills - 1 ? outboxCheck(cfg) : integrity(dbPath);
      checks.push(c.integrity);
      expect(c.integrity).toBe("ok");
      expect(c.head, `boot ${i + 1}: the outbox has a chain head`).toBeTruthy();
      expect(c.head!.boot, `the outbox's chain head after boot ${i + 1} was killed (output: ${d.output.slice(-2000)})`).toBeGreaterThan(lastHead);
      lastHead = c.head!.boot;
    }
    expect(checks).toEqual(Array(kills).fill("ok"));
    // A last, clean boot without synthetic load drains the backlog, then stops on SIGTERM.
    setConfigValue(cfg, "simulate.events_per_s", "0");
    setConfigValue(cfg, "heartbeat.interval_ms", "600000");
    const d = new Daemon(cfg);
    daemons.push(d);
    // The outbox's depth as the running daemon reports it (it holds the file exclusively).
    const socket = loadConfig(cfg).config.control.socket;
    const ro = async () => ((await controlCall(socket, "status").catch(() => undefined)) as { outbox?: { depth: number } } | undefined)?.outbox?.depth;
    // Up (its boot event reached the SOC: SIGTERM handlers are installed) and drained.
    await until(() => h!.lines.some((l) => !("problem" in l) && l.boot > lastHead), 20_000, "the last boot to start delivering");
    await until(async () => (await ro()) === 0, pick(30_000, 120_000), "the last boot to drain the backlog");
    const r = await d.stop();
    expect({ code: r.code, output: d.output.slice(-2000) }).toEqual({ code: 0, output: d.output.slice(-2000) });
    const c = outboxCheck(cfg);
    expect(c.integrity).toBe("ok");
    expect(c.depth).toBe(0);
    const head = c.head!;
    await until(() => h!.lines.some((l) => !("problem" in l) && l.boot === head.boot && l.seq === head.seq), 20_000, `the shutdown event ${head.boot}:${head.seq} to reach the SOC`);
    await sleep(300);
    const a = account(h.lines, head.seq);
    // Duplicates are expected (sent, not acknowledged before the kill, replayed): reported, not doubled.
    expect(unexpectedProblems(a, ["duplicate"])).toEqual([]);
    expect(a.doubled).toEqual([]);
    expect(a.missing).toEqual([]);
    expect(a.lost.size).toBe(0);
    expect(a.boots.length).toBe(kills + 1);
    expect(a.boots.at(-1)).toEqual({ boot: head.boot, last: head.seq });
    // One finding per killed run, naming it.
    const unclean = a.events.filter((e) => (e.ocsf.finding_info as { types?: string[] } | undefined)?.types?.includes("gatewarden.unclean_end"));
    expect([...new Set(unclean.map((e) => (e.ocsf.unmapped as { previous_boot: number }).previous_boot))].sort()).toEqual(a.boots.slice(0, -1).map((b) => b.boot));
    const v = await h.verifyOutput();
    expect(v.problems).toEqual({});
    expect(v.verified).toBe(a.events.length);
  }, TIMEOUT);
});

/** SQLite's integrity check and the chain head, as `gatewarden outbox check` reports them. */
function integrity(dbPath: string): { integrity: string; head: { boot: number; seq: number } | undefined } {
  const db = new Database(dbPath);
  try {
    const r = (db.pragma("integrity_check") as { integrity_check: string }[]).map((x) => x.integrity_check);
    // The chain head as the outbox reads it: the newest row's, or the chain table's when that
    // is ahead (the table is written only when rows are deleted without new ones).
    const table = db.prepare("SELECT boot, seq FROM chain WHERE id = 1").get() as { boot: number; seq: number } | undefined;
    const last = db.prepare("SELECT boot, seq FROM events ORDER BY id DESC LIMIT 1").get() as { boot: number; seq: number } | undefined;
    const head = !last || (table && (table.boot > last.boot || (table.boot === last.boot && table.seq >= last.seq))) ? table : last;
    return { integrity: r.join("; "), head };
  } finally {
    db.close();
  }
}
