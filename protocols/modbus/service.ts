/**
 * The Modbus proxy as a daemon component: listeners, upstreams, routes, one policy decision
 * point, write windows, events and the readings tap. `start` binds; `stop` closes everything
 * and records what the event aggregator still holds.
 */
import { existsSync, renameSync } from "node:fs";
import type { EventSink } from "../../agent/core/events";
import type { ReadingSink } from "../../agent/core/readings";
import { DaemonError } from "../../agent/core/errors";
import { OcsfClass } from "../../agent/core/events";
import { DENY_ALL, type PolicyDecisionPoint } from "../policy";
import type { ModbusConfig } from "./config";
import type { DecisionSink } from "./policy/decision-lines";
import { ModbusEvents } from "./events";
import { ModbusPolicy, type ModbusPolicyRequest } from "./policy/engine";
import { readPolicyFile, type PolicyFile } from "./policy/schema";
import { Router } from "./upstream/router";
import { PointPoller, type PollReport, type PolledPoint } from "./poller";
import { RateLimiter } from "./policy/rate-limiter";
import { ReadingsTap, type TapPoint } from "./tap";
import { ModbusListener, type ListenerStatus, type TlsReloadReport } from "./tcp-proxy";
import type { ProxyContext } from "./proxy-connection";
import type { Upstream, UpstreamStatus } from "./upstream/upstream";
import { createUpstream } from "./upstream/factory";
import { WindowFile, WindowStore, type WriteWindow } from "./policy/window-store";

/** pino-shaped logger (fields first, then a sentence). */
export interface ServiceLog {
  info(o: object, m: string): void;
  warn(o: object, m: string): void;
  debug(o: object, m: string): void;
  error(o: object, m: string): void;
}

export interface ModbusProxyServiceOptions {
  config: ModbusConfig;
  events: EventSink;
  readings?: ReadingSink;
  log?: ServiceLog;
  /** Points for the readings tap (the daemon maps its top-level `points` with `tapPointsFrom`). */
  points?: readonly TapPoint[];
  /** Points to poll through the upstreams (values go through the tap to `readings`). */
  poll?: readonly PolledPoint[];
  /** A decision point to use instead of the configured policy (tests, commissioning). */
  pdp?: PolicyDecisionPoint<ModbusPolicyRequest>;
  /** Wraps the decision point (SOC commands: agent/soc-commands/gate.ts). */
  wrapPdp?: (pdp: PolicyDecisionPoint<ModbusPolicyRequest>) => PolicyDecisionPoint<ModbusPolicyRequest>;
  /** Every decision (commissioning mode). */
  decisions?: DecisionSink;
  /** SQLite file keeping open write windows across restarts (the daemon passes
   * `modbus.windows.state_path`); omitted: windows live in memory only. */
  windowStatePath?: string;
  /** Roles of another protocol that share these write windows (the OPC UA front's), and where they are defined. */
  windowRoles?: { roles: () => readonly string[]; writes: (role: string) => boolean; where: string };
  /** Told the open windows after every opening and closing (the OPC UA process decides with them). */
  onWindows?: (open: WriteWindow[]) => void;
}

export interface ModbusProxyStatus {
  running: boolean;
  listeners: ListenerStatus[];
  upstreams: UpstreamStatus[];
  windows: WriteWindow[];
  roles: string[];
  polling: { points: number; polls: number; errors: number } | null;
}

const noLog: ServiceLog = { info() {}, warn() {}, debug() {}, error() {} };

export class ModbusProxyService {
  private listeners: ModbusListener[] = [];
  private upstreams = new Map<string, Upstream>();
  private events: ModbusEvents | undefined;
  private policy: ModbusPolicy | undefined;
  private store: WindowStore | undefined;
  private running = false;
  private poller: PointPoller | undefined;
  private ctx: ProxyContext | undefined;
  private readonly log: ServiceLog;

  constructor(private o: ModbusProxyServiceOptions) {
    this.log = o.log ?? noLog;
  }

  /** The write-window store (for `registerWindowControl`); undefined before `start`. */
  get windows(): WindowStore | undefined {
    return this.store;
  }

  /** A decision point for another policy file, sharing this proxy's write windows (a pushed policy). */
  policyFor(file: PolicyFile): ModbusPolicy {
    if (!this.store) throw new DaemonError("USAGE", "the Modbus proxy is not running");
    return new ModbusPolicy(file, this.store);
  }

  /** Load the policy named by the config (the only file I/O besides TLS material). */
  private loadPolicy(): PolicyFile | undefined {
    const c = this.o.config;
    if (c.policy) return c.policy;
    if (!c.policy_file) return undefined;
    return readPolicyFile(c.policy_file);
  }

  /** Polled points that cannot be read, and read again: logged and recorded. */
  private pollReport(): PollReport {
    return {
      unreadable: (b, ms, reason) => {
        this.log.warn({ upstream: b.device, unit: b.unit, table: b.table, address: b.address, points: b.points.length, failing_ms: ms, reason }, "Polled points cannot be read.");
        this.events?.pointsUnreadable(b, ms, reason);
      },
      readable: (b, ms) => {
        this.log.info({ upstream: b.device, unit: b.unit, table: b.table, address: b.address, failing_ms: ms }, "Polled points are read again.");
        this.events?.pointsReadable(b, ms);
      },
    };
  }

  async start(): Promise<Array<{ name: string; address: string; port: number }>> {
    if (this.running) throw new DaemonError("USAGE", "the Modbus proxy is already running");
    const c = this.o.config;
    const file = this.loadPolicy();
    const events = new ModbusEvents(this.o.events, c.events);
    this.events = events;
    const other = this.o.windowRoles;
    const roles = (): string[] => [...new Set([...(this.policy?.roleNames() ?? []), ...(other?.roles() ?? [])])];
    const changed = () => this.o.onWindows?.(this.store?.snapshot() ?? []);
    this.store = new WindowStore({
      roles,
      writes: (role) => (this.policy?.canWrite(role) ?? false) || (other?.writes(role) ?? false),
      ...(other ? { rolesIn: `the Modbus policy or ${other.where}` } : {}),
      maxMinutes: c.windows.max_minutes,
      maxOpen: c.windows.max_open,
      events: {
        opened: (w) => (events.windowOpened(w), changed()),
        closed: (w, how, by) => (events.windowClosed(w, how, by), changed()),
      },
      ...(this.o.windowStatePath ? { persist: this.openWindowFile(this.o.windowStatePath) } : {}),
      onPersistError: (e, w) => this.log.error({ window: w.id, err: (e as Error).message }, "A closed write window could not be deleted from the state file."),
    });
    if (file) this.policy = new ModbusPolicy(file, this.store);
    const restored = this.store.restore();
    if (restored.length) this.log.info({ windows: restored.map((w) => ({ id: w.id, role: w.role, expires_at: new Date(w.expires_at).toISOString() })) }, "Write windows restored.");
    if (!file && !this.o.pdp) this.log.warn({}, "No Modbus policy configured: every request is denied.");
    const base = this.o.pdp ?? this.policy ?? (DENY_ALL as PolicyDecisionPoint<ModbusPolicyRequest>);
    const pdp = this.o.wrapPdp ? this.o.wrapPdp(base) : base;
    const observer = {
      down: (name: string, target: string, reason: string) => {
        this.log.warn({ upstream: name, target, reason }, "Modbus upstream down.");
        events.upstreamDown(name, target, reason);
      },
      up: (name: string, target: string) => {
        this.log.info({ upstream: name, target }, "Modbus upstream up.");
        events.upstreamUp(name, target);
      },
      invalid: (name: string, target: string, reason: string) => {
        this.log.warn({ upstream: name, target, reason }, "Modbus upstream sent bytes that are not a Modbus answer; connection reset.");
        events.upstreamInvalid(name, target, reason);
      },
    };
    for (const u of c.upstreams) this.upstreams.set(u.name, createUpstream(u, observer));
    const router = new Router(c.routes, this.upstreams, c.listeners.map((l) => l.name));
    const points = [...(this.o.points ?? []), ...(this.o.poll ?? []).filter((p) => !(this.o.points ?? []).some((q) => q.id === p.id))];
    const tap = this.o.readings && points.length ? new ReadingsTap(points, this.o.readings, (p, v) => this.events?.pointNotFinite(p, v)) : undefined;
    if (tap && this.o.poll?.length) this.poller = new PointPoller(this.o.poll, (n) => this.upstreams.get(n), tap, Date.now, this.pollReport());
    // One context shared by every listener and connection: a reload swaps its policy and tap.
    const ctx: ProxyContext = {
      pdp,
      router,
      limits: c.limits,
      requestRates: new RateLimiter(),
      events,
      ...(tap ? { tap } : {}),
      ...(this.o.decisions ? { decisions: this.o.decisions } : {}),
      knows: (id) => (this.policy ? this.policy.resolveRole(id) !== undefined : false),
      log: this.log,
    };
    this.ctx = ctx;
    events.start();
    for (const u of this.upstreams.values()) u.start();
    this.poller?.start();
    const bound: Array<{ name: string; address: string; port: number }> = [];
    try {
      for (const l of c.listeners) {
        const listener = new ModbusListener(l, ctx, { onTlsReload: (r) => this.tlsReloaded(r) });
        const a = await listener.start();
        this.listeners.push(listener);
        bound.push({ name: l.name, ...a });
        this.log.info({ listener: l.name, ...a }, "Modbus listener started.");
      }
    } catch (e) {
      await this.stop();
      throw e;
    }
    this.running = true;
    return bound;
  }

  /**
   * The write-window state file. One that is not a readable database (a power cut on an SD
   * card) is moved aside with a system event and a new one started: the windows it held are
   * closed, which is the safe direction. One that cannot be created stops the start.
   */
  private openWindowFile(path: string): WindowFile {
    let f: WindowFile | undefined;
    try {
      f = new WindowFile(path);
      f.load();
      return f;
    } catch (e) {
      f?.close();
      if (!existsSync(path)) throw e;
      const aside = `${path}.unreadable-${Date.now()}`;
      for (const suffix of ["", "-wal", "-shm"]) if (existsSync(path + suffix)) renameSync(path + suffix, aside + suffix);
      const reason = (e as Error).message;
      this.log.error({ path, aside, err: reason }, "Write-window state unreadable; moved aside, windows open before the restart are closed.");
      this.systemError(`Write-window state ${path} unreadable (${reason}); moved to ${aside}, windows open before the restart are closed`, { error_type: "window_state" });
      return new WindowFile(path);
    }
  }

  /** A processing error of the proxy's own (OCSF Application Lifecycle, other), severity 4. */
  private systemError(message: string, unmapped: { error_type: string } & Record<string, unknown>): void {
    this.o.events.record({ class: "system", severity: 4, ocsf: { class_uid: OcsfClass.ApplicationLifecycle, activity_id: 99, message, unmapped: { stage: "processing", ...unmapped } } });
  }

  /**
   * Takes a new policy and new tap and poll points while running (`gatewarden reload`). The
   * caller has validated them; the swap happens at once, between two requests, so a request is
   * decided wholly by the old policy or wholly by the new one. Windows of roles the new policy
   * lacks are closed; nothing changes when the service runs on a given decision point.
   */
  reload(next: { policy: PolicyFile | undefined; points: readonly TapPoint[]; poll: readonly PolledPoint[] }): void {
    const ctx = this.ctx;
    if (!ctx || !this.store) throw new DaemonError("CONFIG_INCOMPLETE", "the Modbus proxy is not running");
    if (!this.o.pdp) {
      const policy = next.policy ? new ModbusPolicy(next.policy, this.store) : undefined;
      this.policy = policy;
      ctx.pdp = policy ?? (DENY_ALL as PolicyDecisionPoint<ModbusPolicyRequest>);
      const roles = [...(policy?.roleNames() ?? []), ...(this.o.windowRoles?.roles() ?? [])];
      for (const w of this.store.list()) if (!roles.includes(w.role)) this.store.closeWindow({ id: w.id }, "policy");
    }
    const points = [...next.points, ...next.poll.filter((p) => !next.points.some((q) => q.id === p.id))];
    const tap = this.o.readings && points.length ? new ReadingsTap(points, this.o.readings, (p, v) => this.events?.pointNotFinite(p, v)) : undefined;
    this.poller?.stop();
    this.poller = tap && next.poll.length ? new PointPoller(next.poll, (n) => this.upstreams.get(n), tap, Date.now, this.pollReport()) : undefined;
    if (tap) ctx.tap = tap;
    else delete ctx.tap;
    this.o = { ...this.o, points: next.points, poll: next.poll };
    this.poller?.start();
  }

  /** Load every TLS listener's files again now (as a detected file change does). */
  reloadTls(trigger = "requested"): TlsReloadReport[] {
    const out: TlsReloadReport[] = [];
    for (const l of this.listeners) {
      if (l.type !== "tls") continue;
      const r = l.reloadTls(trigger);
      out.push({ listener: l.name, trigger, ...r });
    }
    return out;
  }

  /** New TLS material in use (audit), or refused with the old kept (system error event). */
  private tlsReloaded(r: TlsReloadReport): void {
    if (r.ok) {
      this.log.info({ listener: r.listener, trigger: r.trigger }, "Modbus/TCP Security material reloaded; new connections use it.");
      this.o.events.record({
        class: "audit",
        severity: 1,
        ocsf: {
          class_uid: OcsfClass.DeviceConfigStateChange,
          activity_id: 99,
          activity_name: "TLS Material Reloaded",
          message: `Modbus/TCP Security listener ${r.listener}: TLS material reloaded (${r.trigger}); new connections use it`,
          unmapped: { modbus: { listener: r.listener, tls_reload: "ok", trigger: r.trigger } },
        },
      });
    } else {
      this.log.error({ listener: r.listener, trigger: r.trigger, err: r.reason }, "Modbus/TCP Security material not reloaded; the listener keeps its current material.");
      this.systemError(`Modbus/TCP Security: new TLS material refused, current material kept: ${r.reason}`, { error_type: "tls_reload", modbus: { listener: r.listener, tls_reload: "failed", trigger: r.trigger } });
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    this.poller?.stop();
    this.poller = undefined;
    await Promise.all(this.listeners.map((l) => l.stop()));
    this.listeners = [];
    await Promise.all([...this.upstreams.values()].map((u) => u.stop()));
    this.upstreams.clear();
    this.store?.dispose();
    this.events?.stop();
  }

  status(): ModbusProxyStatus {
    return {
      running: this.running,
      listeners: this.listeners.map((l) => l.status()),
      upstreams: [...this.upstreams.values()].map((u) => u.status()),
      windows: this.store?.list() ?? [],
      roles: this.policy?.roleNames() ?? [],
      polling: this.poller ? { points: this.o.poll?.length ?? 0, ...this.poller.counters } : null,
    };
  }
}
