/**
 * Polls configured points through the proxy's own upstreams, so polls share the pooled
 * connections, the serial bus queue and its fairness with client traffic (a dead slave backs
 * polls off like everything else). Values go through the readings tap, like passive reads.
 * Addresses of one device, unit, table and interval are merged into as few reads as the
 * specification allows (125 registers, 2000 bits); a read still in flight is not repeated.
 */
import { encodeRequest, LIMITS, type ModbusRequest } from "./codec/pdu";
import { readValues } from "./codec/response";
import type { ReadingsTap, TapPoint, TapTable } from "./tap";
import type { Upstream } from "./upstream/upstream";

/** A block of points is reported unreadable after this many failed polls in a row, lasting at least UNREADABLE_MS. */
export const UNREADABLE_POLLS = 3;
export const UNREADABLE_MS = 30_000;

/** What the poller says of points it cannot read (detection is blind on them meanwhile). */
export interface PollReport {
  unreadable(b: PollBlockInfo, forMs: number, reason: string): void;
  readable(b: PollBlockInfo, afterMs: number): void;
}
export interface PollBlockInfo { device: string; unit: number; table: TapTable; address: number; quantity: number; points: readonly string[] }

export interface PolledPoint extends TapPoint {
  interval_ms: number;
}

interface Block {
  device: string;
  unit: number;
  table: TapTable;
  req: ModbusRequest;
  pdu: Buffer;
  busy: boolean;
  /** Ids of the points the read covers. */
  points: string[];
  /** Failed polls in a row: since when, how many, the latest reason, whether reported. */
  failing: { since: number; polls: number; reason: string; reported: boolean } | null;
}

/** Fair-queue key of the poller's requests (distinct from every client connection). */
const POLL_SOURCE = { poller: true };

const FC: Record<TapTable, 1 | 2 | 3 | 4> = { coil: 1, discrete_input: 2, holding: 3, input: 4 };

export function planBlocks(points: readonly PolledPoint[]): Map<number, Block[]> {
  const groups = new Map<string, PolledPoint[]>();
  for (const p of points) {
    const k = `${p.interval_ms}|${p.device}|${p.unit}|${p.table}`;
    groups.set(k, [...(groups.get(k) ?? []), p]);
  }
  const byInterval = new Map<number, Block[]>();
  for (const pts of groups.values()) {
    const first = pts[0]!;
    const bits = first.table === "coil" || first.table === "discrete_input";
    const max = bits ? LIMITS.readBits : LIMITS.readRegisters;
    const spans = pts.map((p) => [p.address, p.address + (p.type === "int32" || p.type === "uint32" || p.type === "float32" ? 2 : 1)] as const).sort((a, b) => a[0] - b[0]);
    let start = -1;
    let end = -1;
    const blocks: Block[] = byInterval.get(first.interval_ms) ?? [];
    const flush = () => {
      if (start < 0) return;
      const req = { fc: FC[first.table], address: start, quantity: end - start } as ModbusRequest;
      const covered = pts.filter((p) => p.address >= start && p.address < end).map((p) => p.id);
      blocks.push({ device: first.device, unit: first.unit, table: first.table, req, pdu: encodeRequest(req), busy: false, points: covered, failing: null });
    };
    for (const [a, z] of spans) {
      if (start >= 0 && z - start <= max) end = Math.max(end, z);
      else {
        flush();
        start = a;
        end = z;
      }
    }
    flush();
    byInterval.set(first.interval_ms, blocks);
  }
  return byInterval;
}

export class PointPoller {
  private timers: NodeJS.Timeout[] = [];
  readonly counters = { polls: 0, errors: 0 };

  constructor(
    private readonly points: readonly PolledPoint[],
    private readonly upstream: (name: string) => Upstream | undefined,
    private readonly tap: ReadingsTap,
    private readonly now: () => number = Date.now,
    private readonly report?: PollReport,
  ) {}

  start(): void {
    for (const [interval, blocks] of planBlocks(this.points)) {
      const t = setInterval(() => {
        for (const b of blocks) this.poll(b);
      }, interval);
      t.unref();
      this.timers.push(t);
    }
  }

  private poll(b: Block): void {
    const up = this.upstream(b.device);
    if (!up || b.busy) return;
    b.busy = true;
    this.counters.polls++;
    void up
      .request(b.unit, b.req, b.pdu, POLL_SOURCE)
      .then((resp) => {
        const rv = readValues(b.req, resp);
        if (!rv) return this.failed(b, resp[0]! & 0x80 ? `exception response ${resp[1] ?? "?"} (${EXCEPTION_NAMES[resp[1] ?? 0] ?? "unknown code"})` : "a response that does not answer the read");
        this.tap.read(b.device, b.unit, b.table, rv.address, rv.values, this.now());
        if (b.failing?.reported) this.report?.readable(info(b), this.now() - b.failing.since);
        b.failing = null;
      })
      .catch((e: unknown) => this.failed(b, e instanceof Error ? e.message : String(e)))
      .finally(() => (b.busy = false));
  }

  /** A failed poll; the points' first report once it has lasted UNREADABLE_POLLS polls and UNREADABLE_MS. */
  private failed(b: Block, reason: string): void {
    this.counters.errors++;
    const now = this.now();
    b.failing ??= { since: now, polls: 0, reason, reported: false };
    b.failing.polls++;
    b.failing.reason = reason;
    if (b.failing.reported || b.failing.polls < UNREADABLE_POLLS || now - b.failing.since < UNREADABLE_MS) return;
    b.failing.reported = true;
    this.report?.unreadable(info(b), now - b.failing.since, reason);
  }

  stop(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }
}

const EXCEPTION_NAMES: Record<number, string> = { 1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "server device failure", 5: "acknowledge", 6: "server device busy", 10: "gateway path unavailable", 11: "gateway target device failed to respond" };

function info(b: Block): PollBlockInfo {
  const r = b.req as { address: number; quantity: number };
  return { device: b.device, unit: b.unit, table: b.table, address: r.address, quantity: r.quantity, points: b.points };
}
