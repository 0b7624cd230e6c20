/**
 * Sources and sinks as components (as Vector and Telegraf have them): a small lifecycle the
 * daemon drives the same way for each, whatever protocol is behind it. Sources (the Modbus
 * proxy and poller, the OPC UA client and front) produce readings and security events; sinks
 * (the MQTT forwarder) take committed events away. The daemon finds them in two tables of one
 * shape (agent/sources/registry.ts, agent/sinks/registry.ts) and loads each only when its config
 * section turns it on.
 */

/** Whether a running component can do its work now; `detail` says why not. */
export interface ComponentHealth {
  ok: boolean;
  /** Its own state word (`running`, `up`, `restarting`, `down`, ...). */
  state: string;
  detail?: string;
}

export interface Component<Config = unknown> {
  readonly name: string;
  /** Fails (a DaemonError naming the file or address) when the operator's settings cannot work. */
  start(): Promise<void> | void;
  /** Idempotent; releases sockets, timers and children. */
  stop(): Promise<void>;
  /**
   * A new configuration: checked first (throws a DaemonError and nothing changes), then taken
   * by the returned step, which says what it reloaded. Absent: changes wait for a restart.
   */
  reload?(next: Config, trigger: string): () => string[];
  health(): ComponentHealth;
  /** What `gatewarden status` and the component's own status command show. */
  status(): unknown;
}

/** Where readings and security events come from. */
export type Source<Config = unknown> = Component<Config>;

/**
 * Where committed events go: at least once (nothing is lost across a reconnect), in commit
 * order, with a bounded window in flight, and nothing sent after `stop`.
 */
export interface Sink<Config = unknown> extends Component<Config> {
  /** Waits up to `timeoutMs` until nothing is left to send; true when nothing is. */
  drain(timeoutMs: number): Promise<boolean>;
}

/** A sink's state word (`gatewarden status`, the heartbeat); `not_configured` when none runs. */
export type SinkState = "not_configured" | "connecting" | "up" | "down" | "stopped";

/**
 * A row of a component table: the config section that turns it on, and how it is built. Its
 * module is imported inside `create`, so an unconfigured component is never loaded.
 */
export interface ComponentEntry<Section extends string, Ctx, Running> {
  /** The config section that turns it on, and its name in logs and status. */
  section: Section;
  /** Its field in `gatewarden status`, if it has one. */
  statusField?: string;
  create(ctx: Ctx): Promise<Running>;
}
