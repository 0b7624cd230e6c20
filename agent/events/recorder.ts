import type { KeyObject } from "node:crypto";
import { performance } from "node:perf_hooks";
import type { Logger } from "pino";
import { DaemonError, describeError } from "../core/errors";
import { StorageHealth, type StorageEpisode } from "../outbox/health";
import { mergeLoss, type EvictedRange, type Outbox } from "../outbox/store";
import { intersectRanges, rangeCount } from "../core/seq-ranges";
import { finishEnvelope, GENESIS_HASH, prepareEnvelope, type Envelope, type Prepared, type UnsignedEnvelope } from "../core/envelope";
import { InlineSigner, type BatchSigner } from "./signer";
import { shapeOcsf } from "./ocsf";
import { fitDraft, MAX_EVENT_BYTES } from "./fit";
import { OcsfClass } from "../core/events";
import { CLASS_RANK, EVENT_CLASSES, type EventClass, type EventDraft, type EventSink } from "../core/events";
import type { ChainHead, PreviousEnd } from "../outbox/store";

export interface RecorderOptions {
  outbox: Outbox;
  key: KeyObject;
  device: string;
  version: string;
  flushMs: number;
  /**
   * How long telemetry may wait for a commit when nothing else is pending (SD-card wear: each
   * commit writes whole pages), at most `LOW_BATCH_ROWS` of it. Defaults to `flushMs`. Any other
   * event commits within `flushMs`, taking the waiting telemetry along: `audit`, `finding` and
   * `system` with the WAL fsynced, a heartbeat without (it says the gateway is alive now).
   */
  lowFlushMs?: number;
  maxPending: number;
  log: Logger;
  /** Signs batches of hashes; defaults to signing inline with `key`. */
  signer?: BatchSigner;
  /** Rows the forwarder has in flight: never evicted. */
  inFlight?: () => ReadonlySet<number>;
  /**
   * The highest row id a sink has published at least once (0: none): evicted rows up to it had
   * been sent, unacknowledged, and the loss records say so (`sent_unacknowledged`).
   */
  sentThrough?: () => number;
  /** The outbox's storage state (shared with the forwarder); one of its own when not given. */
  health?: StorageHealth;
  now?: () => number;
  /** While the outbox is full, evictions are named by one loss record per class this often. */
  lossIntervalMs?: number;
}

const LOSS_INTERVAL_MS = 5000;

/** How many seq ranges one loss record may carry; more make several records. */
const MAX_RANGES_PER_LOSS = 500;
/** Events per commit; while storage fails, a retry tries this few first (cheap to re-sign). */
const CHUNK = 2000;
const PROBE_CHUNK = 64;
/**
 * Telemetry waiting for a commit (`lowFlushMs`) commits once this many rows wait: what a killed
 * process can lose of it stays bounded in count as well as in time, whatever the rate.
 */
export const LOW_BATCH_ROWS = 256;
/** Commits of evictions alone before one commit of events (see commitDrafts). */
const MAX_EVICTION_ROUNDS = 64;

/**
 * Turns drafts into signed, hash-chained envelopes and commits them to the outbox in batches.
 * The one writer of the chain: `boot`, `seq` and `prev` advance only when a commit succeeds.
 */
export class Recorder implements EventSink {
  private pending: { draft: EventDraft; resolve?: (e: Envelope) => void; keep?: boolean }[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** When the pending timer fires (ms, `now()`), and whether a durable event is pending. */
  private timerDue = 0;
  private urgent = false;
  private boot = 0;
  private seq = -1;
  private prev = GENESIS_HASH;
  private readonly bootStart = performance.now();
  private readonly listeners = new Set<(envs: readonly Envelope[], ids: readonly number[]) => void>();
  /** Drafts dropped while the store could not commit, per class: reported once it can. */
  private dropped = new Map<EventClass, number>();
  private closed = false;
  /** Evictions no committed loss record names yet (also kept in the outbox, see `commit`). */
  private lossPending: EvictedRange[] = [];
  /** The current full-outbox episode: warned about once when it starts, summed up when it ends. */
  private episode: { since: number; evicted: Map<EventClass, number>; sent: number; sinceTick: number; timer: NodeJS.Timeout } | undefined;
  /** `evicted_sent`: of the evicted rows, those that had been sent (the SOC may hold them). */
  readonly counters = { recorded: 0, committed: 0, invalid: 0, truncated: 0, evicted: 0, evicted_sent: 0, dropped: 0, commit_errors: 0 };
  /** When an event over the size bound was last logged (ms, `now()`; the counter counts every one). */
  private truncatedLoggedAt = Number.NEGATIVE_INFINITY;
  lastError: string | undefined;

  private signer: BatchSigner;
  readonly health: StorageHealth;

  constructor(private readonly o: RecorderOptions) {
    this.signer = o.signer ?? new InlineSigner(o.key);
    this.health = o.health ?? new StorageHealth();
  }

  /**
   * Commits everything pending, then `draft(seq)` alone (seq: its own position) as the last
   * event signed by the current key, with `signingKey` noted in the same transaction; every
   * later event is signed by `signer`. Throws (nothing changes) when storage cannot commit.
   */
  rotateKey(signer: BatchSigner, signingKey: string, draft: (seq: number) => EventDraft): Envelope {
    this.flush();
    if (this.pending.length || this.closed) throw new DaemonError("OUTBOX_FAILING", `the outbox cannot commit now (${this.lastError ?? "closed"}); the key was not rotated`);
    let env: Envelope;
    try {
      env = this.commitDrafts([draft(this.seq + 1)], false, signingKey)[0]!;
    } catch (e) {
      this.counters.commit_errors++;
      this.lastError = describeError(e);
      throw new DaemonError("OUTBOX_FAILING", `the outbox cannot commit the announcement (${this.lastError}); the key was not rotated`);
    }
    this.signer.close();
    this.signer = signer;
    return env;
  }

  /**
   * Commits everything pending, then the farewell as the device's last event: nothing is
   * recorded after it (no shutdown event either).
   */
  farewell(draft: EventDraft): Envelope {
    this.flush();
    if (this.pending.length || this.closed) throw new DaemonError("OUTBOX_FAILING", `the outbox cannot commit now (${this.lastError ?? "closed"}); no farewell was recorded`);
    if (this.episode) clearInterval(this.episode.timer);
    this.episode = undefined;
    let env: Envelope;
    try {
      if (this.lossPending.length) this.commitDrafts([], true);
      env = this.commitDrafts([draft])[0]!;
    } catch (e) {
      this.counters.commit_errors++;
      this.lastError = describeError(e);
      throw new DaemonError("OUTBOX_FAILING", `the outbox cannot commit the farewell (${this.lastError}); nothing was wiped`);
    }
    this.closed = true;
    this.signer.close();
    return env;
  }

  get bootEpoch(): number {
    return this.boot;
  }

  /**
   * Starts a new boot: the boot event (seq 0) names the previous boot epoch and the last
   * sequence number it committed, and chains to its last hash. Committed durably before
   * anything else is recorded; when storage fails it stays first in line, retried with the
   * rest (the boot's envelope is then undefined until it commits). `knownHead` is a chain head
   * known from elsewhere (the outbox's second copy) that is ahead of the outbox's own.
   */
  start(extra: Record<string, unknown> = {}, knownHead?: ChainHead): { boot: number; env: Envelope | undefined; previous: number | null; previousEnd: PreviousEnd | undefined } {
    const head = knownHead ?? this.o.outbox.head();
    // A head known from elsewhere is past what the outbox kept: how that run ended was lost with it.
    const end: PreviousEnd | undefined = !head ? undefined : knownHead ? { how: "unknown" } : this.o.outbox.previousEnd(head);
    this.o.outbox.headCopy?.note(head ? { prev: [head.boot, head.seq] } : {});
    const nowSec = Math.floor(this.now() / 1000);
    this.boot = Math.max((head?.boot ?? 0) + 1, nowSec);
    this.seq = -1;
    this.prev = head?.hash ?? GENESIS_HASH;
    const draft: EventDraft = {
      class: "system",
      severity: 1,
      ocsf: {
        class_uid: OcsfClass.ApplicationLifecycle,
        activity_id: 3, // Start
        message: head ? `Gatewarden started (boot ${this.boot}; previous boot ${head.boot} ended at seq ${head.seq}, ${endText(end!)})` : `Gatewarden started for the first time (boot ${this.boot})`,
        app: { name: "Gatewarden", version: this.o.version },
        unmapped: { boot: { previous_boot: head?.boot ?? null, previous_last_seq: head?.seq ?? null, previous_hash: head?.hash ?? null, previous_end: end?.how ?? null, ...(end && "reason" in end ? { previous_stop_reason: end.reason } : {}), ...extra } },
      },
    };
    // Evictions of the previous boot that its loss records did not name yet follow the boot event.
    this.lossPending = this.o.outbox.pendingLoss();
    let env: Envelope | undefined;
    this.pending.unshift({ draft, resolve: (e) => (env = e), keep: true });
    this.flush();
    return { boot: this.boot, env, previous: head?.boot ?? null, previousEnd: end };
  }

  record(draft: EventDraft): void {
    this.enqueue(draft);
  }

  /** Records and resolves once the event is committed (for callers that must know). */
  recordAndWait(draft: EventDraft): Promise<Envelope> {
    return new Promise((resolve) => this.enqueue(draft, resolve));
  }

  onCommit(fn: (envs: readonly Envelope[], ids: readonly number[]) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private enqueue(draft: EventDraft, resolve?: (e: Envelope) => void): void {
    if (this.closed) return;
    const bad = draftProblem(draft);
    this.counters.recorded++;
    if (bad) {
      this.counters.invalid++;
      this.o.log.warn({ problem: bad }, "Malformed event draft; recording an EVENT_INVALID event instead.");
      draft = invalidDraft(bad);
    }
    this.pending.push({ draft, resolve });
    // While storage fails, only the back-off timer retries: a commit per new event would
    // re-sign the whole chunk each time.
    if (this.health.failing) {
      this.shedIfOverfull();
      this.timer ??= setTimeout(() => this.flush(), this.health.view().next_retry_ms ?? 1000);
    } else if (this.pending.length >= (this.urgent ? this.o.maxPending : Math.min(this.o.maxPending, LOW_BATCH_ROWS))) this.flush();
    else this.schedule(draft.class !== "telemetry");
  }

  /**
   * A commit within `flushMs` once anything but telemetry is pending; telemetry alone waits up
   * to `lowFlushMs` (bounded in count by `LOW_BATCH_ROWS`, see enqueue).
   */
  private schedule(prompt: boolean): void {
    const now = this.now();
    if (prompt) this.urgent = true;
    const wait = this.urgent ? this.o.flushMs : (this.o.lowFlushMs ?? this.o.flushMs);
    if (this.timer && this.timerDue <= now + wait) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerDue = now + wait;
    this.timer = setTimeout(() => this.flush(), wait);
  }

  /** Commits everything pending now. Safe to call at any time; never throws. */
  flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.urgent = false;
    while (this.pending.length) {
      // The boot event (seq 0) commits alone, first, with the loss records the last boot owed.
      const boot = this.pending[0]!.keep === true;
      const chunk = this.pending.slice(0, boot ? 1 : this.health.failing ? PROBE_CHUNK : CHUNK);
      try {
        if (this.dropped.size && !boot) {
          this.commitDrafts([droppedDraft(this.dropped)]);
          this.dropped.clear();
        }
        const envs = this.commitDrafts(
          chunk.map((p) => p.draft),
          boot,
        );
        // A commit takes as many drafts as the outbox's limit for one commit allows (see commitDrafts).
        const taken = Math.min(chunk.length, envs.length);
        this.pending.splice(0, taken);
        for (let i = 0; i < taken; i++) chunk[i]!.resolve?.(envs[i]!);
        const ep = this.health.succeeded();
        if (ep) this.storageRecovered(ep);
      } catch (e) {
        this.counters.commit_errors++;
        this.lastError = describeError(e);
        const { delayMs, fresh } = this.health.failed(e);
        const log = { err: this.lastError, pending: this.pending.length, retry_ms: delayMs };
        if (fresh) this.o.log.error(log, "Outbox commit failed; events stay queued in memory (bounded), retried with back-off.");
        else this.o.log.warn(log, "Outbox commit failed again.");
        this.shedIfOverfull();
        if (!this.closed) this.timer = setTimeout(() => this.flush(), delayMs);
        return;
      }
    }
  }

  /** Storage works again: a signed event says for how long it did not and what was kept. */
  private storageRecovered(ep: StorageEpisode): void {
    this.o.log.warn({ err: ep.error, failed_ms: ep.until - ep.since }, "Outbox storage works again.");
    this.record({
      class: "system",
      severity: 4,
      ocsf: {
        class_uid: OcsfClass.ApplicationLifecycle,
        activity_id: 99,
        message: `Outbox storage failed for ${Math.round((ep.until - ep.since) / 1000)} s (${ep.error}); events were kept in memory meanwhile${this.counters.dropped ? `, ${this.counters.dropped} dropped so far (see the loss records)` : ""}`,
        unmapped: { error_type: "storage_failed", stage: "recording", storage: { error: ep.error, since: ep.since, until: ep.until, failures: ep.failures, dropped_total: this.counters.dropped } },
      },
    });
  }

  /**
   * While the store cannot commit, memory is bounded at 4x max_pending drafts: past it, the
   * lowest classes go first (oldest first within a class, the rest keeping their order) down to
   * 3x, so critical events are the last kept; each shed draft is counted for the loss record.
   * The boot event is never shed.
   */
  private shedIfOverfull(): void {
    const limit = this.o.maxPending * 4;
    if (this.pending.length <= limit) return;
    let excess = this.pending.length - this.o.maxPending * 3;
    const perRank = new Array<number>(EVENT_CLASSES.length).fill(0);
    for (const p of this.pending) perRank[CLASS_RANK[p.draft.class]]!++;
    const quota = perRank.map((n) => {
      const take = Math.min(n, Math.max(0, excess));
      excess -= take;
      return take;
    });
    this.pending = this.pending.filter((p) => {
      const r = CLASS_RANK[p.draft.class];
      if (p.keep || quota[r]! <= 0) return true;
      quota[r]!--;
      this.dropped.set(p.draft.class, (this.dropped.get(p.draft.class) ?? 0) + 1);
      this.counters.dropped++;
      return false;
    });
  }

  /**
   * Builds, signs and commits drafts as one transaction, with the evictions that make room for
   * them: the first drafts, up to the outbox's `maxCommitBytes` (at least one; the rest wait for
   * the next commit), so that one transaction fits the WAL's share of `buffer.max_bytes`. Evictions are added to `lossPending` in the same transaction; with `emitLoss` the loss
   * records naming everything pending are committed instead (one per class, see `lossTick`).
   */
  private commitDrafts(drafts: readonly EventDraft[], emitLoss = false, signingKey?: string): Envelope[] {
    const saved = { seq: this.seq, prev: this.prev };
    try {
      this.signer.begin();
      const prepared: Prepared[] = [];
      const maxEvent = this.maxEventBytes;
      const add = (d: EventDraft) => {
        let p: Prepared;
        try {
          p = this.build(d);
          const chars = p.head.length + p.mid.length + p.tail.length;
          if (chars > maxEvent / 3 && Buffer.byteLength(p.head) + Buffer.byteLength(p.mid) + Buffer.byteLength(p.tail) > maxEvent) {
            // Over the size bound of one event: built again with its largest values removed.
            this.seq = p.u.seq - 1;
            this.prev = p.u.prev;
            p = this.build(this.fit(d, maxEvent));
          }
        } catch (e) {
          // A body JSON cannot carry (NaN, a function, a cycle...): recorded as such, never dropped.
          this.counters.invalid++;
          p = this.build(invalidDraft(`its OCSF body cannot be serialized (${(e as Error).message})`));
        }
        prepared.push(p);
        this.signer.push(p.hashBytes);
      };
      const limit = this.o.outbox.maxCommitBytes;
      let incoming = 0;
      for (const d of drafts) {
        if (prepared.length && incoming >= limit) break;
        add(d);
        const p = prepared[prepared.length - 1]!;
        incoming += p.head.length + p.mid.length + p.tail.length + 200;
      }
      const inFlight = this.o.inFlight?.() ?? new Set<number>();
      const sentThrough = this.o.sentThrough?.() ?? 0;
      // More to evict than one transaction can delete within the WAL's share: evictions commit
      // alone first (with the loss list, at the chain head committed last), as many as it takes.
      for (let i = 0; i < MAX_EVICTION_ROUNDS && this.o.outbox.overBudget(incoming); i++) {
        const alone = this.o.outbox.planEviction(incoming, inFlight, true, this.lossPending, sentThrough);
        if (!alone) break;
        const merged = mergeLoss(this.lossPending, alone.summary);
        this.o.outbox.commit([], { boot: this.boot, seq: saved.seq, hash: saved.prev }, alone.ids, merged);
        this.lossPending = merged;
        this.noteEviction(alone);
      }
      const plan = this.o.outbox.planEviction(incoming, inFlight, false, this.lossPending, sentThrough);
      const pending = plan ? mergeLoss(this.lossPending, plan.summary) : this.lossPending;
      const emit = emitLoss && pending.length > 0;
      if (emit) for (const d of lossDrafts(pending, "buffer_full")) add(d);
      const sigs = this.signer.finish();
      const built = prepared.map((p, i) => finishEnvelope(p, sigs[i]!));
      const ids = this.o.outbox.commit(built, { boot: this.boot, seq: this.seq, hash: this.prev }, plan?.ids, emit ? [] : plan ? pending : undefined, signingKey);
      this.lossPending = emit ? [] : pending;
      if (plan) this.noteEviction(plan);
      this.counters.committed += built.length;
      const envs = built.map((b) => b.env);
      for (const fn of this.listeners) fn(envs, ids);
      return envs;
    } catch (e) {
      this.seq = saved.seq;
      this.prev = saved.prev;
      this.signer.finish(); // ends the batch cleanly; its signatures are not used
      throw e;
    }
  }

  /**
   * The largest envelope one event may take: `MAX_EVENT_BYTES`, and never more than one commit
   * may write within the WAL's share of `buffer.max_bytes` (16 KiB at the smallest budget).
   */
  get maxEventBytes(): number {
    return Math.min(MAX_EVENT_BYTES, this.o.outbox.maxCommitBytes);
  }

  /** An event over the size bound, with its largest values removed; counted, logged at most once a minute. */
  private fit(d: EventDraft, limit: number): EventDraft {
    const draft = fitDraft(d, limit);
    this.counters.truncated++;
    const now = this.now();
    if (now - this.truncatedLoggedAt >= 60_000) {
      this.truncatedLoggedAt = now;
      const note = (draft.ocsf.unmapped as { truncated?: { original_bytes: number; removed: string[] } } | undefined)?.truncated;
      this.o.log.warn(
        { class: d.class, class_uid: d.ocsf.class_uid, original_bytes: note?.original_bytes, removed: note?.removed, truncated_total: this.counters.truncated },
        `An event was larger than one event may be (${limit} bytes); recorded with its largest values removed (unmapped.truncated names them).`,
      );
    }
    return draft;
  }

  /** Hashes the next envelope and advances the chain (rolled back by the caller on failure). */
  private build(d: EventDraft): Prepared {
    const time = d.time ?? this.now();
    const u: UnsignedEnvelope = {
      v: 1,
      device: this.o.device,
      boot: this.boot,
      seq: this.seq + 1,
      time,
      mono: Math.round((performance.now() - this.bootStart) * 1000),
      class: d.class,
      severity: d.severity,
      ocsf: shapeOcsf(d.ocsf, d.severity, time, this.o.version),
      prev: this.prev,
    };
    const p = prepareEnvelope(u);
    this.seq = u.seq;
    this.prev = p.hash;
    return p;
  }

  /** Counts an eviction; the first of an episode warns once and starts the loss record ticks. */
  private noteEviction({ ids, summary, sent }: { ids: readonly number[]; summary: readonly EvictedRange[]; sent: number }): void {
    const n = ids.length;
    this.counters.evicted += n;
    this.counters.evicted_sent += sent;
    if (!this.episode) {
      const every = this.o.lossIntervalMs ?? LOSS_INTERVAL_MS;
      const timer = setInterval(() => this.lossTick(), every);
      timer.unref();
      this.episode = { since: this.now(), evicted: new Map(), sent: 0, sinceTick: 0, timer };
      this.o.log.warn(
        { budget_bytes: this.o.outbox.maxBytes, classes: summary.map((s) => s.class) },
        `Outbox full (buffer.max_bytes): evicting the oldest events of the lowest classes; while it lasts, one loss record per class every ${every / 1000} s names them.`,
      );
    }
    const e = this.episode;
    e.sinceTick += n;
    e.sent += sent;
    for (const s of summary) for (const [c, k] of Object.entries(s.counts ?? { [s.class]: s.count }) as [EventClass, number][]) e.evicted.set(c, (e.evicted.get(c) ?? 0) + k);
  }

  /**
   * Once per interval of an episode: commits the loss records naming what was evicted since the
   * last ones; an interval without evictions ends the episode.
   */
  private lossTick(): void {
    const e = this.episode;
    if (!e || this.closed) return;
    if (!this.commitLoss()) return;
    if (e.sinceTick > 0) {
      e.sinceTick = 0;
      return;
    }
    clearInterval(e.timer);
    this.episode = undefined;
    const evicted = [...e.evicted].map(([c, k]) => `${c}:${k}`);
    const total = [...e.evicted.values()].reduce((a, b) => a + b, 0);
    this.o.log.info(
      { evicted, evicted_sent: e.sent, seconds: Math.round((this.now() - e.since) / 1000) },
      `Outbox no longer full: ${evictedPhrase(total, e.sent)}; the loss records name every one.`,
    );
  }

  /**
   * Commits what is pending and the loss records naming every eviction not named yet, now: the
   * upstream connection came up. The SOC acknowledges only up to the first position it has
   * neither received nor seen named; were the backlog sent before the interval's loss records,
   * it would hold rows it cannot acknowledge, and the next eviction would take them (oldest
   * first) and name as lost events the SOC received. Committed before anything is sent, the loss
   * records evict only rows that never left the gateway.
   */
  nameEvictions(): void {
    if (this.closed || this.health.failing) return;
    this.flush();
    this.commitLoss();
  }

  /** Commits the loss records for everything pending, if any; false when storage refused. */
  private commitLoss(): boolean {
    if (!this.lossPending.length || this.health.failing) return true;
    try {
      this.commitDrafts([], true);
      return true;
    } catch (err) {
      this.counters.commit_errors++;
      this.lastError = describeError(err);
      this.o.log.error({ err: this.lastError }, "Could not commit the loss records; retrying at the next interval.");
      return false;
    }
  }

  /** Records a row the outbox found corrupt, as a loss record naming its position. */
  reportQuarantined(row: { boot: number; seq: number; rank: number }, reason: string): void {
    const cls = EVENT_CLASSES[row.rank] ?? "system";
    for (const d of lossDrafts([{ class: cls, count: 1, ranges: [[row.boot, row.seq, row.seq]] }], "corrupt_row", reason)) this.record(d);
  }

  /** Flushes, then commits a durable shutdown event (after the loss records still pending). */
  /**
   * Records the shutdown event and notes in the outbox that this run stopped there (`crashed`:
   * it is ending on an error it did not handle, and says so at severity 4).
   */
  close(reason: string, crashed = false): void {
    if (this.closed) return;
    this.flush();
    if (this.episode) clearInterval(this.episode.timer);
    this.episode = undefined;
    try {
      if (this.lossPending.length) this.commitDrafts([], true);
      this.commitDrafts([
        {
          class: "system",
          severity: crashed ? 4 : 1,
          ocsf: { class_uid: OcsfClass.ApplicationLifecycle, activity_id: 4, message: crashed ? `Gatewarden crashed (${reason})` : `Gatewarden stopping (${reason})`, app: { name: "Gatewarden", version: this.o.version }, unmapped: { stop: { reason, ...(crashed ? { crashed: true } : {}) } } },
        },
      ]);
    } catch (e) {
      this.o.log.error({ err: describeError(e) }, "Could not record the shutdown event.");
    }
    try {
      // Only a committed shutdown event (the head) marks a stop.
      const head = this.o.outbox.head();
      if (head?.boot === this.boot && head.seq === this.seq) this.o.outbox.markStopped(this.boot, this.seq, crashed ? "crashed" : "stopped", reason);
    } catch (e) {
      this.o.log.warn({ err: describeError(e) }, "Could not note the stop in the outbox: the next start will take this run for one that ended without stopping.");
    }
    this.closed = true;
    this.signer.close();
  }

  pendingCount(): number {
    return this.pending.length;
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }
}

function draftProblem(d: EventDraft): string | undefined {
  if (typeof d !== "object" || d === null) return "draft is not an object";
  if (!(d.class in CLASS_RANK)) return `unknown class ${String(d.class)}`;
  if (!Number.isInteger(d.severity) || d.severity < 0 || d.severity > 6) return `severity ${String(d.severity)} is not an OCSF severity_id`;
  const o = d.ocsf;
  if (typeof o !== "object" || o === null) return "ocsf body missing";
  if (!Number.isInteger(o.class_uid) || o.class_uid <= 0) return "ocsf.class_uid missing";
  if (!Number.isInteger(o.activity_id)) return "ocsf.activity_id missing";
  if (typeof o.message !== "string") return "ocsf.message missing";
  if (d.time !== undefined && !Number.isFinite(d.time)) return "time is not a number";
  return undefined; // JSON-safety is checked when the body is canonicalized (build)
}

function invalidDraft(problem: string): EventDraft {
  return {
    class: "system",
    severity: 3,
    ocsf: { class_uid: OcsfClass.ApplicationLifecycle, activity_id: 99, message: `A component produced a malformed event: ${problem}`, unmapped: { error_code: "EVENT_INVALID", stage: "processing" } },
  };
}

/**
 * "N evicted (M of them had been sent; the SOC may hold them)": what the engineer is told of an
 * eviction, in logs and `gatewarden status`.
 */
export function evictedPhrase(evicted: number, sent: number): string {
  return `${evicted} evicted${sent ? ` (${sent} of them had been sent; the SOC may hold them)` : ""}`;
}

/**
 * Loss records: signed `system` findings naming class, count and exact sequence ranges; of
 * them, `sent_unacknowledged` (count, ranges) names those that had been sent and not
 * acknowledged when evicted (the SOC may hold them; `count` still counts every one).
 */
export function lossDrafts(summary: readonly EvictedRange[], reason: string, detail?: string): EventDraft[] {
  const out: EventDraft[] = [];
  for (const s of summary) {
    for (let i = 0; i < s.ranges.length; i += MAX_RANGES_PER_LOSS) {
      const ranges = s.ranges.slice(i, i + MAX_RANGES_PER_LOSS);
      const count = rangeCount(ranges);
      const sent = s.sent?.length ? intersectRanges(s.sent, ranges) : [];
      const sentCount = rangeCount(sent);
      out.push({
        class: "system",
        severity: s.class === "finding" || s.class === "system" ? 4 : 3,
        ocsf: {
          class_uid: OcsfClass.DetectionFinding,
          activity_id: 1,
          message: sentCount
            ? `${count} ${s.class} event(s) evicted from the outbox (${reason}${detail ? `: ${detail}` : ""}); ${sentCount} of them had been sent (the SOC may hold them)`
            : `${count} ${s.class} event(s) lost from the outbox (${reason}${detail ? `: ${detail}` : ""})`,
          finding_info: { uid: `loss-${reason}`, title: "Events lost before delivery", types: ["Event Loss"] },
          unmapped: { loss: { reason, class: s.class, count, ranges, ...(s.counts && i === 0 ? { counts: s.counts } : {}), ...(sentCount ? { sent_unacknowledged: { count: sentCount, ranges: sent } } : {}) } },
        },
      });
    }
  }
  return out;
}

function droppedDraft(dropped: Map<EventClass, number>): EventDraft {
  const counts = Object.fromEntries(dropped);
  const total = [...dropped.values()].reduce((a, b) => a + b, 0);
  return {
    class: "system",
    severity: 4,
    ocsf: {
      class_uid: OcsfClass.DetectionFinding,
      activity_id: 1,
      message: `${total} event(s) dropped before they were recorded: the outbox could not commit`,
      finding_info: { uid: "loss-store_unavailable", title: "Events lost before recording", types: ["Event Loss"] },
      unmapped: { loss: { reason: "store_unavailable", counts } },
    },
  };
}

/** How the previous run ended, for the boot event's message. */
function endText(end: PreviousEnd): string {
  switch (end.how) {
    case "stopped":
      return `stopped: ${end.reason}`;
    case "crashed":
      return `crashed: ${end.reason}`;
    case "unclean":
      return "without stopping: killed, hung past its watchdog, crashed, or the power was cut";
    case "unknown":
      return "how it ended is not known";
  }
}
