import { describe, expect, it } from "vitest";
import type { EventDraft } from "../../../agent/core/events";
import { DetectionEngine } from "../../../detectors/engine";
import { parseSite } from "../../../detectors/site";
import { prng, T0 } from "./_helpers";

const site = parseSite(
  "name: t\ntanks:\n  T7: { level: L_T7, area_m2: 40, controls: [{ actuator: S_PU10, on_below: 2.5, off_above: 4.8 }] }\n",
);

function engine(opts: Record<string, unknown> = {}) {
  const events: EventDraft[] = [];
  const e = new DetectionEngine({
    points: { L_T7: { kind: "level", range: { min: 0, max: 5 } }, S_PU10: { kind: "state", range: { min: 0, max: 1 } } },
    site,
    sink: { record: (d) => events.push(d) },
    options: { close_after: 2, ...opts },
  });
  const row = (h: number, level: number, pump: number): void => {
    const ts = T0 + h * 3_600_000;
    e.reading({ point: "L_T7", value: level, ts, source: "t", quality: "good" });
    e.reading({ point: "S_PU10", value: pump, ts, source: "t", quality: "good" });
    e.flush();
  };
  return { e, events, row };
}

describe("DetectionEngine incidents", () => {
  it("opens one incident, updates it, closes after the hysteresis, as OCSF Detection Findings", () => {
    const { e, events, row } = engine();
    row(0, 3, 1);
    row(1, 5.0, 1); // control rule
    row(2, 5.3, 1); // control rule + out of range: update (new detector)
    row(3, 4.0, 1);
    expect(e.openIncidents()).toHaveLength(1);
    row(4, 4.0, 1);
    expect(e.openIncidents()).toHaveLength(0);
    expect(events.map((d) => d.ocsf.activity_id)).toEqual([1, 2, 3]);
    const open = events[0]!;
    expect(open).toMatchObject({ class: "finding", severity: 4, ocsf: { class_uid: 2004 } });
    const info = open.ocsf.finding_info as { uid: string; title: string; desc: string };
    expect(info.title).toBe("Pump state contradicts PLC level rules on L_T7");
    expect(info.desc).toContain("S_PU10 is running while tank T7 level L_T7 reads 5 m, above its stop level 4.8 m");
    expect((events[2]!.ocsf.finding_info as { uid: string }).uid).toBe(info.uid);
    expect(events[2]!.ocsf.message).toMatch(/^Closed: /);
    const ev = (open.ocsf.evidences as { data: Record<string, unknown> }[])[0]!.data;
    expect(ev).toMatchObject({ point: "L_T7", observed: 5, expected: 4.8 });
  });

  it("names the identity of an allowed write followed by an anomaly on a related point", () => {
    const { events, e, row } = engine({ correlation_window_ms: 2 * 3_600_000 });
    row(0, 3, 1);
    e.write({ ts: T0 + 3_600_000, identity: "role:engineer/cn=laptop-7", device: "plc5", unit: 1, table: "holding", address: 12, values: [520], points: ["S_PU10"] });
    row(2, 5.1, 1);
    expect(events[0]!.ocsf.actor).toEqual({ user: { name: "role:engineer/cn=laptop-7" } });
    expect((events[0]!.ocsf.finding_info as { title: string }).title).toMatch(/^Write by role:engineer\/cn=laptop-7 followed by/);
    expect(events[0]!.severity).toBe(5);
  });

  it("does not correlate a write older than the window", () => {
    const { events, e, row } = engine({ correlation_window_ms: 60_000 });
    row(0, 3, 1);
    e.write({ ts: T0 + 1000, identity: "x", device: "d", unit: 1, table: "holding", address: 1, values: [1], points: ["S_PU10"] });
    row(2, 5.1, 1);
    expect(events[0]!.ocsf.actor).toBeUndefined();
  });

  it("learning rows never report; bad-quality readings are counted and skipped", () => {
    const { e, events } = engine();
    e.learn({ point: "L_T7", value: 9, ts: T0, source: "t", quality: "good" });
    e.learn({ point: "S_PU10", value: 1, ts: T0, source: "t", quality: "good" });
    e.flush();
    e.reading({ point: "L_T7", value: Number.NaN, ts: T0 + 1, source: "t", quality: "good" });
    e.reading({ point: "L_T7", value: 3, ts: T0 + 2, source: "t", quality: "bad" });
    e.flush();
    expect(events).toEqual([]);
    expect(e.stats().bad).toBe(2);
  });

  it("snapshot/restore resumes with identical output", () => {
    const a = engine();
    const levels = [3, 3.5, 4, 5, 5.2, 4, 3, 3, 4.9, 5.1, 3, 3, 3];
    levels.slice(0, 5).forEach((l, h) => a.row(h, l, 1));
    const b = engine();
    b.e.restore(JSON.parse(JSON.stringify(a.e.snapshot())));
    a.events.length = 0;
    levels.slice(5).forEach((l, h) => {
      a.row(h + 5, l, 1);
      b.row(h + 5, l, 1);
    });
    expect(b.events).toEqual(a.events);
    expect(b.e.snapshot()).toEqual(a.e.snapshot());
  });

  it("restore rejects an unknown alarm-state version", () => {
    const { e } = engine();
    const s = e.snapshot();
    s["engine/alarms"]!.version = 99;
    expect(() => e.restore(s)).toThrow(expect.objectContaining({ code: "DETECTOR_STATE" }));
  });

  it("false-alarm budget: frozen-sensor incidents spend the signal's budget, not that of its moves; kept across a restart", () => {
    const mk = (events: EventDraft[]): DetectionEngine => new DetectionEngine({
      points: { p: { kind: "generic" } }, sink: { record: (d) => events.push(d) },
      options: { close_after: 1, disabled: ["seasonal", "level_shift", "ewma_cusum", "rate_of_change", "replay", "novelty"] },
    });
    const events: EventDraft[] = [];
    const e = mk(events);
    const rnd = prng(5);
    for (let i = 0; i < 600; i++) {
      e.learn({ point: "p", value: 10 + rnd(), ts: T0 + i * 60_000, source: "t", quality: "good" });
      e.flush();
    }
    // Live: two spells frozen for 100 readings, each between lively ones.
    for (let i = 600; i < 1100; i++) {
      const frozen = (i >= 700 && i < 800) || (i >= 900 && i < 1000);
      e.reading({ point: "p", value: frozen ? 10.5 : 10 + rnd(), ts: T0 + i * 60_000, source: "t", quality: "good" });
      e.flush();
    }
    const opened = events.filter((d) => d.ocsf.activity_id === 1).map((d) => String(d.ocsf.message).split(":")[0]);
    expect(opened).toEqual(["Frozen sensor on p", "Frozen sensor on p"]);
    const snap = e.snapshot();
    const alarms = snap["engine/alarms"]!.state as { signals: Record<string, { tokens: number; moves?: unknown }> };
    expect(alarms.signals.p!.tokens).toBeLessThan(1); // both tokens of the signal's budget spent
    expect(alarms.signals.p!.moves).toBeUndefined(); // the budget of its moves untouched: a shift would still open
    const b = mk([]);
    b.restore(JSON.parse(JSON.stringify(snap)));
    expect(b.snapshot()).toEqual(snap);
  });

  it("false-alarm budget: a signal that keeps raising statistical incidents gets a higher threshold", () => {
    const events: EventDraft[] = [];
    const e = new DetectionEngine({ points: { p: { kind: "generic" } }, sink: { record: (d) => events.push(d) }, options: { budget_per_day: 1, close_after: 1, disabled: ["seasonal", "level_shift", "ewma_cusum", "stuck", "replay"] } });
    for (let i = 0; i < 2000; i++) {
      const spike = i > 500 && i % 100 === 0;
      e.reading({ point: "p", value: (spike ? 50 : 0) + Math.sin(i), ts: T0 + i * 60_000, source: "t", quality: "good" });
      e.flush();
    }
    const opens = events.filter((d) => d.ocsf.activity_id === 1).length;
    expect(opens).toBeGreaterThanOrEqual(2); // the burst allowance
    expect(opens).toBeLessThan(15); // 15 spikes, most suppressed once the budget is spent
  });
});

describe("a persisting level shift against the site physics", () => {
  // Tank T (100 m^2) with one metered inflow and outflow, one reading a minute: 3 days of
  // learning, then 2 live days. At live hour 10 a pump moves 8 L/s more for 3 h.
  const tank = parseSite("name: w\ntanks:\n  T: { level: L, area_m2: 100, inflows: [F_IN], outflows: [F_OUT] }\n");
  function run(o: { real: number; reported: number }): EventDraft[] {
    const events: EventDraft[] = [];
    const e = new DetectionEngine({
      points: { L: { kind: "level", range: { min: 0, max: 10 } }, F_IN: { kind: "flow" }, F_OUT: { kind: "flow" } },
      site: tank,
      sink: { record: (d) => events.push(d) },
    });
    const rnd = prng(5);
    let level = 3;
    const learn = 3 * 1440;
    for (let i = 0; i < learn + 2 * 1440; i++) {
      const ts = T0 + i * 60_000;
      const on = i >= learn + 600 && i < learn + 600 + 180;
      const fin = 20 + (rnd() - 0.5) * 2 + (on ? o.real : 0);
      const fout = 20 + (rnd() - 0.5) * 2 + (on ? 8 : 0);
      level += ((fin - fout) * 60 * 0.001) / 100;
      const readings: [string, number][] = [["L", level + (rnd() - 0.5) * 0.002], ["F_IN", fin - (on ? o.real : 0) + (on ? o.reported : 0)], ["F_OUT", fout]];
      for (const [point, value] of readings) {
        const r = { point, value, ts, source: "t", quality: "good" as const };
        if (i < learn) e.learn(r);
        else e.reading(r);
      }
      e.flush();
    }
    return events.filter((d) => d.ocsf.activity_id === 1);
  }
  const start = T0 + (3 * 1440 + 600) * 60_000;
  const pointOf = (d: EventDraft): unknown => (d.ocsf.unmapped as { point?: string } | undefined)?.point;
  const typesOf = (d: EventDraft): string[] => (d.ocsf.finding_info as { types?: string[] } | undefined)?.types ?? [];

  it("a load switched on for 3 h (inflow and outflow both up, balance intact): low severity, only while new", () => {
    const opened = run({ real: 8, reported: 8 });
    const why = JSON.stringify(opened.map((d) => [d.severity, d.ocsf.message]));
    // Reported while new (the step, the new level), each at low severity; then the level is the
    // new normal: nothing opens later in the 3 h, nor when the load switches off.
    expect(opened.every((d) => d.severity <= 2), why).toBe(true);
    expect(opened.every((d) => (d.time ?? 0) < start + 3_600_000), why).toBe(true);
    for (const p of ["F_IN", "F_OUT"]) expect(opened.filter((d) => pointOf(d) === p).length, why).toBeLessThanOrEqual(3);
  });
  it("a tampered inflow reading (8 L/s more than flows, the level does not follow) is found, at high severity", () => {
    const opened = run({ real: 0, reported: 8 });
    expect(opened.some((d) => typesOf(d).includes("tank_balance") && d.severity >= 4)).toBe(true);
    // The shifted reading contradicts the balance: once the balance is broken, F_IN's own
    // findings are high too, not a low-severity new normal.
    const why = JSON.stringify(opened.map((d) => [d.severity, d.time, d.ocsf.message]));
    const broken = Math.min(...opened.filter((d) => typesOf(d).includes("tank_balance")).map((d) => d.time ?? 0));
    const after = opened.filter((d) => pointOf(d) === "F_IN" && (d.time ?? 0) > broken);
    expect(after.length, why).toBeGreaterThan(0);
    expect(after.every((d) => d.severity >= 4), why).toBe(true);
  });
});
