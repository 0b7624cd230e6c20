/**
 * The one table of sinks, the counterpart of agent/sources/registry.ts: the runtime creates each
 * sink the config turns on (its module, and the client library behind it, imported only then),
 * before the boot event, and drives it through the Sink contract (agent/core/component.ts). A
 * sink that is off shows its status as `not_configured`. Adding a sink is a row here.
 */
import type { Logger } from "pino";
import type { ComponentEntry, Sink, SinkState } from "../core/component";
import type { Config } from "../config/schema";
import type { Recorder } from "../events/recorder";
import type { Outbox } from "../outbox/store";
import { redactUrl } from "../mqtt-connection";
import type { RateMeter } from "../rate";

/** What a sink is built with. */
export interface SinkContext {
  config: Config;
  /** Where it reads committed events and deletes what was delivered. */
  outbox: Outbox;
  /** Commit notifications, storage health, and its own events. */
  recorder: Recorder;
  log: Logger;
}

/** A running sink, as the runtime, `status` and `decommission` see it. */
export interface RunningSink extends Sink<Config> {
  readonly state: SinkState;
  readonly lastError: string | undefined;
  /** Events taken away per second. */
  readonly out: RateMeter;
  /** Row ids in flight: the outbox must not evict them. */
  inFlight(): ReadonlySet<number>;
  /** The highest row id it published at least once (0: none): evicted rows up to it had been sent. */
  sentThrough(): number;
}

export interface SinkEntry extends ComponentEntry<"upstream", SinkContext, RunningSink> {
  statusField: string;
  /** Its `component` in log lines. */
  component: string;
  /** Whether the config turns it on (its section is always there, with defaults). */
  configured(c: Config): boolean;
  /** What the config lacks when it is off, for the warning at start. */
  off: string;
  /** Its `status` field, running (`sink`) or not. */
  status(c: Config, sink: RunningSink | undefined): Record<string, unknown>;
}

export const SINKS: readonly SinkEntry[] = [
  {
    section: "upstream",
    statusField: "upstream",
    component: "forwarder",
    // config/references.ts refuses a url without the SOC's key.
    configured: (c) => Boolean(c.upstream.url && c.upstream.soc_public_key),
    off: "upstream.url is not set",
    status: (c, sink) => ({ state: sink?.state ?? "not_configured", url: c.upstream.url ? redactUrl(c.upstream.url) : null, last_error: null, ...(sink?.status() as Record<string, unknown> | undefined) }),
    create: async (ctx) => (await import("./mqtt")).mqttSink(ctx),
  },
];
