/**
 * What the front forwards to the upstream server over the link's session: reads (the reads
 * asked for in one turn of the event loop go out as one Read request), writes, method calls,
 * and one upstream subscription carrying a monitored item for every node some front client
 * monitors (counted: the last client to stop monitoring a node removes it upstream). While
 * the link is down, reads, writes and calls answer BadNotConnected at once and monitored
 * nodes are monitored again when a new session opens.
 */
import type { ClientMonitoredItem, ClientSession, ClientSubscription, DataValue, StatusCode, Variant } from "node-opcua-client";
import type { OpcuaLink } from "./link";

type ClientModule = typeof import("node-opcua-client");

interface Watch {
  count: number;
  samplingMs: number;
  item?: ClientMonitoredItem;
  /** The last value the upstream reported. */
  last?: DataValue;
}

export interface UpstreamCounters {
  reads: number;
  read_batches: number;
  writes: number;
  calls: number;
  monitored: number;
}

export class FrontUpstream {
  private pending: { nodeId: string; resolve: (dv: DataValue) => void }[] = [];
  private flushQueued = false;
  private subscription: ClientSubscription | undefined;
  private subscribing: Promise<ClientSubscription | undefined> | undefined;
  private readonly watches = new Map<string, Watch>();
  readonly counters: UpstreamCounters = { reads: 0, read_batches: 0, writes: 0, calls: 0, monitored: 0 };
  /** Called with each value the upstream subscription reports for a node. */
  onValue: ((nodeId: string, dv: DataValue) => void) | undefined;

  constructor(
    private readonly ua: ClientModule,
    private readonly link: OpcuaLink,
    private readonly maxNodesPerRead: number,
  ) {
    link.onSession(() => {
      this.subscription = undefined;
      this.subscribing = undefined;
      for (const [id, w] of this.watches) {
        w.item = undefined;
        w.last = undefined;
        void this.monitorUpstream(id, w);
      }
    });
  }

  private bad(code: StatusCode): DataValue {
    return new this.ua.DataValue({ statusCode: code });
  }

  /** The value a front client reads: batched with the other reads of this turn. */
  read(nodeId: string): Promise<DataValue> {
    const w = this.watches.get(nodeId);
    // A monitored node's value comes from the upstream subscription; no extra read is sent.
    if (w?.last && this.link.isUp()) return Promise.resolve(w.last);
    return new Promise((resolve) => {
      this.pending.push({ nodeId, resolve });
      if (!this.flushQueued) {
        this.flushQueued = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.flushQueued = false;
    const all = this.pending;
    this.pending = [];
    for (let i = 0; i < all.length; i += this.maxNodesPerRead) void this.readBatch(all.slice(i, i + this.maxNodesPerRead));
  }

  private async readBatch(batch: { nodeId: string; resolve: (dv: DataValue) => void }[]): Promise<void> {
    const s = this.link.openSession;
    if (!s) {
      for (const b of batch) b.resolve(this.bad(this.ua.StatusCodes.BadNotConnected));
      return;
    }
    this.counters.read_batches++;
    this.counters.reads += batch.length;
    try {
      const values = await s.read(batch.map((b) => ({ nodeId: b.nodeId, attributeId: this.ua.AttributeIds.Value })));
      batch.forEach((b, i) => b.resolve(values[i] ?? this.bad(this.ua.StatusCodes.BadCommunicationError)));
    } catch {
      for (const b of batch) b.resolve(this.bad(this.ua.StatusCodes.BadCommunicationError));
    }
  }

  async write(nodeId: string, value: Variant): Promise<StatusCode> {
    const s = this.link.openSession;
    if (!s) return this.ua.StatusCodes.BadNotConnected;
    this.counters.writes++;
    try {
      return await s.write({ nodeId, attributeId: this.ua.AttributeIds.Value, value: { value } });
    } catch {
      return this.ua.StatusCodes.BadCommunicationError;
    }
  }

  async call(objectId: string, methodId: string, inputArguments: Variant[]): Promise<{ statusCode: StatusCode; outputArguments: Variant[] }> {
    const s = this.link.openSession;
    if (!s) return { statusCode: this.ua.StatusCodes.BadNotConnected, outputArguments: [] };
    this.counters.calls++;
    try {
      const r = await s.call({ objectId, methodId, inputArguments });
      return { statusCode: r.statusCode, outputArguments: r.outputArguments ?? [] };
    } catch {
      return { statusCode: this.ua.StatusCodes.BadCommunicationError, outputArguments: [] };
    }
  }

  /** A front client started monitoring `nodeId`. */
  watch(nodeId: string, samplingMs: number): void {
    let w = this.watches.get(nodeId);
    if (w) {
      w.count++;
      return;
    }
    w = { count: 1, samplingMs };
    this.watches.set(nodeId, w);
    this.counters.monitored = this.watches.size;
    void this.monitorUpstream(nodeId, w);
  }

  /** A front client stopped monitoring `nodeId`. */
  unwatch(nodeId: string): void {
    const w = this.watches.get(nodeId);
    if (!w || --w.count > 0) return;
    this.watches.delete(nodeId);
    this.counters.monitored = this.watches.size;
    void w.item?.terminate().catch(() => undefined);
  }

  private async monitorUpstream(nodeId: string, w: Watch): Promise<void> {
    const s = this.link.openSession;
    if (!s) return;
    const sub = await this.upstreamSubscription(s);
    if (!sub || this.watches.get(nodeId) !== w || w.item) return;
    try {
      const item = await sub.monitor({ nodeId, attributeId: this.ua.AttributeIds.Value }, { samplingInterval: w.samplingMs, queueSize: 1, discardOldest: true }, this.ua.TimestampsToReturn.Both);
      if (this.watches.get(nodeId) !== w) {
        await item.terminate().catch(() => undefined);
        return;
      }
      w.item = item;
      item.on("changed", (dv: DataValue) => {
        w.last = dv;
        this.onValue?.(nodeId, dv);
      });
    } catch {
      // Not monitorable upstream: the front samples it with reads instead.
    }
  }

  private upstreamSubscription(s: ClientSession): Promise<ClientSubscription | undefined> {
    if (this.subscription) return Promise.resolve(this.subscription);
    this.subscribing ??= s
      .createSubscription2({ requestedPublishingInterval: 50, requestedLifetimeCount: 600, requestedMaxKeepAliveCount: 20, maxNotificationsPerPublish: 1000, publishingEnabled: true, priority: 1 })
      .then(
        (sub) => (this.subscription = sub),
        () => {
          this.subscribing = undefined;
          return undefined;
        },
      );
    return this.subscribing;
  }

  async stop(): Promise<void> {
    const sub = this.subscription;
    this.subscription = undefined;
    this.watches.clear();
    await sub?.terminate().catch(() => undefined);
  }
}
