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
      blocks.push({ device: first.device, unit: first.unit, table: first.table, req, pdu: encodeRequest(req), busy: false });
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
        if (rv) this.tap.read(b.device, b.unit, b.table, rv.address, rv.values, this.now());
        else this.counters.errors++;
      })
      .catch(() => this.counters.errors++)
      .finally(() => (b.busy = false));
  }

  stop(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }
}
