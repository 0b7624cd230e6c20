import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import { loadConfig, type LoadedConfig } from "./config/load";
import { assertReferences, type References } from "./config/references";
import type { SiteConfig } from "../detectors/site";
import type { Config } from "./config/schema";
import type { Component } from "./core/component";
import { DaemonError, describeError } from "./core/errors";
import { OcsfClass } from "./core/events";
import type { EventSink } from "./core/events";
import { SOURCES } from "./sources/registry";

/**
 * What `gatewarden reload` (or SIGHUP) takes from the config without a restart: what each
 * source's registry entry lists as `reloadable` (agent/sources/registry.ts), the points, and the
 * detection engine's site, groups and options. Everything else takes effect at the next start.
 */
export type TakesEffect = "reload" | "restart";

const RESTART_ONLY_DETECTION = new Set(["state_path", "save_interval_ms"]);

/** When a change to `key` (as `config set` names it) takes effect in a running daemon. */
export function takesEffect(key: string): TakesEffect {
  const [section, sub] = key.split(".");
  if (section === "points") return "reload";
  if (sub && SOURCES.some((s) => s.section === section && s.reloadable.keys.includes(sub))) return "reload";
  if (section === "detection" && !(sub && RESTART_ONLY_DETECTION.has(sub))) return "reload";
  return "restart";
}

/** The points of `section`, a source whose points a reload does not rebuild. */
function fixedPoints(c: Config, section: string): unknown {
  return Object.entries(c.points ?? {}).filter(([, p]) => section in p.source);
}

/**
 * Keys whose change since the daemon started a reload cannot apply (dotted, two levels deep):
 * `upstream.url`, `heartbeat.interval_ms`, ... Empty when a reload takes everything.
 */
export function restartNeeded(running: Config, next: Config): string[] {
  const out: string[] = [];
  const sections = new Set([...Object.keys(running), ...Object.keys(next)]);
  for (const s of sections) {
    const a = (running as Record<string, unknown>)[s];
    const b = (next as Record<string, unknown>)[s];
    if (s === "points") {
      // Points come and go with a reload; starting or stopping detection does not, nor the
      // points of a source whose entry says they are not reloadable.
      const had = Object.keys(running.points ?? {}).length > 0;
      const has = Object.keys(next.points ?? {}).length > 0;
      if (had !== has) out.push("points");
      else for (const src of SOURCES) if (!src.reloadable.points && !isDeepStrictEqual(fixedPoints(running, src.section), fixedPoints(next, src.section))) out.push(`points (${src.section})`);
      continue;
    }
    if (isDeepStrictEqual(a, b)) continue;
    if (typeof a !== "object" || a === null || typeof b !== "object" || b === null || Array.isArray(a)) {
      out.push(s);
      continue;
    }
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) {
      if (takesEffect(`${s}.${k}`) === "reload") continue;
      if (!isDeepStrictEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) out.push(`${s}.${k}`);
    }
  }
  return out;
}

export interface ReloadReport {
  ok: boolean;
  trigger: string;
  /** What was taken from the config (empty when refused). */
  reloaded: string[];
  /** Changed keys that take effect only after a restart. */
  restart_needed: string[];
  code?: string;
  reason?: string;
}

/** What a reload reaches in the running daemon. */
export interface ReloadTargets {
  /** The config the daemon started with (restart-needed changes are counted from it). */
  loaded: LoadedConfig;
  log: Logger;
  events: EventSink;
  /** The detection engine, when running: rebuilt for new points, site, groups and options. */
  detection?: { reload: (points: NonNullable<Config["points"]>, config: Config["detection"], site: SiteConfig | undefined) => void; after?: () => void };
  /** The running sources: each checks the new config, then takes what its registry entry calls reloadable. */
  sources: readonly { reload?: Component<Config>["reload"] }[];
}

/**
 * `gatewarden reload` and SIGHUP: reads the config again and takes each source's reloadable keys, the points
 * and the detection site, groups and options, all or nothing: a file that does not validate
 * keeps everything as it was, with the reason in the log and in a system event. TLS files are
 * re-read as before. Says what it took, and which changes wait for a restart. Never throws.
 */
export function reloadDaemon(t: ReloadTargets, trigger: string): ReloadReport {
  let next: LoadedConfig;
  let refs: References;
  let apply: (() => string[])[];
  try {
    next = loadConfig(t.loaded.file);
    refs = assertReferences(next);
    apply = t.sources.flatMap((s) => (s.reload ? [s.reload(next.config, trigger)] : []));
  } catch (e) {
    return reloadRefused(t, trigger, e);
  }
  const c = next.config;
  const restart = restartNeeded(t.loaded.config, c);
  const reloaded: string[] = [];
  // Detection first: the only step that can still fail, before anything has changed.
  if (t.detection && c.points && Object.keys(c.points).length) {
    try {
      t.detection.reload(c.points, c.detection, refs.site);
    } catch (e) {
      return reloadRefused(t, trigger, e);
    }
    t.detection.after?.();
    reloaded.push("points", "detection");
  }
  for (const take of apply) reloaded.push(...take());
  t.log.info({ trigger, reloaded, restart_needed: restart }, restart.length ? "Reloaded; some changes take effect only after a restart." : "Reloaded.");
  t.events.record({
    class: "audit",
    severity: 1,
    ocsf: {
      class_uid: OcsfClass.DeviceConfigStateChange,
      activity_id: 99,
      activity_name: "Configuration Reloaded",
      message: `Configuration reloaded (${trigger}): ${reloaded.join(", ") || "TLS material"}${restart.length ? `; after a restart only: ${restart.join(", ")}` : ""}`,
      unmapped: { reload: { trigger, ok: true, reloaded, restart_needed: restart } },
    },
  });
  return { ok: true, trigger, reloaded, restart_needed: restart };
}

function reloadRefused(t: ReloadTargets, trigger: string, e: unknown): ReloadReport {
  const code = e instanceof DaemonError ? e.code : "INTERNAL";
  const reason = e instanceof DaemonError ? e.message : describeError(e);
  t.log.error({ trigger, code, err: reason }, "Reload refused; the running policy, points and site stay in use.");
  t.events.record({
    class: "system",
    severity: 4,
    ocsf: { class_uid: OcsfClass.ApplicationLifecycle, activity_id: 99, message: `Reload refused (${trigger}), the running configuration stays: ${code}: ${reason}`, unmapped: { error_type: "reload_refused", code, stage: "reload", reload: { trigger, ok: false } } },
  });
  return { ok: false, trigger, code, reason, reloaded: [], restart_needed: [] };
}
