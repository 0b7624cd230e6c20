/**
 * Reads the configured OPC UA points by subscription: one subscription per server (publishing
 * interval = the shortest point interval; servers allow few subscriptions per session, 10 by
 * node-opcua's default) with a monitored item per point (sampling interval = the point's
 * interval, queue size 1, newest kept).
 *
 * Notifications only say what changed; the detectors need evenly spaced readings. So the value
 * last notified is a reading at every tick of the point's interval grid (timestamps are
 * multiples of the interval). When the subscription is lost (the session broke, the server
 * ended the subscription, or neither data nor keep-alive arrived for STALE_KEEPALIVES keep-alive
 * periods), every point of it gets one bad-quality reading, so the detectors treat its value as
 * unknown instead of holding it, and ticks stay silent until values arrive again. Each new
 * session creates the subscriptions again.
 *
 * `points_mode: auto` polls (poller.ts) for the rest of the session when the server does not
 * create a subscription (BadServiceUnsupported from a server without the service,
 * BadTooManySubscriptions, ...); `subscription` never polls and reports the points unreadable;
 * `poll` does not use this class.
 */
import type { ClientSession, ClientSubscription, DataValue } from "node-opcua-client";
import type { ReadingSink } from "../../agent/core/readings";
import type { OpcuaEvents } from "./events";
import { messageOf, type OpcuaLink } from "./link";
import { resolveNodeId, valueOf, type OpcuaPolledPoint, type OpcuaPoller } from "./poller";

type ClientModule = typeof import("node-opcua-client");

/** Keep-alive periods without a publish response after which the subscription counts as lost. */
export const STALE_KEEPALIVES = 3;
/** A subscription that ended while the session lives is created again after this (ms). */
const RESUBSCRIBE_MS = 1000;
/** Node timers may fire up to a millisecond before their time. */
const TIMER_EARLY_MS = 2;
/** AttributeIds.Value. */
const VALUE_ATTRIBUTE = 13;

/** The points of one interval: their grid and the values last notified. */
interface Group {
  interval: number;
  points: OpcuaPolledPoint[];
  /** Per point: the last notified value, why there is none (a reason), or nothing yet. */
  last: (DataValue | string | undefined)[];
  lastSlot: number;
  timer: NodeJS.Timeout | undefined;
}

export type PointsBy = "subscription" | "poll" | "none";

export class OpcuaSubscriber {
  private readonly groups: Group[] = [];
  private session: ClientSession | undefined;
  private sub: ClientSubscription | undefined;
  /** Values held are current: the subscription is alive. */
  private live = false;
  /** When the subscription last sent anything (data or keep-alive). */
  private heard = 0;
  private staleAfterMs = 0;
  private retry: NodeJS.Timeout | undefined;
  private stopped = true;
  /** How the points are read in this session. */
  by: PointsBy = "none";
  /** Why the server's subscription was not used (auto mode polls instead). */
  subscriptionError: string | undefined;
  readonly counters = { notifications: 0, readings: 0, bad: 0, subscriptions: 0, lost: 0 };

  constructor(
    private readonly ua: ClientModule,
    private readonly link: OpcuaLink,
    points: readonly OpcuaPolledPoint[],
    private readonly sink: ReadingSink | undefined,
    private readonly events: OpcuaEvents,
    private readonly poller: OpcuaPoller,
    private readonly mode: "auto" | "subscription",
    private readonly log: { info(o: object, m: string): void; warn(o: object, m: string): void },
    private readonly now: () => number = Date.now,
  ) {
    const byInterval = new Map<number, OpcuaPolledPoint[]>();
    for (const p of points) {
      const ps = byInterval.get(p.interval_ms) ?? [];
      ps.push(p);
      byInterval.set(p.interval_ms, ps);
    }
    for (const [interval, ps] of byInterval) this.groups.push({ interval, points: ps, last: ps.map(() => undefined), lastSlot: 0, timer: undefined });
    link.onSession((s) => void this.subscribe(s));
    link.onLost(() => {
      this.session = undefined;
      this.by = "none";
      this.lost("the session was lost");
      this.drop();
    });
  }

  start(): void {
    this.stopped = false;
    for (const g of this.groups) this.schedule(g);
  }

  stop(): void {
    this.stopped = true;
    this.session = undefined;
    this.poller.stop();
    this.drop();
    for (const g of this.groups) clearTimeout(g.timer);
  }

  private async subscribe(session: ClientSession): Promise<void> {
    if (!this.groups.length || this.stopped) return;
    this.session = session;
    this.poller.stop();
    this.drop();
    try {
      await this.create(session);
    } catch (e) {
      if (this.session === session && !this.stopped) this.refused(messageOf(e));
      return;
    }
    if (this.session !== session) return;
    this.by = "subscription";
    this.subscriptionError = undefined;
  }

  private async create(session: ClientSession): Promise<void> {
    const fastest = Math.min(...this.groups.map((g) => g.interval));
    // A keep-alive about every 2 s (at least every second publishing interval): a dead
    // subscription is noticed within STALE_KEEPALIVES of them.
    const keepAlive = Math.min(100, Math.max(2, Math.ceil(2000 / fastest)));
    const sub = await session.createSubscription2({
      requestedPublishingInterval: fastest,
      requestedMaxKeepAliveCount: keepAlive,
      requestedLifetimeCount: keepAlive * 6,
      maxNotificationsPerPublish: this.groups.reduce((n, g) => n + g.points.length, 0),
      publishingEnabled: true,
      priority: 1,
    });
    if (this.session !== session || this.stopped) {
      sub.terminate().catch(() => undefined);
      return;
    }
    this.sub = sub;
    this.counters.subscriptions++;
    this.heard = this.now();
    this.staleAfterMs = STALE_KEEPALIVES * sub.publishingInterval * Math.max(1, sub.maxKeepAliveCount) + this.link.config.request_timeout_ms;
    sub.on("keepalive", () => {
      if (this.sub === sub) this.heard = this.now();
    });
    const ended = (why: string) => {
      if (this.sub !== sub) return;
      this.lost(why);
      this.drop();
      this.resubscribeLater(session);
    };
    sub.on("terminated", () => ended("the server ended the subscription"));
    sub.on("status_changed", (sc) => {
      if (sc.isNotGood()) ended(`subscription status ${sc.name}`);
    });
    const max = this.link.config.max_nodes_per_read;
    for (const g of this.groups) {
      g.last = g.points.map(() => undefined);
      for (let off = 0; off < g.points.length; off += max) {
        const nodes = g.points.slice(off, off + max).map((p) => resolveNodeId(p.source.node_id, (uri) => this.link.namespaceIndex(uri)));
        const asked = nodes.flatMap((n, i) => (n === null ? [] : [{ i: off + i, nodeId: n }]));
        nodes.forEach((n, i) => {
          if (n === null) g.last[off + i] = "its namespace URI is not on the server";
        });
        if (!asked.length) continue;
        const items = await sub.monitorItems(
          asked.map((a) => ({ nodeId: a.nodeId, attributeId: VALUE_ATTRIBUTE })),
          { samplingInterval: g.interval, queueSize: 1, discardOldest: true },
          this.ua.TimestampsToReturn.Both,
        );
        if (this.sub !== sub) return;
        items.monitoredItems.forEach((m, k) => {
          if (m.statusCode.isNotGood()) g.last[asked[k]!.i] = `status ${m.statusCode.name}`;
        });
        items.on("changed", (_m, dv, k) => {
          if (this.sub !== sub) return;
          this.counters.notifications++;
          this.heard = this.now();
          g.last[asked[k]!.i] = dv;
        });
      }
    }
    if (this.sub === sub) this.live = true;
  }

  /** The server did not create the subscription or its monitored items. */
  private refused(reason: string): void {
    this.subscriptionError = reason;
    this.drop();
    const name = this.link.config.name;
    if (this.mode === "auto") {
      this.by = "poll";
      this.log.info({ server: name, reason }, "OPC UA server did not create a subscription; its points are polled in this session.");
      this.poller.start();
      return;
    }
    this.by = "none";
    this.log.warn({ server: name, reason }, "OPC UA server did not create a subscription (points_mode: subscription); its points are not read until the next session.");
    for (const g of this.groups) {
      for (const p of g.points) this.events.pointUnreadable(p.id, p.source.server, p.source.node_id, `the server did not create a subscription: ${reason}`);
    }
  }

  private resubscribeLater(session: ClientSession): void {
    clearTimeout(this.retry);
    this.retry = setTimeout(() => {
      if (this.session === session && !this.stopped && !this.sub) void this.subscribe(session);
    }, RESUBSCRIBE_MS);
    this.retry.unref();
  }

  /** The subscription is gone: the values it held are unknown from now on, never repeated. */
  private lost(why: string): void {
    if (!this.live) return;
    this.live = false;
    this.counters.lost++;
    const ts = this.now();
    for (const g of this.groups) {
      g.points.forEach((p, i) => {
        if (g.last[i] === undefined) return;
        this.counters.bad++;
        this.sink?.reading({ point: p.id, value: Number.NaN, ts: Math.max(ts, g.lastSlot + 1), source: sourceOf(p), quality: "bad" });
      });
      g.last = g.points.map(() => undefined);
    }
    this.log.info({ server: this.link.config.name, reason: why }, "OPC UA subscription lost; its points are unknown until values arrive again.");
  }

  /** Forgets the subscription; ending it on the server is not awaited (the session may be gone). */
  private drop(): void {
    const sub = this.sub;
    this.sub = undefined;
    this.live = false;
    clearTimeout(this.retry);
    if (sub) {
      sub.removeAllListeners();
      sub.terminate().catch(() => undefined);
    }
  }

  /** The next tick on the interval grid. */
  private schedule(g: Group): void {
    if (this.stopped) return;
    const now = this.now();
    const next = (Math.floor(now / g.interval) + 1) * g.interval;
    g.timer = setTimeout(() => {
      this.tick(g);
      this.schedule(g);
    }, next - now);
    g.timer.unref();
  }

  private tick(g: Group): void {
    if (!this.live) return;
    const now = this.now();
    if (now - this.heard > this.staleAfterMs) {
      this.lost(`nothing from the subscription for ${now - this.heard} ms`);
      this.drop();
      if (this.session) this.resubscribeLater(this.session);
      return;
    }
    // The tick is due at a multiple of the interval and runs at it or late: a late tick still
    // takes its own slot (rounding would push it into the next one and skip a reading).
    const slot = Math.floor((now + TIMER_EARLY_MS) / g.interval) * g.interval;
    if (slot <= g.lastSlot) return;
    g.lastSlot = slot;
    g.points.forEach((p, i) => this.deliver(p, g.last[i], slot));
  }

  private deliver(p: OpcuaPolledPoint, v: DataValue | string | undefined, ts: number): void {
    if (v === undefined) return; // nothing notified yet
    const x = typeof v === "string" ? v : valueOf(v);
    if (typeof x === "string") {
      this.counters.bad++;
      this.events.pointUnreadable(p.id, p.source.server, p.source.node_id, x);
      return;
    }
    this.counters.readings++;
    this.sink?.reading({ point: p.id, value: x * p.source.scale + p.source.offset, ts, source: sourceOf(p), quality: "good" });
  }
}

function sourceOf(p: OpcuaPolledPoint): string {
  return `opcua:${p.source.server}/${p.source.node_id}`;
}
