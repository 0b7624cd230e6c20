import type { Logger } from "pino";
import { performance } from "node:perf_hooks";
import { z } from "zod";
import { engineOptionsSchema } from "../../detectors/engine-options";
import type { SiteConfig } from "../../detectors/site";
import type { PointsConfig } from "../config/points";
import { describeError } from "../core/errors";
import { OcsfClass } from "../core/events";
import type { EventSink } from "../core/events";
import type { ReadingSink } from "../core/readings";
import { ClockGuard } from "./clock-guard";
import { ReportEvery } from "../core/report-every";

const MAX_GROUPS = 64;
const MAX_GROUP_POINTS = 32;
/** A detection failure is reported at once, then at most this often (the rest counted). */
const FAILED_REPORT_MS = 600_000;

/** The daemon's `detection:` section: engine options plus where its site file and state live. */
export const detectionSchema = engineOptionsSchema.extend({
  /** Site file (tanks, pumps, meters and how they relate); see detectors/sites/ctown.yaml. */
  site: z.string().min(1).optional(),
  /** SQLite file holding detector state, so a restart does not re-learn. */
  state_path: z.string().min(1).default("data/detectors.db"),
  save_interval_ms: z.number().int().min(1000).max(86_400_000).default(60_000),
  /**
   * Multivariate groups: signals of one machine or process that move together (a pump's flow,
   * pressure and temperatures). A fault that shifts several of them a little adds up even when no
   * single signal crosses its own threshold. Members must be configured points.
   */
  groups: z
    .record(z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "group names use A-Z a-z 0-9 _ . - (at most 64)"), z.array(z.string().min(1)).min(2, "a group needs at least 2 points").max(MAX_GROUP_POINTS, `a group has at most ${MAX_GROUP_POINTS} points`))
    .refine((g) => Object.keys(g).length <= MAX_GROUPS, `at most ${MAX_GROUPS} groups`)
    .default({}),
});
export type DetectionConfig = z.output<typeof detectionSchema>;

/**
 * Runs the detection engine inside the daemon: readings from the proxy's tap and polls go in,
 * findings and incidents go to the recorder. State is restored at start (an unreadable state
 * is reported and the engine starts fresh) and saved periodically and at stop.
 */
export interface RunningDetection {
  /** Forwards to the engine in use (a reload swaps it). */
  readings: ReadingSink;
  readonly engine: import("../../detectors/engine").DetectionEngine;
  /** Builds an engine for new points, site (the file `config.site` names, as already parsed),
   * groups and options, carries every detector's state, open incidents and maintenance over, and
   * swaps it in; throws (keeping the old) when it cannot. */
  reload: (points: PointsConfig, config: DetectionConfig, site: SiteConfig | undefined) => void;
  stop: () => void;
  status: () => unknown;
}

/** `site` is the file `config.site` names, parsed (and checked against the points) by agent/config/references.ts. */
export async function startDetection(o: { points: PointsConfig; config: DetectionConfig; site?: SiteConfig | undefined; sink: EventSink; log: Logger; mono?: () => number; wall?: () => number }): Promise<RunningDetection> {
  const { DetectionEngine } = await import("../../detectors/engine");
  const { DetectorStateStore } = await import("./state-store");
  const build = (points: PointsConfig, config: DetectionConfig, site: SiteConfig | undefined) => {
    const { site: _s, state_path: _p, save_interval_ms: _i, groups, ...options } = config;
    return new DetectionEngine({ points, site, groups, sink: o.sink, options });
  };
  const { state_path, save_interval_ms } = o.config;
  let engine = build(o.points, o.config, o.site);
  const store = new DetectorStateStore(state_path);
  try {
    engine.restore(store.load());
  } catch (e) {
    o.log.warn({ err: describeError(e) }, "Detector state could not be restored; learning afresh.");
    o.sink.record({
      class: "system",
      severity: 3,
      ocsf: { class_uid: OcsfClass.ApplicationLifecycle, activity_id: 99, message: `Detector state not restored (${describeError(e)}); detectors learn afresh`, unmapped: { error_type: "detector_state", stage: "processing" } },
    });
  }
  // A state that cannot be saved is lost at the next restart (detectors learn afresh, blind
  // while they warm up): the first failure of an episode and its end are signed events.
  let failingSince: number | undefined;
  const save = () => {
    try {
      engine.flush();
      store.save(engine.snapshot(), Date.now());
      if (failingSince !== undefined) {
        o.log.warn({ failed_ms: Date.now() - failingSince }, "Detector state is saved again.");
        o.sink.record({ class: "system", severity: 2, ocsf: { class_uid: OcsfClass.ApplicationLifecycle, activity_id: 99, message: `Detector state is saved again (${state_path}), after ${Math.round((Date.now() - failingSince) / 1000)} s of failed saves`, unmapped: { error_type: "detector_state_saved", stage: "processing", failed_ms: Date.now() - failingSince } } });
        failingSince = undefined;
      }
    } catch (e) {
      o.log.error({ err: describeError(e) }, "Saving detector state failed.");
      if (failingSince !== undefined) return;
      failingSince = Date.now();
      o.sink.record({ class: "system", severity: 4, ocsf: { class_uid: OcsfClass.ApplicationLifecycle, activity_id: 99, message: `Detector state cannot be saved to ${state_path} (${describeError(e)}); a restart now would lose what the detectors learned, and they would be blind while they learn again`, unmapped: { error_type: "detector_state_save", stage: "processing" } } });
    }
  };
  const guard = new ClockGuard({ engineTime: () => engine.time, sink: o.sink, log: o.log, mono: o.mono, wall: o.wall });
  // The engine does not throw on any input; a bug that makes it throw must neither break the
  // proxy's forwarding (the tap swallows) nor leave detection blind unsaid: each failure is
  // counted, the first reported at once and then at most one event every 10 minutes.
  const failures = new ReportEvery(FAILED_REPORT_MS);
  const mono = o.mono ?? (() => performance.now());
  const detectionFailed = (what: string, point: string, e: unknown): void => {
    const n = failures.hit(mono());
    if (!n) {
      o.log.debug({ err: describeError(e), point }, `Detection failed on a ${what}; it was skipped.`);
      return;
    }
    o.log.error({ err: describeError(e), stack: e instanceof Error ? e.stack : undefined, point }, `Detection failed on a ${what}; it was skipped (the next failures are counted, and logged at debug).`);
    o.sink.record({
      class: "system",
      severity: 4,
      ocsf: {
        class_uid: OcsfClass.ApplicationLifecycle,
        activity_id: 99,
        message: `Detection failed on a ${what} of ${point} (${describeError(e)}) and skipped it: anomalies in what it skips are not found${n > 1 ? ` (${n} failures since the last such event)` : ""}`,
        unmapped: { error_type: "detection_failed", stage: "detection", point, error: describeError(e), count: n },
      },
    });
  };
  const timer = setInterval(save, save_interval_ms);
  timer.unref();
  return {
    // The wall clock may step (no battery clock, NTP, a person): readings keep time order.
    readings: {
      reading: (r) => {
        try {
          const ts = guard.map(r.ts);
          engine.reading(ts === r.ts ? r : { ...r, ts });
        } catch (e) {
          detectionFailed("reading", r.point, e);
        }
      },
      write: (w) => {
        try {
          const ts = guard.map(w.ts);
          engine.write(ts === w.ts ? w : { ...w, ts });
        } catch (e) {
          detectionFailed("write", w.points.join(", ") || `${w.device} ${w.table} ${w.address}`, e);
        }
      },
    },
    get engine() {
      return engine;
    },
    reload: (points, config, site) => {
      const next = build(points, config, site);
      engine.flush();
      try {
        next.restore(engine.snapshot());
      } catch (e) {
        o.log.warn({ err: describeError(e) }, "Reload: some detector state could not be carried over; those detectors learn afresh.");
      }
      engine = next;
    },
    status: () => engine.stats(),
    stop: () => {
      clearInterval(timer);
      save();
      store.close();
    },
  };
}
