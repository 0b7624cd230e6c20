import { afterAll, describe, expect, it } from "vitest";
import { createServer, type AddressInfo, type Server } from "node:net";
import { Writable } from "node:stream";
import { CauseLog } from "../../agent/cause-log";
import { createLogger } from "../../agent/log";
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
