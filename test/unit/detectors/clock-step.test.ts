import { afterAll, describe, expect, it } from "vitest";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import pino from "pino";
import { startDetection } from "../../../agent/detection/start";
import type { EventDraft } from "../../../agent/core/events";
import { prng } from "../../helpers/prng";
import { tempDir } from "../../helpers/fixture";

// A gateway without a battery clock boots after a power cut at the time it last saved (up to an
// hour behind), and NTP or a person can step its clock back too. Readings carry wall time and
// the engine drops one older than the last: detection used to drop every reading, silently
// (its `bad` counter), until the wall clock caught up. Now the time base stays continuous, the
// step is a signed system event, and a step forward takes the offset back.

const T0 = Date.UTC(2026, 5, 1, 8);
const points = { LEVEL: { source: { modbus: { device: "plc", unit: 1, table: "holding" as const, address: 0, type: "uint16" as const, word_order: "big" as const, scale: 1, offset: 0 } }, unit: "m", kind: "level" as const, range: { min: 0, max: 10 } } };
const config = (dir: string) => ({ state_path: join(dir, "det.db"), save_interval_ms: 60_000, groups: {}, open_after: 1, close_after: 3, budget_per_day: 0.15, correlation_window_ms: 900_000, utc_offset_min: 0, disabled: [] });

/** A detection run whose monotonic clock is the test's: `wall` is what the gateway's clock says. */
async function detection(dir: string) {
  mkdirSync(dir, { recursive: true });
  const events: EventDraft[] = [];
  let mono = 0;
  let wall = 0;
  const d = await startDetection({ points, config: config(dir), sink: { record: (e) => void events.push(e) }, log: pino({ level: "silent" }), mono: () => mono, wall: () => wall });
  const rnd = prng(3);
  /** One reading a second for `n` seconds from wall time `from` (the gateway's clock reads it); `value` overrides the normal level. */
  const feed = (from: number, n: number, value?: (i: number) => number | undefined) => {
    for (let i = 0; i < n; i++) {
      mono += 1000;
      wall = from + i * 1000;
      d.readings.reading({ point: "LEVEL", value: value?.(i) ?? 4 + rnd() * 0.2, ts: wall, source: "poll", quality: "good" });
    }
  };
  const clock = () => events.filter((e) => (e.ocsf.unmapped as { error_type?: string } | undefined)?.error_type === "clock_step");
  const findings = () => events.filter((e) => e.class === "finding");
  /** A reading stamped `ts` delivered now, the clocks unchanged. */
  const late = (ts: number) => {
    mono += 1000;
    wall += 1000;
    d.readings.reading({ point: "LEVEL", value: 4, ts, source: "opcua", quality: "good" });
  };
  return { d, feed, clock, findings, late };
}

describe("the gateway's clock steps", () => {
  const t = tempDir();
  afterAll(t.cleanup);

  it("back by ten minutes while running: no reading dropped, detection goes on, a step forward undoes the offset", async () => {
    const { d, feed, clock, findings } = await detection(join(t.dir, "running"));
    feed(T0, 1200);
    // The clock is set back 600 s; the readings go on every second.
    const back = T0 + 1200 * 1000 - 600_000;
    feed(back, 300);
    expect(d.status()).toMatchObject({ bad: 0 });
    expect(clock()).toHaveLength(1);
    expect(clock()[0]!.ocsf.unmapped).toMatchObject({ step_ms: -600_000, offset_ms: 600_000 });
    expect(clock()[0]!.ocsf.message).toMatch(/^The gateway's clock stepped back by 600\.0 s \(against the monotonic clock\); detection places readings 600\.0 s later/);
    // A level far out of range after the step is still found.
    feed(back + 300_000, 20, () => 60);
    expect(findings().length).toBeGreaterThan(0);
    feed(back + 320_000, 120);
    // NTP sets the clock right again 70 s later (past the one-a-minute limit on these events).
    feed(back + 440_000 + 600_000, 60);
    expect(d.status()).toMatchObject({ bad: 0 });
    expect(clock()).toHaveLength(2);
    expect(clock()[1]!.ocsf.unmapped).toMatchObject({ step_ms: 600_000, offset_ms: 0 });
    expect(clock()[1]!.ocsf.message).toMatch(/detection's time base is back on the clock$/);
    d.stop();
  });

  it("behind the saved detector state after a restart (a power cut without a battery clock)", async () => {
    const dir = join(t.dir, "restart");
    const first = await detection(dir);
    first.feed(T0, 1200);
    first.d.stop(); // saves the state, with its time
    const second = await detection(dir);
    const booted = T0 + 1199 * 1000 - 1799_000; // 1799 s before the last reading saved
    second.feed(booted, 300);
    second.feed(booted + 300_000, 20, () => 60);
    expect(second.d.status()).toMatchObject({ bad: 0 });
    expect(second.findings().length).toBeGreaterThan(0);
    expect(second.clock()).toHaveLength(1);
    expect(second.clock()[0]!.ocsf.message).toMatch(/^The gateway's clock reads 1799\.0 s before the last reading the detectors saw \(their saved state\)/);
    second.d.stop();
  });

  it("jitter and steps forward on a right clock change nothing", async () => {
    const { d, feed, clock } = await detection(join(t.dir, "jitter"));
    feed(T0, 600);
    feed(T0 + 600_000 - 1500, 10); // 1.5 s back: within the tolerance (dropped as out of order, as before)
    feed(T0 + 3600_000, 60); // an hour forward: the gateway was off, or NTP synced after boot
    expect(clock()).toEqual([]);
    d.stop();
  });

  it("a reading that arrives late (queued in the OPC UA process) is not a clock step", async () => {
    const { d, feed, clock, late } = await detection(join(t.dir, "late"));
    feed(T0, 600);
    late(T0 + 600_000 - 5000); // stamped 5 s ago, delivered now: dropped as out of order, as before
    feed(T0 + 600_000, 60);
    expect(clock()).toEqual([]);
    expect(d.status()).toMatchObject({ bad: 1 });
    d.stop();
  });
});
