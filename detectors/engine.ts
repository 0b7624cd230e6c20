/**
 * The detection engine: per-signal detectors, site physics, write correlation and incidents.
 * Readings arrive in time order; readings with the same `ts` form a tick. A tick is closed
 * when a later reading arrives or `flush()` is called; incidents advance once per tick.
 */
import type { EventDraft, EventSink } from "../agent/core/events";
import type { Reading, ReadingSink, WriteObservation } from "../agent/core/readings";
import { DaemonError } from "../agent/core/errors";
import { badState, checkVersion, fmt, obj, type Detector, type Finding } from "./detector";
import { engineOptionsSchema, type EngineOptions, type EngineOptionsInput } from "./engine-options";
import { newSignalState, stepSignal, type Incident, type SignalAlarmState, type Transition } from "./incidents";
import { createSignalDetectors, type SignalSpec } from "./signal-detectors";
import { GroupShiftDetector, type GroupShiftOptions } from "./group-shift";
import { LevelShiftDetector } from "./level-shift";
import { SiteDetector, type SiteConfig } from "./site";

export interface DetectionEngineInit {
  /** Point id -> what the detectors need (a `PointConfig` from the points schema fits). */
  points: Readonly<Record<string, SignalSpec>>;
  site?: SiteConfig | undefined;
  /** Groups of signals of one device for the multivariate level-shift check (name -> point ids). */
  groups?: Readonly<Record<string, readonly string[]>> | undefined;
  /** Options of those groups' checks (the defaults when absent). */
  groupOptions?: GroupShiftOptions | undefined;
  sink: EventSink;
  options?: EngineOptionsInput;
}

/** Saved state of the whole engine, keyed by detector instance id (what the state store persists). */
export type EngineSnapshot = Record<string, { version: number; state: unknown }>;

const ALARMS_ID = "engine/alarms";
const STATE_DEPENDENT_OFF = ["seasonal", "level_shift", "ewma_cusum", "rate_of_change"] as const;
/**
 * Points of a power relation or meter tree: loads switch on and off, EV sessions and sags set
 * new extremes; whether a reading is true is the physics' question, so the unconditional
 * statistics (novelty included) are off for them.
 */
const ENERGY_PHYSICS_OFF = [...STATE_DEPENDENT_OFF, "novelty"] as const;
const ALARMS_VERSION = 1;
const MAX_WRITES = 64;

/** A maintenance window on one point: suppressed and re-baselined until it ends. */
export interface MaintenanceWindow { point: string; reason: string; by: string; since: number }

interface AlarmsState {
  /** Absent in older snapshots. */
  maintenance?: MaintenanceWindow[];
  /** Reset registers: [point, last value, time of its last change] (absent in older snapshots). */
  registers?: [string, number | null, number][];
  /** Counters with a reset register: [point, time of the reading before the latest one, latest] (absent in older snapshots). */
  counter_ts?: [string, number, number][];
  tick: number | null;
  last_tick: number | null;
  training: boolean;
  pending: [string, Finding[]][];
  seen: string[];
  signals: Record<string, SignalAlarmState>;
  writes: WriteObservation[];
}

export class DetectionEngine implements ReadingSink {
  readonly options: EngineOptions;
  private readonly sink: EventSink;
  private readonly perPoint = new Map<string, Detector[]>();
  private readonly site: SiteDetector | null;
  private readonly groups: GroupShiftDetector[] = [];
  private readonly grouped = new Map<string, GroupShiftDetector[]>();
  private readonly related = new Map<string, Set<string>>();
  private tick: number | null = null;
  private lastTick: number | null = null;
  private training = false;
  private pending = new Map<string, Finding[]>();
  private seen = new Set<string>();
  private signals = new Map<string, SignalAlarmState>();
  private writes: WriteObservation[] = [];
  private maintenance = new Map<string, MaintenanceWindow>();
  /** Points with a site physics finding in the latest tick (a broken relation), and the one before. */
  private broken = new Set<string>();
  private brokenNext = new Set<string>();
  /** Counter -> the point that announces its resets (site file `reset_register`). */
  private readonly resetRegister = new Map<string, string>();
  /** Reset register -> its last value and when it last changed. */
  private registers = new Map<string, { value: number | null; changed: number }>();
  /** Counter with a reset register -> times of its previous and latest readings. */
  private counterTs = new Map<string, { prev: number; last: number }>();
  private readonly counters = { readings: 0, bad: 0, unknown: 0, findings: 0, incidents: 0, suppressed: 0 };
  private readonly lastTransitions: Transition[] = [];

  constructor(init: DetectionEngineInit) {
    const parsed = engineOptionsSchema.safeParse(init.options ?? {});
    if (!parsed.success) throw new DaemonError("INPUT_INVALID", `detection options: ${parsed.error.issues[0]?.message ?? "invalid"}`);
    this.options = parsed.data;
    this.sink = init.sink;
    const offset = init.site?.utc_offset_min ?? this.options.utc_offset_min;
    // A point whose behaviour the site explains by equipment state (a relation target) is
    // bimodal by design: the relation check replaces its unconditional statistics.
    const explained = explainedPoints(init.site);
    const energy = energyPhysicsPoints(init.site);
    const specs = withSiteSignals(init.points, init.site);
    for (const [id, spec] of Object.entries(specs)) {
      // An intermittent load (street lighting, an EV charger) steps between idle and on by design.
      const stateful = explained.has(id) || spec.intermittent === true;
      // Its idle spells have no bound (a charger unused over a holiday): a meter tree judges
      // whether it counts when it should, so the frozen-sensor check is off for it.
      const idleByDesign = spec.intermittent === true && energy.has(id);
      const disabled = [
        ...this.options.disabled, ...(stateful ? STATE_DEPENDENT_OFF : []), ...(energy.has(id) ? ENERGY_PHYSICS_OFF : []),
        ...(idleByDesign ? (["stuck"] as const) : []),
      ];
      this.perPoint.set(id, createSignalDetectors(id, spec, { utc_offset_min: offset, disabled }));
    }
    this.site = init.site ? new SiteDetector(init.site, (p) => init.site?.signals[p]?.kind ?? init.points[p]?.kind) : null;
    for (const [name, pts] of Object.entries(init.groups ?? {})) {
      if (pts.length < 2) continue;
      const resolution: Record<string, number> = {};
      for (const p of pts) if (specs[p]?.resolution !== undefined) resolution[p] = specs[p].resolution;
      const g = new GroupShiftDetector(name, pts, { ...init.groupOptions, resolution: { ...resolution, ...init.groupOptions?.resolution } });
      this.groups.push(g);
      for (const p of pts) this.grouped.set(p, [...(this.grouped.get(p) ?? []), g]);
    }
    if (init.site) this.buildRelated(init.site);
    for (const [p, sig] of Object.entries(init.site?.signals ?? {})) {
      if (sig.reset_register === undefined) continue;
      this.resetRegister.set(p, sig.reset_register);
      this.registers.set(sig.reset_register, { value: null, changed: Number.NEGATIVE_INFINITY });
    }
  }

  /** A live reading. Never throws; bad or non-finite readings are counted and skipped. */
  reading(r: Reading): void {
    this.accept(r, false);
  }

  /** A reading known to be normal (learning history): fits baselines, never reports. */
  learn(r: Reading): void {
    this.accept(r, true);
  }

  /** An allowed write: anomalies on related points within the correlation window name its identity. */
  write(w: WriteObservation): void {
    this.writes.push(w);
    if (this.writes.length > MAX_WRITES) this.writes.shift();
  }

  /**
   * Starts maintenance on points (a meter exchange, a calibration): their findings, and site
   * findings that involve them, are suppressed until it ends; a counter reset meanwhile
   * re-baselines. Throws INPUT_INVALID naming a point the engine does not know.
   */
  startMaintenance(points: readonly string[], reason: string, by: string, ts: number): MaintenanceWindow[] {
    const unknown = points.filter((p) => !this.perPoint.has(p) && !(this.site?.points.has(p) ?? false));
    if (unknown.length) throw new DaemonError("INPUT_INVALID", `maintenance: unknown point ${unknown.join(", ")} (points are the configured point ids)`);
    if (!points.length) throw new DaemonError("INPUT_INVALID", "maintenance: no points given");
    return points.map((point) => {
      const w = { point, reason, by, since: ts };
      this.maintenance.set(point, w);
      return w;
    });
  }

  /** Ends maintenance on points (all when none are given): their detectors learn their baselines afresh. */
  endMaintenance(points?: readonly string[]): MaintenanceWindow[] {
    const ended: MaintenanceWindow[] = [];
    for (const p of points?.length ? points : [...this.maintenance.keys()]) {
      const w = this.maintenance.get(p);
      if (!w) continue;
      this.maintenance.delete(p);
      ended.push(w);
      for (const d of this.perPoint.get(p) ?? []) d.rebaseline?.();
    }
    return ended;
  }

  maintenanceWindows(): MaintenanceWindow[] {
    return [...this.maintenance.values()];
  }

  /** Closes the current tick: evaluates site physics and advances incidents. */
  flush(): void {
    const ts = this.tick;
    if (ts === null) return;
    this.lastTransitions.length = 0;
    const emit = this.training ? null : (f: Finding): void => this.add(f);
    if (this.site) this.site.flush(emit);
    for (const g of this.groups) g.flush(emit);
    if (this.resetRegister.size) this.dropAnnouncedResets(ts);
    if (this.related.size) this.judgeByPhysics();
    if (!this.training) {
      for (const point of this.seen) {
        const st = this.signals.get(point) ?? newSignalState();
        this.signals.set(point, st);
        const t = stepSignal(st, point, ts, this.pending.get(point) ?? [], this.options, (p, at) => this.correlate(p, at));
        if (t) {
          this.lastTransitions.push(t);
          this.emit(t);
        }
      }
    }
    this.pending.clear();
    this.seen.clear();
    this.lastTick = ts;
    this.tick = null;
  }

  /**
   * A counter reset announced by the counter's reset register (it changed after the counter's
   * previous reading, up to this tick) is routine: the counter has already re-baselined, so the
   * finding is dropped. An unannounced reset stays a finding.
   */
  private dropAnnouncedResets(ts: number): void {
    for (const [point, list] of this.pending) {
      const reg = this.resetRegister.get(point);
      if (reg === undefined) continue;
      const changed = this.registers.get(reg)?.changed ?? Number.NEGATIVE_INFINITY;
      const since = this.counterTs.get(point)?.prev ?? ts;
      if (changed <= since || changed > ts) continue;
      const kept = list.filter((f) => !(f.detector === "counter" && f.reset === true));
      this.counters.suppressed += list.length - kept.length;
      this.counters.findings -= list.length - kept.length;
      this.pending.set(point, kept);
    }
  }

  /**
   * Statistical findings on points the site relates: while every relation of the point holds
   * (no physics finding on it or a related point this tick or the last), the finding is
   * consistent with the physics (low severity: a load switched on); while one is broken the
   * point's level shift is disputed, not a new normal (see LevelShiftDetector.disputed).
   */
  private judgeByPhysics(): void {
    const prev = this.broken;
    this.broken = this.brokenNext;
    this.broken.clear();
    for (const list of this.pending.values()) {
      for (const f of list) {
        if (f.strength !== "physical" || !this.related.has(f.point)) continue;
        this.broken.add(f.point);
        for (const p of f.related ?? []) this.broken.add(p);
      }
    }
    const isBroken = (p: string): boolean => {
      if (this.broken.has(p) || prev.has(p)) return true;
      for (const q of this.related.get(p) ?? []) if (this.broken.has(q) || prev.has(q)) return true;
      return false;
    };
    for (const [point, list] of this.pending) {
      if (!this.related.has(point)) continue;
      const broken = isBroken(point);
      for (const f of list) if (f.strength !== "physical") f.consistent = !broken;
    }
    for (const [point, ds] of this.perPoint) {
      if (!this.related.has(point)) continue;
      const broken = isBroken(point);
      for (const d of ds) if (d instanceof LevelShiftDetector) d.disputed = broken;
    }
    this.brokenNext = prev;
  }

  /** Incidents currently open, strongest first. */
  openIncidents(): Incident[] {
    const out: Incident[] = [];
    for (const st of this.signals.values()) if (st.open) out.push(st.open);
    return out.sort((a, b) => b.severity - a.severity || b.top.score - a.top.score);
  }

  /** Transitions reported by the last flush (for the offline CLI and tests). */
  transitions(): readonly Transition[] {
    return this.lastTransitions;
  }

  /** Time of the latest reading taken (restored state included); null: none yet. */
  get time(): number | null {
    return this.tick ?? this.lastTick;
  }

  stats(): Readonly<typeof this.counters> {
    return { ...this.counters };
  }

  /** All state, by instance id. Call between ticks (after `flush`) for an exact resume point. */
  snapshot(): EngineSnapshot {
    const out: EngineSnapshot = {};
    for (const ds of this.perPoint.values()) for (const d of ds) out[d.id] = { version: d.stateVersion, state: d.snapshot() };
    if (this.site) out[this.site.id] = { version: this.site.stateVersion, state: this.site.snapshot() };
    for (const g of this.groups) out[g.id] = { version: g.stateVersion, state: g.snapshot() };
    const alarms: AlarmsState = {
      tick: this.tick, last_tick: this.lastTick, training: this.training, pending: [...this.pending], seen: [...this.seen],
      signals: Object.fromEntries(this.signals), writes: this.writes, maintenance: [...this.maintenance.values()],
      registers: [...this.registers].map(([p, r]) => [p, r.value, Number.isFinite(r.changed) ? r.changed : -1]),
      counter_ts: [...this.counterTs].map(([p, t]) => [p, t.prev, t.last]),
    };
    out[ALARMS_ID] = { version: ALARMS_VERSION, state: JSON.parse(JSON.stringify(alarms)) };
    return out;
  }

  /**
   * Restores saved state. Entries for detectors that no longer exist are ignored; detectors
   * without an entry start fresh. Throws DaemonError DETECTOR_STATE on a bad entry.
   */
  restore(snap: EngineSnapshot): void {
    for (const ds of this.perPoint.values()) {
      for (const d of ds) {
        const e = snap[d.id];
        if (e) d.restore(e.state, e.version);
      }
    }
    if (this.site) {
      const e = snap[this.site.id];
      if (e) this.site.restore(e.state as never, e.version);
    }
    for (const g of this.groups) {
      const e = snap[g.id];
      if (e) g.restore(e.state as never, e.version);
    }
    const a = snap[ALARMS_ID];
    if (a) {
      checkVersion(ALARMS_ID, ALARMS_VERSION, a.version);
      const s = obj(ALARMS_ID, a.state) as unknown as AlarmsState;
      if (!Array.isArray(s.pending) || !Array.isArray(s.seen) || !Array.isArray(s.writes)) throw badState(ALARMS_ID, "lists");
      const copy = JSON.parse(JSON.stringify(s)) as AlarmsState;
      this.tick = copy.tick;
      this.lastTick = copy.last_tick ?? null;
      this.training = copy.training;
      this.pending = new Map(copy.pending);
      this.seen = new Set(copy.seen);
      this.signals = new Map(Object.entries(obj(ALARMS_ID, copy.signals) as Record<string, SignalAlarmState>));
      this.writes = copy.writes.slice(-MAX_WRITES);
      if (copy.maintenance !== undefined && !Array.isArray(copy.maintenance)) throw badState(ALARMS_ID, "maintenance");
      this.maintenance = new Map((copy.maintenance ?? []).filter((w) => typeof w?.point === "string").map((w) => [w.point, w]));
      if (copy.registers !== undefined && !Array.isArray(copy.registers)) throw badState(ALARMS_ID, "registers");
      for (const [p, value, changed] of copy.registers ?? []) {
        if (!this.registers.has(p)) continue; // no longer a reset register
        if ((value !== null && typeof value !== "number") || typeof changed !== "number") throw badState(ALARMS_ID, "registers");
        this.registers.set(p, { value, changed: changed < 0 ? Number.NEGATIVE_INFINITY : changed });
      }
      if (copy.counter_ts !== undefined && !Array.isArray(copy.counter_ts)) throw badState(ALARMS_ID, "counter_ts");
      for (const [p, prev, last] of copy.counter_ts ?? []) {
        if (typeof prev !== "number" || typeof last !== "number") throw badState(ALARMS_ID, "counter_ts");
        if (this.resetRegister.has(p)) this.counterTs.set(p, { prev, last });
      }
    }
  }

  private accept(r: Reading, training: boolean): void {
    this.counters.readings++;
    if (r.quality !== "good" || !Number.isFinite(r.value) || !Number.isFinite(r.ts)) {
      this.counters.bad++;
      this.site?.unknown(r.point); // blank is unknown, never the last value
      return;
    }
    if (this.tick !== null && (r.ts > this.tick || training !== this.training)) this.flush();
    if (training !== this.training) this.lastTick = null; // live data may predate the learning history
    const floor = this.tick ?? this.lastTick;
    if (floor !== null && r.ts < floor) {
      this.counters.bad++; // out of order: detectors need time order
      return;
    }
    this.tick = r.ts;
    this.training = training;
    if (this.resetRegister.size) this.trackResets(r);
    const ds = this.perPoint.get(r.point);
    const onSite = this.site?.points.has(r.point) ?? false;
    if (!ds && !onSite) {
      this.counters.unknown++;
      return;
    }
    for (const g of this.grouped.get(r.point) ?? []) {
      if (training) g.train(r);
      else g.observe(r, (f) => this.add(f));
    }
    if (ds) {
      this.seen.add(r.point);
      const quiet = this.maintenance.has(r.point);
      for (const d of ds) {
        if (training) {
          if (d.train) d.train(r);
          else d.observe(r, () => {});
        } else if (quiet) {
          d.observe(r, () => this.counters.suppressed++);
        } else {
          d.observe(r, (f) => this.add(f));
        }
      }
    }
    if (this.site) {
      if (training) this.site.train(r);
      else this.site.observe(r, (f) => this.add(f));
    }
  }

  /** Reset registers' changes, and when each counter that has one was read. */
  private trackResets(r: Reading): void {
    const reg = this.registers.get(r.point);
    if (reg) {
      if (reg.value !== null && r.value !== reg.value) reg.changed = r.ts;
      reg.value = r.value;
    }
    if (this.resetRegister.has(r.point)) {
      const t = this.counterTs.get(r.point);
      this.counterTs.set(r.point, { prev: t ? t.last : r.ts, last: r.ts });
    }
  }

  private add(f: Finding): void {
    if (this.maintenance.size && (this.maintenance.has(f.point) || f.related?.some((p) => this.maintenance.has(p)))) {
      this.counters.suppressed++;
      return;
    }
    this.counters.findings++;
    const list = this.pending.get(f.point);
    if (list) list.push(f);
    else this.pending.set(f.point, [f]);
    this.seen.add(f.point);
  }

  private correlate(point: string, ts: number): string | null {
    const rel = this.related.get(point);
    for (let i = this.writes.length - 1; i >= 0; i--) {
      const w = this.writes[i]!;
      if (w.ts > ts || ts - w.ts > this.options.correlation_window_ms) continue;
      if (w.points.some((p) => p === point || rel?.has(p))) return w.identity;
    }
    return null;
  }

  private buildRelated(site: SiteConfig): void {
    const link = (group: readonly string[]): void => {
      for (const a of group) {
        const s = this.related.get(a) ?? new Set<string>();
        for (const b of group) if (b !== a) s.add(b);
        this.related.set(a, s);
      }
    };
    for (const t of Object.values(site.tanks)) link([t.level, ...t.inflows, ...t.outflows, ...t.controls.map((c) => c.actuator)]);
    for (const r of site.relations) link([r.target, ...r.states, ...(r.regressor ? [r.regressor] : [])]);
    for (const m of site.meters) link([m.main, ...m.subs]);
    for (const p of site.power) link([p.power, p.voltage, p.current, p.power_factor ?? [], p.energy ?? []].flat());
  }

  private emit(t: NonNullable<Transition>): void {
    if (t.kind === "open") this.counters.incidents++;
    this.sink.record(incidentDraft(t.kind, t.incident));
  }
}

/** The points' specs with what the site file says about each signal laid over them. */
export function withSiteSignals(points: Readonly<Record<string, SignalSpec>>, site: SiteConfig | undefined): Record<string, SignalSpec> {
  const out: Record<string, SignalSpec> = { ...points };
  for (const [id, s] of Object.entries(site?.signals ?? {})) {
    const base = out[id];
    if (!base) continue; // a signal the readings do not have
    const merged: SignalSpec = { ...base, kind: s.kind, intermittent: s.intermittent };
    if (s.range) merged.range = s.range;
    if (s.resolution !== undefined) merged.resolution = s.resolution;
    if (s.rollover_at !== undefined) merged.rollover_at = s.rollover_at;
    if (s.max_rate_per_s !== undefined) merged.max_rate_per_s = s.max_rate_per_s;
    if (s.stuck_tolerance !== undefined) merged.stuck_tolerance = s.stuck_tolerance;
    out[id] = merged;
  }
  return out;
}

/** Relation targets: bimodal by equipment state, which the relation check accounts for. */
function explainedPoints(site: SiteConfig | undefined): Set<string> {
  return new Set((site?.relations ?? []).map((r) => r.target));
}

/** Every point of a power relation or meter tree. */
/** Points of a meter tree or power relation: the physics judges their readings. */
export function energyPhysicsPoints(site: SiteConfig | undefined): Set<string> {
  const s = new Set<string>();
  if (!site) return s;
  for (const m of site.meters) [m.main, ...m.subs].forEach((p) => s.add(p));
  for (const p of site.power) for (const x of [p.power, p.voltage, p.current, p.power_factor, p.energy].flat()) if (x) s.add(x);
  return s;
}

const ACTIVITY = { open: 1, update: 2, close: 3 } as const;
const LABEL: Record<string, string> = {
  range: "Reading outside physical range", rate_of_change: "Impossible rate of change", stuck: "Frozen sensor",
  level_shift: "Level shift", ewma_cusum: "Drift", seasonal: "Unusual for the time of day", counter: "Counter fault",
  replay: "Replayed readings", novelty: "Value never seen before", control_rule: "Pump state contradicts PLC level rules",
  tank_balance: "Tank mass balance broken", state_vs_flow: "Equipment state contradicts measurement",
  meter_balance: "Sub-meters disagree with main meter", power_balance: "Power disagrees with V x A x PF",
};

/** The OCSF Detection Finding (class 2004) for an incident transition. */
export function incidentDraft(kind: "open" | "update" | "close", inc: Incident): EventDraft {
  const f = inc.top;
  const what = LABEL[f.detector] ?? f.detector;
  const title = inc.identity ? `Write by ${inc.identity} followed by: ${what} on ${inc.point}` : `${what} on ${inc.point}`;
  const lasted = fmt((inc.last - inc.opened) / 60_000);
  const message =
    kind === "close" ? `Closed: ${title} (lasted ${lasted} min, peak score ${fmt(inc.peak)})` :
    kind === "update" ? `Updated: ${title}: ${f.reason}` : `${title}: ${f.reason}`;
  const ocsf: EventDraft["ocsf"] = {
    class_uid: 2004,
    activity_id: ACTIVITY[kind],
    message,
    finding_info: {
      uid: inc.uid, title, desc: f.reason, types: inc.detectors,
      first_seen_time: inc.opened, last_seen_time: inc.last,
    },
    evidences: [{
      data: {
        point: inc.point, detector: f.detector, observed: f.observed, expected: f.expected, score: f.score,
        related: f.related ?? [], strength: f.strength ?? "statistical",
      },
    }],
    unmapped: { point: inc.point, detectors: inc.detectors, peak_score: inc.peak, ticks: inc.ticks },
  };
  if (inc.identity) ocsf.actor = { user: { name: inc.identity } };
  return { class: "finding", severity: inc.severity, ocsf, time: kind === "close" ? inc.last : f.ts };
}
