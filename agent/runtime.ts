import type { Logger } from "pino";
import type { ReadingSink } from "./core/readings";
import type { LoadedConfig } from "./config/load";
import { ControlServer } from "./control/server";
import { DaemonError, describeError, ErrorCodes, isDaemonError, type ErrorCode } from "./core/errors";
import type { Envelope } from "./core/envelope";
import { OcsfClass, type EventDraft } from "./core/events";
import { Recorder } from "./events/recorder";
import { LoopStallWatch } from "./loop-stall";
import { ParallelSigner } from "./events/signer";
import { Heartbeat, PostureProbe } from "./heartbeat";
import { storageBytesWritten } from "./io-stats";
import type { KeyObject } from "node:crypto";
import { announceRotation, signingKeyAtStart, stagePendingKey, type RotationResult } from "./keys/rotation";
import { decommission, MAX_DECOMMISSION_TIMEOUT_MS, type DecommissionParts } from "./decommission";
import { assertReferences, type References } from "./config/references";
import { StorageHealth } from "./outbox/health";
import { DAEMON, describeHolder, OutboxLock, OutboxLocked } from "./outbox/lock";
import { osUser } from "./core/os-user";
import type { RunningDetection } from "./detection/start";
import { reloadDaemon, type ReloadReport } from "./reload";

export type { ReloadReport } from "./reload";
import { incidentDrafts, openOutbox, type OpenedOutbox } from "./outbox/open";
import type { Outbox, OutboxStats } from "./outbox/store";
import { OutboxWatch } from "./outbox/watch";
import { watchControlSocket } from "./control/socket-watch";
import { RateMeter } from "./rate";
import type { SinkState } from "./core/component";
import { SINKS, type RunningSink } from "./sinks/registry";
import { SimulatedSource } from "./simulate";
import { VERSION } from "./version";
import { registerAuditControl } from "./audit";
import { DevicePosture } from "./posture";
import { SOURCES, type RunningSource } from "./sources/registry";
import { SharedWindows } from "./sources/windows";

/** Recent committed events kept for `events tail`. */
export const RECENT_EVENTS = 1000;
const RECENT = RECENT_EVENTS;
/** How often the outbox's files are checked for being deleted or replaced. */
const WATCH_MS = 500;

/**
 * The daemon: outbox, recorder, heartbeat, control socket and the configured sources and sinks
 * (each from its table), wired once. `start` fails closed: a bad key, an unreadable outbox or an incomplete
 * upstream setting stops startup with a DaemonError.
 */
export class Runtime {
  readonly outbox: Outbox;
  private readonly lock: OutboxLock | undefined;
  private readonly opened: OpenedOutbox;
  private readonly lockError: string | undefined;
  /** Whom the start waited for to let go of the outbox, and how long. */
  private readonly lockWait: { holder: string; waited_ms: number } | undefined;
  readonly recorder: Recorder;
  /** The device key that signs now, and a rotation a crash left unannounced. */
  private key: KeyObject;
  private pendingKey: KeyObject | undefined;
  /** Resolves once the daemon has stopped (a signal, or `gatewarden decommission`). */
  readonly ended: Promise<void>;
  private markEnded!: () => void;
  readonly control: ControlServer;
  private readonly heartbeat: Heartbeat;
  private posture!: DevicePosture;
  private readonly sim: SimulatedSource;
  private readonly recent: Envelope[] = [];
  private readonly tails = new Set<(e: Envelope) => void>();
  readonly in = new RateMeter();
  private readonly startedAt = Date.now();
  private readonly writtenAtStart = storageBytesWritten();
  private readonly stopHooks: (() => Promise<void> | void)[] = [];
  /** What the start's reference checks read (the site file, parsed once). */
  private readonly references: References;
  /** The running detection engine, as a reload reaches it. */
  private detection: RunningDetection | undefined;
  private onDetectionReloaded: (() => void) | undefined;
  /** The sinks running, by config section (agent/sinks/registry.ts), created at start. */
  private readonly sinks = new Map<string, RunningSink>();
  /** The sources running, by config section (agent/sources/registry.ts). */
  private readonly sources = new Map<string, RunningSource>();
  /** Where readings from the proxy's tap go (the detection engine, when points are configured). */
  readings: ReadingSink | undefined;
  /** Signed SOC commands and the proxy gate they steer (agent/soc-commands/service.ts). */
  private commands: import("./soc-commands/service").CommandService | undefined;
  private integrityMonitor: import("./integrity-monitor").IntegrityMonitor | undefined;
  /** The boot before this one, from the outbox (null: the first). */
  private previousBoot: number | null = null;

  constructor(
    readonly loaded: LoadedConfig,
    readonly log: Logger,
  ) {
    this.ended = new Promise((r) => (this.markEnded = r));
    const c = loaded.config;
    // Every file the config names (keys, certificates, policy, site) before anything is opened:
    // a mistake stops the start here, with no boot event.
    this.references = assertReferences(loaded);
    // Fails on the outbox only while another process holds it: a damaged file is moved aside,
    // unusable storage gives an outbox in memory (see outbox/open.ts); the boot's first events say which.
    // Held by another process, it waits for it to end (at most buffer.lock_wait_ms in all),
    // then refuses to start with OUTBOX_LOCKED naming it (see lockOutbox).
    const waitUntil = Date.now() + c.buffer.lock_wait_ms;
    const locked = lockOutbox(c.buffer.path, c.buffer.lock_wait_ms, log);
    this.lock = locked.lock;
    this.lockError = locked.error;
    this.lockWait = locked.waited;
    try {
      this.opened = openOutbox(c.buffer.path, c.buffer.max_bytes, log.child({ component: "outbox" }), { waitMs: Math.max(0, waitUntil - Date.now()) });
    } catch (e) {
      this.lock?.release();
      if (isDaemonError(e, "OUTBOX_LOCKED")) throw new DaemonError("OUTBOX_LOCKED", `${e.message}; ${gaveUp(c.buffer.lock_wait_ms)}`, { cause: e });
      throw e;
    }
    this.outbox = this.opened.outbox;
    // A rotation a crash interrupted is finished (announced: promoted now) or resumed in start().
    const keys = signingKeyAtStart(c.device.key, this.outbox, log.child({ component: "keys" }));
    const key = (this.key = keys.key);
    this.pendingKey = keys.pending;
    this.recorder = new Recorder({
      outbox: this.outbox,
      health: new StorageHealth(this.opened.mode),
      key,
      signer: new ParallelSigner(key),
      device: c.device.id,
      version: VERSION,
      flushMs: c.buffer.flush_ms,
      lowFlushMs: c.buffer.low_flush_ms,
      maxPending: c.buffer.max_pending,
      log: log.child({ component: "recorder" }),
      inFlight: () => this.inFlight(),
      sentThrough: () => Math.max(0, ...[...this.sinks.values()].map((s) => s.sentThrough())),
    });
    this.control = new ControlServer(c.control.socket);
    this.heartbeat = new Heartbeat({
      intervalMs: c.heartbeat.interval_ms,
      sink: this.recorder,
      probe: (this.posture = new DevicePosture({
        config: c,
        probe: new PostureProbe(c.buffer.path),
        outbox: () => this.outbox.stats(),
        integrity: () => this.integrityMonitor?.last?.state ?? (c.integrity ? "unknown" : "not_configured"),
        sink: this.recorder,
      })),
      state: () => this.heartbeatState(),
      log: log.child({ component: "heartbeat" }),
    });
    this.sim = new SimulatedSource(c.simulate.events_per_s, this.recorder);
    this.recorder.onCommit((envs) => {
      this.in.add(envs.length);
      for (const e of envs) {
        this.recent.push(e);
        for (const t of this.tails) t(e);
      }
      if (this.recent.length > RECENT) this.recent.splice(0, this.recent.length - RECENT);
    });
  }

  async start(): Promise<void> {
    const c = this.loaded.config;
    const { check, incident, knownHead } = this.opened;
    await this.createSinks();
    await this.control.listen();
    const boot = this.recorder.start({ config_file: this.loaded.file, outbox_check: check, ...(incident ? { outbox_incident: incident.kind } : {}), ...(this.lockError ? { outbox_lock: this.lockError } : {}), ...(this.lockWait ? { outbox_wait: this.lockWait } : {}) }, knownHead);
    this.previousBoot = boot.previous;
    this.log.info({ device: c.device.id, boot: boot.boot, version: VERSION }, "Gatewarden started.");
    if (boot.previousEnd?.how === "unclean") this.recorder.record(uncleanEndDraft(boot.previous!));
    try {
      if (this.pendingKey) this.resumeRotation(this.pendingKey);
      await this.startComponents();
    } catch (e) {
      // The boot event is committed: say why this boot ends at once, in an event and in the
      // shutdown event's reason, so the SOC does not see a boot that merely stopped.
      const code = e instanceof DaemonError ? e.code : "INTERNAL";
      this.log.error({ err: describeError(e) }, "Start failed; stopping.");
      this.recorder.record({
        class: "system",
        severity: 4,
        ocsf: { class_uid: OcsfClass.ApplicationLifecycle, activity_id: 99, message: `Start failed: ${describeError(e)}`, unmapped: { error_type: "start_failed", code, stage: "start" } },
      });
      await this.stop(`start failed: ${code}`, 0);
      throw e;
    }
  }

  private async startComponents(): Promise<void> {
    const c = this.loaded.config;
    const incident = this.opened.incident;
    if (incident) for (const d of incidentDrafts(incident, c.buffer.path)) this.recorder.record(d);
    // Files changing under the daemon (a deleted WAL...) are saved and reported; the report is
    // recorded outside the check, which may run inside a commit's caller.
    const watch = new OutboxWatch(this.outbox, this.log.child({ component: "outbox" }), (d) => setImmediate(() => this.recorder.record(d)));
    const watchTimer = setInterval(() => watch.check(), WATCH_MS);
    watchTimer.unref();
    this.onStop(() => clearInterval(watchTimer));
    this.registerControl();
    this.onStop(watchControlSocket(this.control, this.recorder, this.log.child({ component: "control" })));
    await this.startDetectors();
    await this.prepareCommands();
    await this.startSources();
    await this.startIntegrity();
    await this.startTamper();
    await this.startCommands();
    for (const s of this.sinks.values()) s.start();
    if (!this.sinks.size) this.log.warn({}, `${SINKS.map((e) => e.off).join(", ")}: events are kept in the outbox until it is.`);
    // Watched once everything serves: the start's own work (restoring detector state, loading
    // what is configured) holds the loop before the proxy answers anyone.
    const stalls = new LoopStallWatch({ thresholdMs: c.heartbeat.stall_report_ms, sink: this.recorder, log: this.log.child({ component: "loop" }), slowestCommit: () => this.outbox.takeSlowestCommit() });
    stalls.start();
    this.stallWatch = stalls;
    this.onStop(() => stalls.stop());
    this.heartbeat.start();
    void this.heartbeat.beat();
    this.sim.start();
  }

  /** The detection engine, when points are configured: findings and incidents to the recorder. */
  private async startDetectors(): Promise<void> {
    const c = this.loaded.config;
    if (!c.points || !Object.keys(c.points).length) return this.notConfigured("points", ["detection.status", "maintenance.start", "maintenance.end", "maintenance.list"]);
    const { startDetection } = await import("./detection/start");
    const d = await startDetection({ points: c.points, config: c.detection, site: this.references.site, sink: this.recorder, log: this.log.child({ component: "detection" }) });
    this.readings = d.readings;
    this.detection = d;
    this.control.handle("detection.status", () => d.status());
    const { registerMaintenanceControl } = await import("../detectors/maintenance");
    registerMaintenanceControl(this.control, d.engine, this.recorder);
    // A reload swaps the engine: the maintenance commands follow it.
    this.onDetectionReloaded = () => registerMaintenanceControl(this.control, d.engine, this.recorder);
    this.onStop(() => d.stop());
  }

  /** The integrity watch, when configured (agent/integrity-monitor.ts). */
  private async startIntegrity(): Promise<void> {
    if (!this.loaded.config.integrity) return this.notConfigured("integrity", ["integrity.status", "integrity.check"]);
    const { IntegrityMonitor } = await import("./integrity-monitor");
    const m = new IntegrityMonitor(this.loaded, this.recorder, this.log.child({ component: "integrity" }), this.previousBoot);
    this.integrityMonitor = m;
    m.start(this.control);
    this.onStop(() => m.stop());
  }

  /** SOC commands, when configured: the state (mode, blocked identities) before the proxy starts. */
  private async prepareCommands(): Promise<void> {
    const c = this.loaded.config.commands;
    if (!c) return this.notConfigured("commands", ["commands.status"]);
    const { CommandService } = await import("./soc-commands/service");
    this.commands = new CommandService(this.loaded, c, this.recorder, this.log.child({ component: "commands" }));
  }

  /** The command subscription, once the components it steers run. */
  private async startCommands(): Promise<void> {
    const cmd = this.commands;
    if (!cmd) return;
    await cmd.start({
      closeWindows: (by) => [...this.sources.values()].reduce((n, s) => n + (s.closeWriteWindows?.(by) ?? 0), 0),
      policyFor: (f) => [...this.sources.values()].find((s) => s.policyFor)?.policyFor?.(f),
      posture: () => this.heartbeat.beat(),
      integrity: () => this.integrityMonitor?.check(),
    });
    this.control.handle("commands.status", () => cmd.status());
    this.onStop(() => cmd.stop());
  }

  /** Tamper inputs, when configured (firmware-hooks/tamper.ts). */
  private async startTamper(): Promise<void> {
    const t = this.loaded.config.tamper;
    if (!t?.inputs.length) return this.notConfigured("tamper", ["tamper.status"]);
    const { TamperWatch } = await import("../firmware-hooks/tamper");
    const w = new TamperWatch(t, this.recorder, this.log.child({ component: "tamper" }));
    w.start();
    this.control.handle("tamper.status", () => Object.fromEntries(w.states));
    this.onStop(() => w.stop());
  }

  /**
   * Every sink the config turns on, before the boot event (so rows already in the outbox count
   * as possibly sent before); the config's files were checked in the constructor.
   */
  private async createSinks(): Promise<void> {
    const c = this.loaded.config;
    for (const entry of SINKS) {
      if (entry.configured(c)) this.sinks.set(entry.section, await entry.create({ config: c, outbox: this.outbox, recorder: this.recorder, log: this.log.child({ component: entry.component }) }));
    }
  }

  /** A running sink by its config section (`upstream`), for status and tests. */
  sink(section: string): RunningSink | undefined {
    return this.sinks.get(section);
  }

  /** Row ids any sink has in flight (the outbox must not evict them). */
  private inFlight(): ReadonlySet<number> {
    if (this.sinks.size <= 1) return this.sinks.values().next().value?.inFlight() ?? NONE;
    return new Set([...this.sinks.values()].flatMap((s) => [...s.inFlight()]));
  }

  /** Every source whose config section is present, in the table's order; the others answer "not configured". */
  private async startSources(): Promise<void> {
    const c = this.loaded.config;
    const windows = new SharedWindows(c);
    for (const entry of SOURCES) {
      if (!c[entry.section]) {
        this.notConfigured(entry.section, entry.control);
        continue;
      }
      const src = await entry.create({ config: c, events: this.recorder, readings: this.readings, control: this.control, log: this.log.child({ component: entry.section }), commands: this.commands, windows });
      this.onStop(() => src.stop());
      await src.start();
      this.sources.set(entry.section, src);
    }
  }

  /** A running source by its config section (`modbus`, `opcua`), for status and tests. */
  source(section: string): RunningSource | undefined {
    return this.sources.get(section);
  }

  /** Commands of a section the config does not have answer so, not "unknown command". */
  private notConfigured(section: string, cmds: readonly string[]): void {
    for (const cmd of cmds) {
      this.control.handle(cmd, () => {
        throw new DaemonError("CONFIG_INCOMPLETE", `${cmd.split(".")[0]} is not running: ${this.loaded.file} has no ${section} section`);
      });
    }
  }

  /** Lets components add control commands and stop hooks (e.g. the Modbus proxy). */
  onStop(fn: () => Promise<void> | void): void {
    this.stopHooks.push(fn);
  }

  /** `gatewarden reload` and SIGHUP (agent/reload.ts). Never throws. */
  reload(trigger: string): ReloadReport {
    return reloadDaemon(
      {
        loaded: this.loaded,
        log: this.log,
        events: this.recorder,
        ...(this.detection ? { detection: { reload: (p, c, site) => this.detection!.reload(p, c, site), ...(this.onDetectionReloaded ? { after: this.onDetectionReloaded } : {}) } } : {}),
        sources: [...this.sources.values()],
      },
      trigger,
    );
  }

  /**
   * `gatewarden keys rotate`: a new key (or `next`, staged before a crash), announced in an
   * event signed by the current key, then signing everything after (agent/keys/rotation.ts).
   */
  rotateKey(by: string, next?: KeyObject): RotationResult {
    if (this.opened.mode === "memory") throw new DaemonError("OUTBOX_FAILING", `the outbox ${this.loaded.config.buffer.path} could not be opened (it runs in memory): a key rotation must survive a restart; fix the storage first`);
    const c = this.loaded.config;
    const staged = next ?? stagePendingKey(c.device.key);
    const r = announceRotation({ device: c.device.id, keyPath: c.device.key, recorder: this.recorder, current: this.key, next: staged, by });
    this.key = staged;
    this.pendingKey = undefined;
    this.log.warn({ old_fingerprint: r.old_fingerprint, new_fingerprint: r.new_fingerprint, boot: r.boot, from_seq: r.from_seq, by }, "Device key rotated.");
    return r;
  }

  /** A rotation a crash left unannounced: announced now; when that fails, the current key goes on signing. */
  private resumeRotation(next: KeyObject): void {
    try {
      this.rotateKey("gatewarden (an unfinished rotation, resumed at start)", next);
    } catch (e) {
      this.log.error({ err: describeError(e) }, "Could not finish the interrupted key rotation; the current key goes on signing. Run `gatewarden keys rotate` again.");
    }
  }

  private registerControl(): void {
    this.control.handle("status", () => this.status());
    this.control.handle("keys.rotate", (args) => this.rotateKey(typeof args.by === "string" ? args.by : osUser()));
    this.control.handle("decommission", (args) => decommission(this.decommissionParts(), { by: typeof args.by === "string" ? args.by : osUser(), timeoutMs: typeof args.timeout_ms === "number" && args.timeout_ms > 0 ? Math.min(args.timeout_ms, MAX_DECOMMISSION_TIMEOUT_MS) : 60_000 }));
    this.control.handle("reload", (args) => {
      const r = this.reload(typeof args.by === "string" ? `gatewarden reload by ${args.by}` : "gatewarden reload");
      if (!r.ok) throw new DaemonError((r.code && r.code in ErrorCodes ? r.code : "CONFIG_INVALID") as ErrorCode, `not reloaded, the running configuration stays: ${r.reason}`);
      return r;
    });
    registerAuditControl(this.control, this.recorder);
    this.control.handle("posture", () => this.posture.read());
    this.control.handle("events.recent", (args) => {
      const n = recentLimit(args.limit, 20);
      return n === 0 ? [] : this.recent.slice(-n);
    });
    this.control.handle("events.tail", (args, ctx) => {
      const n = recentLimit(args.limit, 10);
      if (n > 0) for (const e of this.recent.slice(-n)) ctx.push(e);
      return new Promise<null>((resolve) => {
        const fn = (e: Envelope) => ctx.push(e);
        this.tails.add(fn);
        ctx.signal.addEventListener("abort", () => {
          this.tails.delete(fn);
          resolve(null);
        });
      });
    });
  }

  upstreamState(): SinkState {
    return this.sinks.get("upstream")?.state ?? "not_configured";
  }

  private heartbeatState(): Record<string, unknown> {
    const s = this.outboxStats();
    return {
      upstream: this.upstreamState(),
      outbox_depth: s?.depth ?? null,
      outbox_bytes: s?.bytes ?? null,
      outbox_file_bytes: s?.file_bytes ?? null,
      oldest_unsent_age_s: ageS(s?.oldest_time),
      outbox_storage: this.recorder.health.view(),
      pending_in_memory: this.recorder.pendingCount(),
      uptime_s: Math.round((Date.now() - this.startedAt) / 1000),
      loop_max_stall_ms: this.stallWatch?.takeMax() ?? null,
      storage: this.storage(),
    };
  }

  /** The outbox's figures, or undefined while its storage cannot be read (never throws). */
  private outboxStats(): OutboxStats | undefined {
    try {
      return this.outbox.stats();
    } catch (e) {
      this.recorder.health.failed(e, false);
      return undefined;
    }
  }

  /** Bytes written to storage since start, and per committed event (SD-card wear). */
  private storage(): { bytes_written: number | null; bytes_per_event: number | null } {
    const now = storageBytesWritten();
    const written = now === null || this.writtenAtStart === null ? null : now - this.writtenAtStart;
    const n = this.recorder.counters.committed;
    return { bytes_written: written, bytes_per_event: written === null || n === 0 ? null : Math.round(written / n) };
  }

  status(): Record<string, unknown> {
    const c = this.loaded.config;
    const s = this.outboxStats();
    return {
      device: c.device.id,
      boot: this.recorder.bootEpoch,
      version: VERSION,
      uptime_s: Math.round((Date.now() - this.startedAt) / 1000),
      ...Object.fromEntries(SINKS.map((e) => [e.statusField, e.status(c, this.sinks.get(e.section))])),
      outbox: {
        depth: s?.depth ?? null,
        bytes: s?.bytes ?? null,
        file_bytes: s?.file_bytes ?? null,
        budget_bytes: this.outbox.maxBytes,
        // SQLite's quick_check of the outbox at this start (the daemon holds the file: no other process can run it).
        check: this.opened.check,
        parked: s?.parked ?? null,
        quarantined: s?.quarantined ?? null,
        oldest_unsent_age_s: ageS(s?.oldest_time),
        pending_in_memory: this.recorder.pendingCount(),
        storage: this.recorder.health.view(),
      },
      rates: { events_in_per_s: round1(this.in.perSecond()), events_out_per_s: round1([...this.sinks.values()].reduce((n, s) => n + s.out.perSecond(), 0)) },
      storage: this.storage(),
      counters: this.recorder.counters,
      last_error: this.recorder.health.view().error ?? [...this.sinks.values()].find((s) => s.lastError)?.lastError ?? this.recorder.lastError ?? null,
      // How many readings (proxy tap, Modbus polls, OPC UA) reached the detectors; null: no points.
      detection: this.detection ? { readings: this.detection.engine.stats().readings } : null,
      // Sources with a status field (the OPC UA process: state, pid, restarts, RSS); null: not configured.
      ...Object.fromEntries(SOURCES.flatMap((e) => (e.statusField ? [[e.statusField, this.sources.get(e.section)?.status() ?? null]] : []))),
    };
  }

  /** Stops producing events (the demo drains before it stops). */
  stopSources(): void {
    this.sim.stop();
    this.heartbeat.stop();
  }

  /** Stops sources, records the shutdown event, gives the sinks `drainMs` to send, closes. */
  private stopping: Promise<void> | undefined;

  /**
   * The process is ending on an error nothing handled (`gatewarden run` calls this from its
   * `uncaughtException` handler, then exits): records the crash as this run's last event, at
   * severity 4, with the error, and closes the outbox. Synchronous: the event loop's state
   * cannot be trusted. Sinks are not drained; the next start sends the event.
   */
  crashed(error: string): void {
    if (this.crashing) return;
    this.crashing = true;
    // Before the boot event there is no run to end in the chain: the log says it.
    if (this.recorder.bootEpoch === 0) return;
    try {
      this.recorder.close(`uncaught error: ${error}`, true);
      this.outbox.close();
      this.lock?.release();
    } catch (e) {
      this.log.error({ err: describeError(e) }, "Could not record the crash.");
    }
  }

  private crashing = false;
  /** Hold-ups of the event loop (started with the components). */
  private stallWatch: LoopStallWatch | undefined;

  /** Idempotent: a second call waits for the first. */
  stop(reason: string, drainMs = 2000): Promise<void> {
    this.stopping ??= this.doStop(reason, drainMs);
    return this.stopping;
  }

  /** Stops the sources and every component (each stop hook runs once). */
  private async stopComponents(): Promise<void> {
    this.stopSources();
    for (const h of this.stopHooks.splice(0).reverse()) {
      try {
        await h();
      } catch (e) {
        this.log.error({ err: describeError(e) }, "A component failed to stop cleanly.");
      }
    }
  }

  /** What `gatewarden decommission` works with (agent/decommission.ts). */
  private decommissionParts(): DecommissionParts {
    if (this.stopping) throw new DaemonError("CONTROL_BAD_REQUEST", "the daemon is already stopping");
    return {
      config: this.loaded.config,
      configFile: this.loaded.file,
      key: this.key,
      recorder: this.recorder,
      outbox: this.outbox,
      sink: this.sinks.get("upstream"),
      stopProducing: () => this.stopComponents(),
      stop: (reason) => this.stop(reason, 0),
      release: async () => {
        this.stopping ??= new Promise<void>(() => {}); // no other stop from now on
        for (const s of this.sinks.values()) await s.stop();
        this.outbox.close();
        this.lock?.release();
      },
      end: () =>
        void this.control.close().finally(() => {
          this.log.info({}, "Gatewarden decommissioned: keys, outbox and state wiped.");
          this.markEnded();
        }),
    };
  }

  private async doStop(reason: string, drainMs: number): Promise<void> {
    await this.stopComponents();
    this.recorder.close(reason);
    await Promise.all([...this.sinks.values()].map((s) => s.drain(drainMs)));
    for (const s of this.sinks.values()) await s.stop();
    await this.control.close();
    this.outbox.close();
    this.lock?.release();
    this.log.info({ reason }, "Gatewarden stopped.");
    this.markEnded();
  }
}

/** A control request's `limit`: absent means the default; anything but 0..RECENT is refused. */
function recentLimit(v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > RECENT) throw new DaemonError("CONTROL_BAD_REQUEST", `limit must be a whole number from 0 to ${RECENT}`);
  return v;
}

const NONE: ReadonlySet<number> = new Set();
const round1 = (n: number) => Math.round(n * 10) / 10;
const ageS = (t: number | null | undefined) => (t == null ? null : Math.max(0, Math.round((Date.now() - t) / 1000)));

/**
 * Takes the outbox's lock. Held by another daemon (OUTBOX_LOCKED), the start stops at once: two
 * daemons on one outbox would fork the chain. Held by a command that opens the file offline
 * (`gatewarden outbox check`, an audit record written while no daemon ran), it waits up to
 * `waitMs` for it to end, saying whom it waits for, then stops with OUTBOX_LOCKED naming it:
 * without the file the start knows neither the chain head, nor the key that signs it, nor the
 * loss records owed, so it records nothing rather than a boot that forks the chain or is lost.
 * A lock that cannot be taken for another reason (storage that cannot be written, a damaged
 * lock file) does not stop it: the daemon runs unlocked and its boot event says why
 * (`outbox_lock`).
 */
function lockOutbox(path: string, waitMs: number, log: Logger): { lock?: OutboxLock; error?: string; waited?: { holder: string; waited_ms: number } } {
  try {
    return { lock: new OutboxLock(path) };
  } catch (e) {
    const refuse = (l: OutboxLocked) => l.advise(l.holder?.what === DAEMON ? "stop it first, or give this one its own buffer.path and keys" : gaveUp(waitMs));
    if (e instanceof OutboxLocked) {
      if (e.holder?.what === DAEMON || !waitMs) throw refuse(e);
      const holder = describeHolder(e.holder);
      const since = Date.now();
      log.warn({ holder, wait_ms: waitMs }, `The outbox ${path} is held by ${holder}; waiting up to ${waitMs / 1000} s for it to end (buffer.lock_wait_ms).`);
      try {
        const lock = new OutboxLock(path, DAEMON, waitMs);
        log.info({ holder, waited_ms: Date.now() - since }, "The outbox is free: starting.");
        return { lock, waited: { holder, waited_ms: Date.now() - since } };
      } catch (again) {
        if (again instanceof OutboxLocked) throw refuse(again);
        e = again;
      }
    }
    if (isDaemonError(e, "OUTBOX_LOCKED")) throw e;
    log.error({ err: describeError(e) }, "Cannot take the outbox lock; running unlocked.");
    return { error: describeError(e) };
  }
}

/** What the refusal after the wait tells the operator. */
function gaveUp(waitMs: number): string {
  return `waited ${waitMs / 1000} s for it to end (buffer.lock_wait_ms); nothing was recorded: start the daemon again once it has ended (under systemd, Restart=on-failure does)`;
}

/**
 * The run before this one ended without its shutdown event: killed (SIGKILL, the OOM killer),
 * hung until its watchdog killed it, crashed without recording it, or the power was cut.
 */
function uncleanEndDraft(previousBoot: number): EventDraft {
  return {
    class: "finding",
    severity: 3,
    ocsf: {
      class_uid: OcsfClass.DetectionFinding,
      activity_id: 1,
      message: `Gatewarden's previous run (boot ${previousBoot}) ended without stopping: it was killed, hung until its watchdog killed it, crashed, or the gateway lost power`,
      finding_info: { title: "Gatewarden ended without stopping", types: ["gatewarden.unclean_end"], uid: `unclean-end-${previousBoot}` },
      unmapped: { error_type: "unclean_end", previous_boot: previousBoot },
    },
  };
}
