/**
 * The OPC UA side (client points and the secure front) in a child process of its own, started
 * only when the config has an `opcua` section: node-opcua's memory (tens of MB for a client,
 * more for a front) and its faults stay out of the core, which keeps the outbox, the Modbus
 * proxy and the detectors running whatever happens to it.
 *
 * The child is the same bundle run with OPCUA_PROCESS_ARG (agent/opcua-child.ts),
 * with a V8 heap limit and, only when an upstream server opts into Basic128Rsa15, Node's
 * process-wide `--security-revert=CVE-2023-46809`. It talks to the core over the IPC pipe of
 * `fork` (no socket anyone else could open): event drafts the core signs and records, readings
 * for the detectors, replies to forwarded control commands. The core watches its RSS (every
 * 2 s, from /proc; `opcua.process.max_rss_mb`) and its liveness, kills it past either bound,
 * and restarts it with back-off after any exit it did not ask for. Every exit and restart is a
 * signed event.
 */
import { fork, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import { DaemonError, ErrorCodes, type ErrorCode } from "./core/errors";
import { OcsfClass, type EventDraft, type EventSink } from "./core/events";
import type { ReadingSink } from "./core/readings";
import type { OpcuaConfig } from "../protocols/opcua/config";
import type { OpcuaPolledPoint } from "../protocols/opcua/poller";
import type { WindowSpan } from "../protocols/opcua/front-policy";
import { ALIVE_MS, MAX_QUEUED, OPCUA_PROCESS_ARG, type OpcuaProcessStatus, type ToChild, type ToCore } from "../protocols/opcua/process-protocol";

export type { OpcuaProcessStatus } from "../protocols/opcua/process-protocol";

/** How often RSS is sampled against the ceiling. */
const RSS_SAMPLE_MS = 2000;
/** A forwarded command unanswered this long fails (certificate renewal is the slowest). */
const CALL_TIMEOUT_MS = 60_000;
/** Forwarded commands in flight at most. */
const MAX_CALLS = 64;
/** A clean stop waits this long for the child before killing it. */
const STOP_GRACE_MS = 10_000;
/** Classes the child may ask the core to record; the core's own (system, heartbeat) it may not. */
const CHILD_CLASSES = new Set(["audit", "finding", "telemetry"]);

export interface OpcuaProcessOptions {
  config: OpcuaConfig;
  deviceId: string;
  points: readonly OpcuaPolledPoint[];
  events: EventSink;
  readings?: ReadingSink;
  log: Logger;
}

export class OpcuaProcess {
  private child: ChildProcess | undefined;
  private state: OpcuaProcessStatus["state"] = "starting";
  private restarts = 0;
  private delay: number;
  private rss: number | null = null;
  /** What the child last said its RSS was (where /proc cannot be read). */
  private aliveRss: number | null = null;
  private entry = "";
  private lastSeen = 0;
  private lastExit: OpcuaProcessStatus["last_exit"] = null;
  private killReason: string | undefined;
  private failure: { code: string; message: string } | undefined;
  private readonly dropped = { events: 0, readings: 0, refused: 0 };
  private readonly calls = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private nextCall = 1;
  private windows: WindowSpan[] = [];
  private restartTimer: NodeJS.Timeout | undefined;
  private stableTimer: NodeJS.Timeout | undefined;
  private readonly watchdog: NodeJS.Timeout;
  private firstStart: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private exited: (() => void) | undefined;

  constructor(private readonly o: OpcuaProcessOptions) {
    this.delay = o.config.process.restart_min_ms;
    this.watchdog = setInterval(() => this.watch(), RSS_SAMPLE_MS);
    this.watchdog.unref();
  }

  /**
   * Starts the child and waits until it serves. A start the child refuses (a missing key, a
   * port in use: an operator's mistake) fails the daemon's start as before; a crash restarts it.
   */
  start(): Promise<void> {
    this.entry = processEntry();
    return new Promise<void>((resolve, reject) => {
      this.firstStart = { resolve, reject };
      this.spawn();
    });
  }

  status(): OpcuaProcessStatus {
    const pid = this.state === "running" || this.state === "starting" ? (this.child?.pid ?? null) : null;
    const rss = pid === null ? null : (rssOf(pid) ?? this.rss);
    return {
      state: this.state,
      pid,
      restarts: this.restarts,
      rss_mb: rss === null ? null : Math.round(rss / 2 ** 20),
      max_rss_mb: this.o.config.process.max_rss_mb,
      last_exit: this.lastExit,
      dropped: { ...this.dropped },
    };
  }

  /** The write windows open now: kept for the next start of the child, sent to the running one. */
  setWindows(open: readonly WindowSpan[]): void {
    this.windows = open.map((w) => ({ role: w.role, opened_at: w.opened_at, expires_at: w.expires_at }));
    this.send({ t: "windows", open: this.windows });
  }

  /** A control command answered by the child (`opcua status`, `opcua pki ...`). */
  call(cmd: string, args: Record<string, unknown>): Promise<unknown> {
    const child = this.child;
    if (this.state !== "running" || !child?.connected) {
      const why = this.lastExit ? ` (last exit ${this.lastExit.at}: ${this.lastExit.reason})` : "";
      return Promise.reject(new DaemonError("OPCUA_PROCESS", `the OPC UA process is ${this.state}${why}; \`gatewarden opcua status\` shows when it is back`));
    }
    if (this.calls.size >= MAX_CALLS) return Promise.reject(new DaemonError("CONTROL_BAD_REQUEST", `${MAX_CALLS} OPC UA commands are already waiting for an answer`));
    const id = this.nextCall++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.calls.delete(id);
        reject(new DaemonError("OPCUA_PROCESS", `the OPC UA process did not answer ${cmd} within ${CALL_TIMEOUT_MS / 1000} s`));
      }, CALL_TIMEOUT_MS);
      this.calls.set(id, { resolve, reject, timer });
      this.send({ t: "call", id, cmd, args });
    });
  }

  /** `opcua status`: the child's own status with the process's; only the latter while it is down. */
  async opcuaStatus(): Promise<Record<string, unknown>> {
    if (this.state !== "running") return { process: this.status(), own_certificate: null, rejected_certificates: [], servers: [] };
    const st = (await this.call("opcua.status", {})) as Record<string, unknown>;
    return { process: this.status(), ...st };
  }

  async stop(): Promise<void> {
    clearInterval(this.watchdog);
    clearTimeout(this.restartTimer);
    clearTimeout(this.stableTimer);
    const prev = this.state;
    this.state = "stopped";
    const child = this.child;
    if (!child || prev === "restarting" || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise<void>((r) => (this.exited = r));
    this.send({ t: "stop" });
    const t = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
    await gone;
    clearTimeout(t);
  }

  private spawn(): void {
    const c = this.o.config;
    // Footprint (measured by `npm run bench -- footprint`): a 1 MiB semi-space and V8's size
    // optimisations take about 50 MB off node-opcua's start, and two malloc arenas keep glibc
    // from growing one per thread under load (about 80 MB after clients read through the front).
    const execArgv = [`--max-old-space-size=${Math.max(32, Math.floor(c.process.max_rss_mb * 0.6))}`, "--max-semi-space-size=1", "--optimize-for-size"];
    // Basic128Rsa15 decrypts with RSA PKCS#1 v1.5, which Node refuses unless told otherwise for
    // the whole process: only this process, and only when a server opts into that policy.
    if (c.servers.some((s) => s.security_policy === "Basic128Rsa15" && s.allow_legacy_policy)) execArgv.push("--security-revert=CVE-2023-46809");
    this.state = this.restarts === 0 && !this.lastExit ? "starting" : this.state;
    this.killReason = undefined;
    this.failure = undefined;
    this.rss = null;
    this.aliveRss = null;
    this.lastSeen = Date.now();
    const env = { ...process.env, MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? "2" };
    // Its own session and process group (detached): signals meant for the daemon's group (a
    // terminal's Ctrl-C, or the SIGHUP and SIGCONT the kernel sends a stopped member of a group
    // that becomes orphaned) do not reach it; it stops when the daemon's channel closes.
    const child = fork(this.entry, [OPCUA_PROCESS_ARG], { execArgv, env, stdio: ["ignore", "inherit", "inherit", "ipc"], serialization: "json", detached: true });
    this.child = child;
    child.on("message", (m: ToCore) => this.onMessage(child, m));
    child.on("error", (e) => {
      // A process that could not be started at all (no pid) never emits exit: treat it as one.
      if (child.pid === undefined) {
        this.killReason = `it could not be started: ${e.message}`;
        this.onExit(child, null, null);
      } else this.o.log.warn({ err: e.message }, "OPC UA process channel error.");
    });
    child.once("exit", (code, signal) => this.onExit(child, code, signal));
    this.send({ t: "init", config: c, deviceId: this.o.deviceId, points: [...this.o.points], logLevel: this.o.log.level });
    this.send({ t: "windows", open: this.windows });
  }

  private send(m: ToChild): void {
    const child = this.child;
    if (!child?.connected) return;
    child.send(m, (err) => {
      if (err) this.o.log.warn({ err: err.message }, "Cannot write to the OPC UA process.");
    });
  }

  private onMessage(child: ChildProcess, m: ToCore): void {
    if (child !== this.child) return;
    this.lastSeen = Date.now();
    switch (m.t) {
      case "batch":
        return this.take(m);
      case "alive":
        this.aliveRss = typeof m.rss === "number" ? m.rss : null;
        return;
      case "reply": {
        const call = this.calls.get(m.id);
        if (!call) return;
        this.calls.delete(m.id);
        clearTimeout(call.timer);
        if (m.ok) call.resolve(m.value);
        else call.reject(new DaemonError((m.code in ErrorCodes ? m.code : "INTERNAL") as ErrorCode, m.message));
        return;
      }
      case "ready":
        return this.ready(child);
      case "failed":
        this.failure = { code: m.code, message: m.message };
        return;
    }
  }

  private ready(child: ChildProcess): void {
    const first = this.firstStart;
    this.firstStart = undefined;
    const restarted = this.state === "restarting";
    this.state = "running";
    this.o.log.info({ pid: child.pid, restarts: this.restarts }, restarted ? "OPC UA process restarted." : "OPC UA process started.");
    if (restarted) {
      this.record(1, 5, `OPC UA process restarted (pid ${child.pid}, restart ${this.restarts})`, { pid: child.pid, restarts: this.restarts });
    }
    // Back-off starts over once a child has run a whole restart_max_ms.
    this.stableTimer = setTimeout(() => (this.delay = this.o.config.process.restart_min_ms), this.o.config.process.restart_max_ms);
    this.stableTimer.unref();
    first?.resolve();
  }

  /** Drafts to the recorder, readings to the detectors; drops counted and recorded. */
  private take(m: Extract<ToCore, { t: "batch" }>): void {
    const n = takeBatch(m, this.o.events, this.o.readings, (err) => this.o.log.warn({ err }, "A reading from the OPC UA process was not taken."));
    if (n.refused) {
      this.dropped.refused += n.refused;
      this.record(4, 99, `The OPC UA process sent ${n.refused} event draft(s) of a class only the core records (system, heartbeat): refused`, { refused: n.refused }, "finding");
    }
    if (n.events + n.readings > 0) {
      this.dropped.events += n.events;
      this.dropped.readings += n.readings;
      this.record(3, 99, `The OPC UA process dropped ${n.events} event draft(s) and ${n.readings} reading(s): its queue to the core was full`, { dropped_events: n.events, dropped_readings: n.readings });
    }
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (child !== this.child) return;
    clearTimeout(this.stableTimer);
    for (const [id, call] of this.calls) {
      clearTimeout(call.timer);
      call.reject(new DaemonError("OPCUA_PROCESS", "the OPC UA process exited before it answered"));
      this.calls.delete(id);
    }
    if (this.state === "stopped") {
      this.firstStart?.resolve(); // stopped while starting: the daemon's start goes on to its stop
      this.firstStart = undefined;
      this.exited?.();
      return;
    }
    const f = this.failure;
    const reason = this.killReason ?? (f ? `it could not start: ${f.code}: ${f.message}` : signal ? `killed by ${signal}` : `exit code ${code}`);
    const first = this.firstStart;
    if (first && f) {
      // An operator's mistake at the daemon's start: refuse the start, as before the split.
      this.firstStart = undefined;
      this.state = "stopped";
      first.reject(new DaemonError((f.code in ErrorCodes ? f.code : "INTERNAL") as ErrorCode, f.message));
      return;
    }
    this.lastExit = { at: new Date().toISOString(), reason };
    this.restarts++;
    const delay = this.delay;
    this.delay = Math.min(this.delay * 2, this.o.config.process.restart_max_ms);
    this.state = "restarting";
    this.o.log.warn({ pid: child.pid, reason, restart_in_ms: delay }, "OPC UA process stopped; restarting.");
    this.record(4, 4, `OPC UA process ${child.pid} stopped (${reason}); restarting in ${delay} ms`, { pid: child.pid ?? null, code, signal, reason, restarts: this.restarts, restart_in_ms: delay, rss_mb: this.status().rss_mb });
    this.restartTimer = setTimeout(() => this.spawn(), delay);
    // The daemon's start goes on without OPC UA; the restart catches up.
    if (first) {
      this.firstStart = undefined;
      first.resolve();
    }
  }

  /** RSS against the ceiling and liveness, every RSS_SAMPLE_MS. */
  private watch(): void {
    const child = this.child;
    if (!child?.pid || child.exitCode !== null || child.signalCode !== null || this.killReason) return;
    this.rss = rssOf(child.pid) ?? this.aliveRss;
    const max = this.o.config.process.max_rss_mb;
    if (this.rss !== null && this.rss > max * 2 ** 20) {
      this.kill(child, `RSS ${Math.round(this.rss / 2 ** 20)} MB over opcua.process.max_rss_mb ${max}`);
    } else if (Date.now() - this.lastSeen > this.o.config.process.unresponsive_ms) {
      this.kill(child, `no message for ${this.o.config.process.unresponsive_ms / 1000} s (it says it is alive every ${ALIVE_MS / 1000} s)`);
    }
  }

  private kill(child: ChildProcess, reason: string): void {
    this.killReason = `killed by the daemon: ${reason}`;
    child.kill("SIGKILL");
  }

  private record(severity: 1 | 3 | 4, activity: number, message: string, info: Record<string, unknown>, cls: "system" | "finding" = "system"): void {
    this.o.events.record({ class: cls, severity, ocsf: { class_uid: OcsfClass.ApplicationLifecycle, activity_id: activity, message, app: { name: "Gatewarden OPC UA process" }, unmapped: { opcua_process: info } } });
  }
}

/** The bundle that runs the child: this file's own bundle, or the built one when run from source (tests). */
function processEntry(): string {
  const here = fileURLToPath(import.meta.url);
  const entry = here.endsWith(".cjs") ? join(dirname(here), "gatewarden.cjs") : join(dirname(here), "..", "dist", "gatewarden.cjs");
  if (!existsSync(entry)) throw new DaemonError("OPCUA_SETUP", `the OPC UA process runs from ${entry}, which does not exist (npm run build makes it)`);
  return entry;
}

/** Resident set size of a process in bytes, from /proc (null where there is none). */
function rssOf(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/**
 * One batch from the OPC UA process: drafts of the classes it may send to the recorder,
 * readings to the detectors, at most MAX_QUEUED of each. Returns what was lost on the way
 * (the child's own count plus anything past the bound) and the drafts refused.
 */
export function takeBatch(m: Extract<ToCore, { t: "batch" }>, events: EventSink, readings: ReadingSink | undefined, warn: (err: string) => void): { events: number; readings: number; refused: number } {
  const drafts = Array.isArray(m.events) ? m.events : [];
  const rs = Array.isArray(m.readings) ? m.readings : [];
  const count = (x: unknown) => (Number.isSafeInteger(x) && (x as number) > 0 ? (x as number) : 0);
  let refused = 0;
  for (const d of drafts.slice(0, MAX_QUEUED)) {
    if (CHILD_CLASSES.has((d as EventDraft | null)?.class ?? "")) events.record(d);
    else refused++;
  }
  if (readings) {
    for (const r of rs.slice(0, MAX_QUEUED)) {
      try {
        readings.reading(r);
      } catch (e) {
        warn(String(e));
      }
    }
  }
  return { events: Math.max(0, drafts.length - MAX_QUEUED) + count(m.dropped?.events), readings: Math.max(0, rs.length - MAX_QUEUED) + count(m.dropped?.readings), refused };
}
