import { isDeepStrictEqual } from "node:util";
import type { Config } from "./config/schema";

/**
 * What `gatewarden reload` (or SIGHUP) takes from the config without a restart: the Modbus
 * policy (inline or its file), the points, and the detection engine's site, groups and options.
 * TLS files are re-read too (same paths). Everything else takes effect at the next start.
 */
export type TakesEffect = "reload" | "restart";

const RESTART_ONLY_DETECTION = new Set(["state_path", "save_interval_ms"]);

/** When a change to `key` (as `config set` names it) takes effect in a running daemon. */
export function takesEffect(key: string): TakesEffect {
  const [section, sub] = key.split(".");
  if (section === "points") return "reload";
  if (section === "modbus" && (sub === "policy" || sub === "policy_file")) return "reload";
  if (section === "detection" && !(sub && RESTART_ONLY_DETECTION.has(sub))) return "reload";
  return "restart";
}

/** OPC UA points are read by the OPC UA client's own polls, which a reload does not rebuild. */
function opcuaPoints(c: Config): unknown {
  return Object.entries(c.points ?? {}).filter(([, p]) => "opcua" in p.source);
}

/**
 * Keys whose change since the daemon started a reload cannot apply (dotted, two levels deep):
 * `upstream.url`, `modbus.listeners`, ... Empty when a reload takes everything.
 */
export function restartNeeded(running: Config, next: Config): string[] {
  const out: string[] = [];
  const sections = new Set([...Object.keys(running), ...Object.keys(next)]);
  for (const s of sections) {
    const a = (running as Record<string, unknown>)[s];
    const b = (next as Record<string, unknown>)[s];
    if (s === "points") {
      // Points come and go with a reload; starting or stopping detection, or OPC UA polls, do not.
      const had = Object.keys(running.points ?? {}).length > 0;
      const has = Object.keys(next.points ?? {}).length > 0;
      if (had !== has) out.push("points");
      else if (!isDeepStrictEqual(opcuaPoints(running), opcuaPoints(next))) out.push("points (OPC UA)");
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
