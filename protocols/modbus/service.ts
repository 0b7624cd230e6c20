/**
 * The Modbus proxy as a daemon component: listeners, upstreams, routes, one policy decision
 * point, write windows, events and the readings tap. `start` binds; `stop` closes everything
 * and records what the event aggregator still holds.
 */
import { readFileSync } from "node:fs";
import type { EventSink } from "../../agent/events/types";
import type { ReadingSink } from "../../agent/pipeline";
import { DaemonError } from "../../agent/errors";
import { DENY_ALL, type PolicyDecisionPoint } from "../policy";
import type { ModbusConfig } from "./config";
import type { DecisionRecord } from "./decision-record";
import { ModbusEvents } from "./events";
import { ModbusPolicy, type ModbusPolicyRequest } from "./policy-engine";
import { parsePolicyText, type PolicyFile } from "./policy-schema";
import { Router } from "./router";
import { PointPoller, type PolledPoint } from "./poller";
import { ReadingsTap, type TapPoint } from "./tap";
import { ModbusListener, type ListenerStatus } from "./tcp-proxy";
import type { Upstream, UpstreamStatus } from "./upstream";
import { createUpstream } from "./upstream-factory";
import { WindowStore, type WriteWindow } from "./window-store";

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
  onDecision?: (r: DecisionRecord) => void;
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
  private readonly log: ServiceLog;

  constructor(private readonly o: ModbusProxyServiceOptions) {
    this.log = o.log ?? noLog;
  }

  /** The write-window store (for `registerWindowControl`); undefined before `start`. */
  get windows(): WindowStore | undefined {
    return this.store;
  }

  /** Load the policy named by the config (the only file I/O besides TLS material). */
  private loadPolicy(): PolicyFile | undefined {
    const c = this.o.config;
    if (c.policy) return c.policy;
    if (!c.policy_file) return undefined;
    let text: string;
    try {
      text = readFileSync(c.policy_file, "utf8");
    } catch (e) {
      throw new DaemonError("POLICY_INVALID", `cannot read policy file ${c.policy_file} (${(e as Error).message})`, { cause: e });
    }
    return parsePolicyText(text, c.policy_file);
  }

  async start(): Promise<Array<{ name: string; address: string; port: number }>> {
    if (this.running) throw new DaemonError("USAGE", "the Modbus proxy is already running");
    const c = this.o.config;
    const file = this.loadPolicy();
    const events = new ModbusEvents(this.o.events, c.events);
    this.events = events;
    const roles = (): string[] => this.policy?.roleNames() ?? [];
    this.store = new WindowStore({ roles, maxMinutes: c.windows.max_minutes, events: { opened: (w) => events.windowOpened(w), closed: (w, how, by) => events.windowClosed(w, how, by) } });
    if (file) this.policy = new ModbusPolicy(file, this.store);
    if (!file && !this.o.pdp) this.log.warn({}, "No Modbus policy configured: every request is denied.");
    const pdp = this.o.pdp ?? this.policy ?? (DENY_ALL as PolicyDecisionPoint<ModbusPolicyRequest>);
    const observer = {
      down: (name: string, target: string, reason: string) => {
        this.log.warn({ upstream: name, target, reason }, "Modbus upstream down.");
        events.upstreamDown(name, target, reason);
      },
      up: (name: string, target: string) => {
        this.log.info({ upstream: name, target }, "Modbus upstream up.");
        events.upstreamUp(name, target);
      },
    };
    for (const u of c.upstreams) this.upstreams.set(u.name, createUpstream(u, observer));
    const router = new Router(c.routes, this.upstreams, c.listeners.map((l) => l.name));
    const points = [...(this.o.points ?? []), ...(this.o.poll ?? []).filter((p) => !(this.o.points ?? []).some((q) => q.id === p.id))];
    const tap = this.o.readings && points.length ? new ReadingsTap(points, this.o.readings) : undefined;
    if (tap && this.o.poll?.length) this.poller = new PointPoller(this.o.poll, (n) => this.upstreams.get(n), tap);
    const policy = this.policy;
    const ctx = {
      pdp,
      router,
      limits: c.limits,
      events,
      ...(tap ? { tap } : {}),
      ...(this.o.onDecision ? { onDecision: this.o.onDecision } : {}),
      knows: (id: Parameters<ModbusPolicy["resolveRole"]>[0]) => (policy ? policy.resolveRole(id) !== undefined : false),
      log: this.log,
    };
    events.start();
    for (const u of this.upstreams.values()) u.start();
    this.poller?.start();
    const bound: Array<{ name: string; address: string; port: number }> = [];
    try {
      for (const l of c.listeners) {
        const listener = new ModbusListener(l, ctx);
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
