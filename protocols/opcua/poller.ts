/**
 * Polls the configured OPC UA points with the Read service: points of one server and interval
 * go out in as few Read requests as `max_nodes_per_read` allows, a read still in flight is not
 * repeated, and nothing is sent while the server is down. Values are scaled into the point's
 * engineering unit and handed to the readings sink; bad status codes and non-numeric values
 * are reported (bounded) instead of becoming readings.
 */
import type { DataValue, ReadValueIdOptions } from "node-opcua-client";
import type { ReadingSink } from "../../agent/core/readings";
import type { OpcuaSource } from "./points";
import type { OpcuaEvents } from "./events";
import type { OpcuaLink } from "./link";

export interface OpcuaPolledPoint {
  id: string;
  source: OpcuaSource;
  interval_ms: number;
}

interface Block {
  points: OpcuaPolledPoint[];
  /** Node ids as sent (namespace URIs resolved for the current session); null: unresolvable. */
  resolved: (string | null)[];
  busy: boolean;
}

/** AttributeIds.Value: the only attribute read. */
const VALUE_ATTRIBUTE = 13;

export class OpcuaPoller {
  private timers: NodeJS.Timeout[] = [];
  private readonly blocks: Map<number, Block[]>;
  readonly counters = { polls: 0, readings: 0, bad: 0, errors: 0 };

  constructor(
    private readonly link: OpcuaLink,
    points: readonly OpcuaPolledPoint[],
    private readonly sink: ReadingSink | undefined,
    private readonly events: OpcuaEvents,
    private readonly now: () => number = Date.now,
  ) {
    this.blocks = planReads(points, link.config.max_nodes_per_read);
    link.onSession(() => this.resolveAll());
  }

  start(): void {
    if (this.timers.length) return;
    for (const [interval, blocks] of this.blocks) {
      const t = setInterval(() => {
        for (const b of blocks) void this.poll(b);
      }, interval);
      t.unref();
      this.timers.push(t);
    }
  }

  stop(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }

  /** After a new session: namespace URIs may map to other indexes than before. */
  private resolveAll(): void {
    for (const blocks of this.blocks.values()) {
      for (const b of blocks) b.resolved = b.points.map((p) => resolveNodeId(p.source.node_id, (uri) => this.link.namespaceIndex(uri)));
    }
  }

  private async poll(b: Block): Promise<void> {
    if (b.busy || !this.link.isUp()) return;
    b.busy = true;
    this.counters.polls++;
    const asked: { p: OpcuaPolledPoint; node: string }[] = [];
    const nodes: ReadValueIdOptions[] = [];
    b.points.forEach((p, i) => {
      const node = b.resolved[i];
      if (node === null || node === undefined) {
        this.counters.bad++;
        this.events.pointUnreadable(p.id, p.source.server, p.source.node_id, "its namespace URI is not on the server");
        return;
      }
      asked.push({ p, node });
      nodes.push({ nodeId: node, attributeId: VALUE_ATTRIBUTE });
    });
    try {
      if (!nodes.length) return;
      const values = await this.link.read(nodes);
      const ts = this.now();
      asked.forEach(({ p }, i) => this.deliver(p, values[i], ts));
    } catch {
      // The link reports the outage; readings simply pause.
      this.counters.errors++;
    } finally {
      b.busy = false;
    }
  }

  private deliver(p: OpcuaPolledPoint, dv: DataValue | undefined, ts: number): void {
    const v = dv ? valueOf(dv) : "no value returned";
    if (typeof v === "string") {
      this.counters.bad++;
      this.events.pointUnreadable(p.id, p.source.server, p.source.node_id, v);
      return;
    }
    this.counters.readings++;
    this.sink?.reading({ point: p.id, value: v * p.source.scale + p.source.offset, ts, source: `opcua:${p.source.server}/${p.source.node_id}`, quality: "good" });
  }
}

/** Groups points by interval, then into Read requests of at most `maxNodes` nodes. */
export function planReads(points: readonly OpcuaPolledPoint[], maxNodes: number): Map<number, Block[]> {
  const out = new Map<number, Block[]>();
  for (const p of points) {
    const blocks = out.get(p.interval_ms) ?? [];
    let last = blocks[blocks.length - 1];
    if (!last || last.points.length >= maxNodes) {
      last = { points: [], resolved: [], busy: false };
      blocks.push(last);
    }
    last.points.push(p);
    last.resolved.push(resolveNodeId(p.source.node_id, () => undefined));
    out.set(p.interval_ms, blocks);
  }
  return out;
}

/** `nsu=URI;...` becomes `ns=<index>;...` on this server; other forms pass unchanged. */
export function resolveNodeId(id: string, indexOf: (uri: string) => number | undefined): string | null {
  const m = /^nsu=([^;]+);(.*)$/s.exec(id);
  if (!m) return id;
  const i = indexOf(m[1]!);
  return i === undefined ? null : `ns=${i};${m[2]!}`;
}

/**
 * A DataValue's number, or why there is none. Booleans read as 0/1; 64-bit integers, which
 * the stack gives as [high, low] 32-bit words, are joined (exact up to 2^53).
 */
export function valueOf(dv: DataValue): number | string {
  const sc = dv.statusCode;
  // Good (0x00) and Uncertain (0x40) carry a value; Bad (0x80) does not.
  if (sc && (sc.value >>> 30) >= 2) return `status ${sc.name}`;
  const v: unknown = dv.value?.value;
  if (typeof v === "number") return Number.isFinite(v) ? v : "the value is not finite";
  if (typeof v === "boolean") return v ? 1 : 0;
  if (Array.isArray(v) && v.length === 2 && typeof v[0] === "number" && typeof v[1] === "number" && isInt64(dv.value?.dataType)) {
    const [hi, lo] = v as [number, number];
    const signed = dv.value?.dataType === INT64 && hi >= 0x80000000;
    return signed ? (hi - 0x100000000) * 0x100000000 + lo : hi * 0x100000000 + lo;
  }
  if (v === null || v === undefined) return "the node has no value";
  return `the value is not a number (${Array.isArray(v) || ArrayBuffer.isView(v) ? "an array" : typeof v})`;
}

/** DataType ids of Int64 and UInt64. */
const INT64 = 8;
const UINT64 = 9;
function isInt64(t: unknown): boolean {
  return t === INT64 || t === UINT64;
}
