/**
 * Maintenance windows: work on a meter or sensor (an exchange, a calibration) is not an attack.
 * Online, `gatewarden maintenance start|end` tells the running daemon (a signed audit event);
 * offline, `detect --maintenance FILE` reads the windows from a YAML list.
 */
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import type { ControlRegistry } from "../agent/core/control";
import { DaemonError } from "../agent/core/errors";
import type { EventSink } from "../agent/core/events";
import { OcsfClass } from "../agent/core/events";
import { osUser } from "../agent/core/os-user";
import { parseTimestamp } from "./csv";
import type { DetectionEngine, MaintenanceWindow } from "./engine";

const MAX_WINDOWS = 10_000;
const MAX_POINTS = 256;

const stamp = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const t = typeof v === "number" ? v * 1000 : parseTimestamp(v);
  if (t === null || !Number.isFinite(t)) {
    ctx.addIssue({ code: "custom", message: `not a timestamp: ${String(v)}` });
    return z.NEVER;
  }
  return t;
});

const windowSchema = z
  .strictObject({
    from: stamp,
    to: stamp,
    points: z.array(z.string().min(1)).min(1).max(MAX_POINTS),
    reason: z.string().min(1).max(500),
    by: z.string().max(200).optional(),
  })
  .refine((w) => w.from < w.to, { message: "from must be before to" });

export type OfflineWindow = z.output<typeof windowSchema>;

/** Reads a `--maintenance` file. Errors are INPUT_INVALID naming the file and the entry. */
export function readMaintenanceFile(file: string): OfflineWindow[] {
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, "utf8"));
  } catch (e) {
    throw new DaemonError("INPUT_INVALID", `${file}: cannot read or not YAML (${(e as Error).message})`, { cause: e });
  }
  const r = z.array(windowSchema).max(MAX_WINDOWS).safeParse(raw ?? []);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new DaemonError("INPUT_INVALID", `${file}: ${i ? `${i.path.join(".") || "(root)"}: ${i.message}` : "invalid"} (a list of { from, to, points, reason })`);
  }
  return r.data;
}

/** Applies offline windows to an engine as time passes: call `at(ts)` before each input row. */
export class MaintenanceSchedule {
  private readonly starts: OfflineWindow[];
  private readonly active: OfflineWindow[] = [];
  constructor(windows: readonly OfflineWindow[], private readonly engine: DetectionEngine) {
    this.starts = [...windows].sort((a, b) => b.from - a.from);
  }
  at(ts: number): void {
    for (let i = this.active.length - 1; i >= 0; i--) {
      const w = this.active[i]!;
      if (ts < w.to) continue;
      this.active.splice(i, 1);
      this.engine.endMaintenance(w.points.filter((p) => !this.active.some((o) => o.points.includes(p))));
    }
    while (this.starts.length && this.starts[this.starts.length - 1]!.from <= ts) {
      const w = this.starts.pop()!;
      if (ts >= w.to) continue;
      this.engine.startMaintenance(w.points, w.reason, w.by ?? "maintenance file", w.from);
      this.active.push(w);
    }
  }
}

/** `maintenance.start|end|list` on the daemon's control socket; each change is a signed audit event. */
export function registerMaintenanceControl(server: ControlRegistry, engine: DetectionEngine, sink: EventSink): void {
  const audit = (what: "started" | "ended", ws: MaintenanceWindow[], by: string): void => {
    if (!ws.length) return;
    const pts = ws.map((w) => w.point);
    sink.record({
      class: "audit",
      severity: 2,
      ocsf: {
        class_uid: OcsfClass.DeviceConfigStateChange, activity_id: 99,
        message: `Maintenance ${what} on ${pts.join(", ")} by ${by}${what === "started" ? `: ${ws[0]!.reason}` : ""}`,
        activity_name: what === "started" ? "Maintenance Started" : "Maintenance Ended",
        actor: { user: { name: by } },
        unmapped: { detection: { maintenance: ws } },
      },
    });
  };
  const pointsOf = (v: unknown): string[] | undefined =>
    Array.isArray(v) && v.length <= MAX_POINTS && v.every((p) => typeof p === "string" && p.length > 0) ? (v as string[]) : undefined;
  server.handle("maintenance.start", (args) => {
    const points = pointsOf(args.points);
    if (!points?.length || typeof args.reason !== "string" || !args.reason.trim()) throw new DaemonError("CONTROL_BAD_REQUEST", "maintenance.start needs points and a reason");
    const by = typeof args.by === "string" ? args.by : osUser();
    const ws = engine.startMaintenance(points, args.reason, by, Date.now());
    audit("started", ws, by);
    return ws;
  });
  server.handle("maintenance.end", (args) => {
    const points = pointsOf(args.points);
    if (!points && args.all !== true) throw new DaemonError("CONTROL_BAD_REQUEST", "maintenance.end needs points or all");
    const by = typeof args.by === "string" ? args.by : osUser();
    const ws = engine.endMaintenance(points);
    audit("ended", ws, by);
    return ws;
  });
  server.handle("maintenance.list", () => engine.maintenanceWindows());
}
