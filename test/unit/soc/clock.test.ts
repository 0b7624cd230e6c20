import { describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import { createPublicKey, generateKeyPairSync } from "node:crypto";
import { DeviceStream } from "../../helpers/device-stream";
import { ClockWatch } from "../../../agent/soc/clock";
import { StreamVerifier, type OutLine, type ProblemLine } from "../../../agent/soc/verifier";

// Events carry the gateway's wall time; a gateway without a battery clock starts after a power
// cut on the time it last saved, and nothing told the SOC that its events' times were wrong.
const dev = generateKeyPairSync("ed25519");
const T = Date.UTC(2026, 11, 7, 10);
const MIN = 60_000;

function setup(db = new Database(":memory:")) {
  const v = new StreamVerifier(db, { get: (d: string) => (d === "gw-1" ? createPublicKey(dev.privateKey) : undefined) }, { gapTimeoutMs: 60_000, dedupeWindow: 1000 });
  const c = new ClockWatch(db, 5 * MIN);
  /** What the receiver writes for events received at `now`: the verifier's lines, then the clock's. */
  const receive = (events: ReturnType<DeviceStream["next"]>[], now: number): ProblemLine[] => {
    const out: OutLine[] = v.ingest("gw-1", events, now);
    return [...out.filter((l): l is ProblemLine => "problem" in l), ...c.heard(out, now)];
  };
  return { db, receive };
}

describe("gateway clocks the SOC can tell are wrong", () => {
  it("events on time, or late (a backlog), or arriving out of order are no problem", () => {
    const { receive } = setup();
    const d = new DeviceStream("gw-1", dev.privateKey);
    d.time = T;
    const e = [d.firstBoot(1000)];
    for (let i = 1; i < 6; i++) {
      d.time = T + i * MIN;
      e.push(d.next());
    }
    expect(receive([e[0]!, e[1]!], T + MIN + 500)).toEqual([]);
    // Two hours late (an outage), and the later position before the earlier one.
    expect(receive([e[3]!, e[2]!], T + 2 * 60 * MIN)).toEqual([]);
    expect(receive([e[4]!, e[5]!], T + 2 * 60 * MIN)).toEqual([]);
  });

  it("an event stamped after it arrived is clock_ahead, once per boot", () => {
    const { receive } = setup();
    const d = new DeviceStream("gw-1", dev.privateKey);
    d.time = T + 20 * MIN;
    const out = receive([d.firstBoot(1000), d.next()], T);
    expect(out.map((p) => [p.problem, p.boot, p.first, p.ahead_ms])).toEqual([["clock_ahead", 1000, 0, 20 * MIN]]);
    expect(out[0]!.detail).toBe("gw-1's event 1000:0 is stamped 2026-12-07T10:20:00.000Z, 20.0 min after it was received: the gateway's clock is ahead (or this receiver's is behind); its events' times are not to be trusted for ordering or correlation until it is set right");
    expect(receive([d.next()], T + MIN)).toEqual([]);
    expect(receive([d.reboot()], T + 2 * MIN).map((p) => p.problem)).toEqual(["clock_ahead"]); // a new boot: told again
    // Set right: its stamps go back 17 minutes, which is said too.
    d.time = T + 3 * MIN;
    expect(receive([d.next()], T + 3 * MIN).map((p) => [p.problem, p.back_ms])).toEqual([["clock_back", 17 * MIN]]);
    d.time = T + 7 * MIN;
    expect(receive([d.next()], T + 3 * MIN)).toEqual([]); // up to 5 minutes ahead: within the tolerance
  });

  it("a boot stamped before the last event of the boot before is clock_back (the power cut without a battery clock), once per boot, kept across a restart", () => {
    const db = new Database(":memory:");
    let { receive } = setup(db);
    const d = new DeviceStream("gw-1", dev.privateKey);
    d.time = T;
    receive([d.firstBoot(1000), d.next()], T);
    d.time = T + 50 * MIN;
    expect(receive([d.next()], T + 50 * MIN)).toEqual([]);
    // Power cut at 10:50; the board comes back on the time it saved at 10:00.
    d.time = T + 2 * MIN;
    const out = receive([d.reboot()], T + 52 * MIN);
    expect(out.map((p) => [p.problem, p.boot, p.first, p.back_ms, p.after])).toEqual([["clock_back", 1001, 0, 48 * MIN, { boot: 1000, seq: 2 }]]);
    expect(out[0]!.detail).toMatch(/^gw-1's event 1001:0 is stamped 2026-12-07T10:02:00.000Z, 48.0 min before its earlier event 1000:2 \(2026-12-07T10:50:00.000Z\): the gateway's clock was set back in between/);
    // The receiver restarts (same state): the same boot is not told again.
    ({ receive } = setup(db));
    d.time = T + 3 * MIN;
    expect(receive([d.next()], T + 53 * MIN)).toEqual([]);
    // NTP steps it right: forward is not a problem; a later step back in another boot is.
    d.time = T + 54 * MIN;
    expect(receive([d.next()], T + 54 * MIN)).toEqual([]);
    d.time = T + 30 * MIN;
    expect(receive([d.reboot()], T + 55 * MIN).map((p) => p.problem)).toEqual(["clock_back"]);
  });
});
