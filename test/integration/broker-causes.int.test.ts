import { afterAll, describe, expect, it } from "vitest";
import { createServer, type AddressInfo, type Server } from "node:net";
import { Writable } from "node:stream";
import { CauseLog } from "../../agent/cause-log";
import { createLogger } from "../../agent/log";
import { join } from "node:path";
import { EmbeddedBroker } from "../../agent/embedded-broker";
import { Runtime } from "../../agent/runtime";
import { makeSite, tempDir, until } from "../helpers/fixture";
import { forwarderOf } from "../helpers/runtime";

interface LogLine {
  level: string;
  msg: string;
  err?: string;
}

/** A pino logger at the default level whose JSON lines the test reads back. */
function capturedLogger(): { log: ReturnType<typeof createLogger>; lines: () => LogLine[] } {
  const out: LogLine[] = [];
  let buf = "";
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      buf += chunk.toString("utf8");
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        out.push(JSON.parse(buf.slice(0, nl)) as LogLine);
        buf = buf.slice(nl + 1);
      }
      cb();
    },
  });
  return { log: createLogger("info", stream), lines: () => out };
}

const listen = (s: Server, port = 0): Promise<number> => new Promise((r) => s.listen(port, "127.0.0.1", () => r((s.address() as AddressInfo).port)));

describe("a gateway that cannot reach its broker says why in its log", () => {
  const t = tempDir();
  afterAll(t.cleanup);

  it("warns once per cause, again when the cause changes, never a flood", async () => {
    // A port nobody listens on: connection refused.
    const probe = createServer();
    const port = await listen(probe);
    await new Promise<void>((r) => probe.close(() => r()));
    const site = makeSite(t.dir, { settings: { "upstream.url": `mqtt://127.0.0.1:${port}`, "upstream.reconnect_min_ms": "50", "upstream.reconnect_max_ms": "100" } });
    const { log, lines } = capturedLogger();
    const rt = new Runtime(site.load(), log);
    const closer = createServer((s) => s.destroy());
    try {
      await rt.start();
      const warns = () => lines().filter((l) => l.level === "warn" && l.msg.startsWith("Cannot reach the SOC broker"));
      await until(() => forwarderOf(rt).counters.reconnects >= 10, 20_000, "ten failed connection attempts");
      expect(warns()).toHaveLength(1);
      expect(warns()[0]!.err).toMatch(/ECONNREFUSED/);
      // Something now accepts and hangs up at once: a different cause, warned once more.
      await listen(closer, port);
      const before = forwarderOf(rt).counters.reconnects;
      await until(() => warns().length >= 2, 20_000, "a warning with the new cause");
      await until(() => forwarderOf(rt).counters.reconnects >= before + 10, 20_000, "ten more failed attempts");
      expect(warns()).toHaveLength(2);
      expect(warns()[1]!.err).not.toBe(warns()[0]!.err);
    } finally {
      await rt.stop("test", 0);
      closer.close();
    }
  });

  it("an outage as long as upstream.outage_report_ms is a signed upstream_outage event once the broker is back: how long, how many attempts, why", async () => {
    const probe = createServer();
    const port = await listen(probe);
    await new Promise<void>((r) => probe.close(() => r()));
    const site = makeSite(join(t.dir, "outage"), { settings: { "upstream.url": `mqtt://127.0.0.1:${port}`, "upstream.protocol_version": "4", "upstream.reconnect_min_ms": "50", "upstream.reconnect_max_ms": "100", "upstream.outage_report_ms": "3000" } });
    const { log } = capturedLogger();
    const rt = new Runtime(site.load(), log);
    const told: { message: string; unmapped: { error_type?: string; outage?: { seconds: number; attempts: number; from: number; to: number; causes: { cause: string; count: number }[] } } }[] = [];
    rt.recorder.onCommit((envs) => {
      for (const e of envs) {
        const o = e.ocsf as (typeof told)[number];
        if (o.unmapped?.error_type === "upstream_outage") told.push(o);
      }
    });
    const broker = new EmbeddedBroker();
    try {
      const t0 = Date.now();
      await rt.start();
      await until(() => forwarderOf(rt).counters.reconnects >= 5 && Date.now() - t0 >= 3200, 20_000, "failed attempts for more than the report threshold");
      await broker.start(port);
      await until(() => forwarderOf(rt).status().state === "up", 20_000, "the connection once the broker listens");
      await until(() => told.length > 0, 20_000, "the upstream_outage event");
      const o = told[0]!.unmapped.outage!;
      expect(o.seconds).toBeGreaterThanOrEqual(3);
      expect(o.attempts).toBeGreaterThanOrEqual(5);
      expect(o.to - o.from).toBeGreaterThanOrEqual(3000);
      expect(o.causes[0]!.cause).toMatch(/ECONNREFUSED/);
      expect(o.causes.reduce((n, c) => n + c.count, 0)).toBe(o.attempts);
      expect(told[0]!.message).toMatch(/^The SOC broker could not be reached for \d+ s \(from .*, \d+ failed attempts: .*ECONNREFUSED.*\(\d+x\)\); the events recorded meanwhile were kept in the outbox and are sent now$/);
      // A reconnect within the threshold (a broker restart: well under 3 s here) is only logged.
      await broker.pause();
      await until(() => forwarderOf(rt).status().state === "down", 20_000, "the connection lost");
      await broker.resume();
      await until(() => forwarderOf(rt).status().state === "up", 20_000, "the connection again");
      expect(told).toHaveLength(1);
    } finally {
      await rt.stop("test", 0);
      await broker.stop();
    }
  });

  it("reminds while a cause persists and says when it is over", () => {
    const seen: { level: string; o: Record<string, unknown>; m: string }[] = [];
    let now = 0;
    const c = new CauseLog({ warn: (o, m) => seen.push({ level: "warn", o: o as Record<string, unknown>, m }), info: (o, m) => seen.push({ level: "info", o: o as Record<string, unknown>, m }) }, "Cannot reach", {}, 60_000, () => now);
    for (let i = 0; i < 100; i++, now += 1000) c.report("ECONNREFUSED");
    // t = 0 (the cause), t = 60 s (reminder: 60 more since), no more before 120 s.
    expect(seen.map((s) => [s.level, s.o.err, s.o.repeats])).toEqual([
      ["warn", "ECONNREFUSED", undefined],
      ["warn", "ECONNREFUSED", 60],
    ]);
    c.clear("Reachable again.");
    c.report("ECONNREFUSED");
    expect(seen.slice(2).map((s) => s.level)).toEqual(["info", "warn"]);
  });
});
