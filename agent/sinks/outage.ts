/**
 * An episode of the SOC broker being out of reach, for the signed event the forwarder records
 * once it is reachable again (`upstream_outage`): the SOC sees a gateway go silent, and this says
 * afterwards, from the gateway's side, for how long and why (refused, DNS, TLS...). Bounded: at
 * most MAX_CAUSES distinct causes are named, the rest counted together.
 */
const MAX_CAUSES = 8;
const CAUSE_CHARS = 300;

export interface OutageReport {
  from: number;
  to: number;
  seconds: number;
  attempts: number;
  causes: { cause: string; count: number }[];
}

export class Outage {
  private since: number | undefined;
  private attempts = 0;
  private causes = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  /** The forwarder starts, not connected yet: a first connection that takes long is an outage too. */
  begin(): void {
    this.since ??= this.now();
  }

  /** A connection attempt failed, or an open connection was lost. */
  failed(cause: string): void {
    this.since ??= this.now();
    this.attempts++;
    const c = cause.slice(0, CAUSE_CHARS);
    const key = this.causes.has(c) || this.causes.size < MAX_CAUSES ? c : "(other causes)";
    this.causes.set(key, (this.causes.get(key) ?? 0) + 1);
  }

  /** Connected: the episode, if it lasted at least `minMs`; a new one starts at the next failure. */
  up(minMs: number): OutageReport | undefined {
    const since = this.since;
    const to = this.now();
    const r: OutageReport | undefined =
      since !== undefined && to - since >= minMs
        ? { from: since, to, seconds: Math.round((to - since) / 1000), attempts: this.attempts, causes: [...this.causes].map(([cause, count]) => ({ cause, count })).sort((a, b) => b.count - a.count) }
        : undefined;
    this.since = undefined;
    this.attempts = 0;
    this.causes.clear();
    return r;
  }
}
