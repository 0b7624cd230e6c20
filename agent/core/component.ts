/**
 * Sources and sinks as components (as Vector and Telegraf have them): a small lifecycle the
 * daemon drives the same way for each, whatever protocol is behind it. Sources (the Modbus
 * proxy and poller, the OPC UA client and front) produce readings and security events; sinks
 * (the MQTT forwarder) take committed events away. The daemon finds sources in one table
 * (agent/sources/registry.ts) and loads each only when its config section is there.
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
