/** Routing table: (listener, unit id) -> (upstream, remote unit id). First match wins. */
import { parseRange } from "../policy/ranges";
import type { Upstream } from "./upstream";

export interface RouteEntry {
  listener?: string;
  unit: number | string;
  upstream: string;
  remote_unit?: number;
}

export interface Route {
  upstream: Upstream;
  remoteUnit: number;
}

export class Router {
  private readonly byListener = new Map<string, (Route | undefined)[]>();
  constructor(routes: readonly RouteEntry[], upstreams: ReadonlyMap<string, Upstream>, listeners: readonly string[]) {
    for (const l of listeners) {
      const units: (Route | undefined)[] = new Array(256).fill(undefined);
      for (const r of routes) {
        if (r.listener && r.listener !== l) continue;
        const up = upstreams.get(r.upstream);
        if (!up) continue;
        const [a, b] = parseRange(r.unit);
        for (let u = a; u <= b && u <= 255; u++) if (!units[u]) units[u] = { upstream: up, remoteUnit: r.remote_unit ?? u };
      }
      this.byListener.set(l, units);
    }
  }
  route(listener: string, unit: number): Route | undefined {
    return this.byListener.get(listener)?.[unit];
  }
}
