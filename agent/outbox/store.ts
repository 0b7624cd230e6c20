import Database from "better-sqlite3";
import { performance } from "node:perf_hooks";
import { closeSync, fsyncSync, openSync, rmSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { DaemonError } from "../core/errors";
import type { Envelope } from "../core/envelope";
import { HeadCopy } from "./head-copy";
import { isBusy, lockPath } from "./lock";
import { CLASS_RANK, DURABLE_RANK, EVENT_CLASSES, type EventClass } from "../core/events";
import { WalIndex } from "./wal-index";
import { budgetShares, framesFor, type BudgetShares, type WriteShape } from "./budget";
import { extendRanges, isRange, mergeRanges, rangeCount } from "../core/seq-ranges";
import { giveToDirOwner, makeDirs } from "../core/dirs";

/**
 * The SQLite outbox: the store of record for every event until the SOC (upstream.ack: soc) or
 * the broker (upstream.ack: broker) acknowledged it.
 *
 * - WAL mode, one writer (this process). Batches commit in one transaction. A batch holding an
 *   `audit`, `finding` or `system` event commits with synchronous=FULL (the WAL is fsynced
 *   before the commit returns: durable across power loss where storage honours fsync);
 *   telemetry/heartbeat batches commit with NORMAL (durable across a killed process; a power
 *   cut may lose the last of them but always leaves a gap-free prefix).
 * - Bounded by `max_bytes`, the database, WAL and -shm files together (see budget.ts): each write
 *   reserves the WAL frames it may append first (`reserve`), the database has a page limit.
 * - SD-card wear: a new outbox has 1 KiB pages and no index besides the ids; delivered rows are
 *   deleted in the next commit's transaction (or after 60 s), not in one of their own, all at
 *   once when they are every row there is; `writes()` counts what was written.
 * - The chain head (boot, seq, hash) is the newest row's, committed with it; the `chain` table
 *   keeps it when a transaction deletes rows without adding any (see `head`).
 * - Only durable rows leave the gateway: `syncForSend` fsyncs the WAL before rows committed
 *   with NORMAL are read for sending, so the SOC never holds an event that a power cut then
 *   erases from the device (the next boot event would contradict it: a fork).
 */
export interface Row {
  id: number;
  boot: number;
  seq: number;
  rank: number;
  time: number;
  bytes: number;
  body: string;
}

export type RawRow = Omit<Row, "body"> & { body: Buffer };

export interface ChainHead {
  boot: number;
  seq: number;
  hash: string;
}

export interface EvictedRange {
  class: EventClass;
  count: number;
  /** [boot, first seq, last seq], merged where contiguous within the evicted set. */
  ranges: [number, number, number][];
  /**
   * Per-class counts when the ranges span several classes: evicting unsent loss records
   * folds what they named into the new record (`class` is then the highest class included).
   */
  counts?: Partial<Record<EventClass, number>>;
  /**
   * Of these positions, those the forwarder had published at least once and that were neither in
   * flight nor acknowledged when evicted: the SOC may hold them. Merged like `ranges`.
   */
  sent?: [number, number, number][];
}

export interface OutboxStats {
  depth: number;
  bytes: number;
  parked: number;
  quarantined: number;
  oldest_time: number | null;
  file_bytes: number;
  budget_bytes: number;
}

/** The fingerprint of the key that signs from the next event on (a rotation announced). */
const SET_SIGNING_KEY = "INSERT INTO signing_key (id, fingerprint) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET fingerprint = excluded.fingerprint";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS events (
  -- Ids are the outbox's own (idSeq: one more than any id this file has used), never reused
  -- while a run lasts, so the forwarder's cursor (the last id sent on this connection) always
  -- precedes every newer row. Not AUTOINCREMENT: its sequence row was one more page written per
  -- commit (an outbox created before keeps it; explicit ids work with both).
  id INTEGER PRIMARY KEY,
  boot INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  rank INTEGER NOT NULL,
  time INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  parked INTEGER NOT NULL DEFAULT 0,
  body TEXT NOT NULL
);
-- No index on (rank, id): it was one more page written per commit (SD-card wear); eviction
-- scans by id from where it last found a row of the class (see planEviction).
DROP INDEX IF EXISTS events_rank;
CREATE TABLE IF NOT EXISTS chain (id INTEGER PRIMARY KEY CHECK (id = 1), boot INTEGER NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (id INTEGER PRIMARY KEY, boot INTEGER, seq INTEGER, rank INTEGER, reason TEXT NOT NULL, at INTEGER NOT NULL, body BLOB);
CREATE TABLE IF NOT EXISTS parked (id INTEGER PRIMARY KEY, reason TEXT NOT NULL, at INTEGER NOT NULL, retries INTEGER NOT NULL DEFAULT 0);
-- Evictions not yet named by a committed loss record (one row per class), written in the
-- eviction's own transaction: a crash between an eviction and its loss record forgets nothing.
-- sent: the evicted positions that had been sent (see EvictedRange.sent).
CREATE TABLE IF NOT EXISTS loss_pending (class TEXT PRIMARY KEY, ranges TEXT NOT NULL, counts TEXT, sent TEXT);
-- The key the chain is signed with since the last rotation announcement, written in the
-- announcement's own transaction (agent/keys/rotation.ts): a restart knows whether it committed.
CREATE TABLE IF NOT EXISTS signing_key (id INTEGER PRIMARY KEY CHECK (id = 1), fingerprint TEXT NOT NULL);
-- Where the last run that stopped (rather than being killed, crashing or losing power) put its
-- shutdown event: the next start tells the two apart (see Outbox.previousEnd).
CREATE TABLE IF NOT EXISTS stopped (id INTEGER PRIMARY KEY CHECK (id = 1), boot INTEGER NOT NULL, seq INTEGER NOT NULL, how TEXT NOT NULL, reason TEXT NOT NULL);
`;

/** How the run that wrote the chain head ended (see Outbox.previousEnd). */
export type PreviousEnd = { how: "stopped" | "crashed"; reason: string } | { how: "unclean" | "unknown" };

/**
 * The rank stored for loss records: above every class, so a loss record is evicted only when
 * nothing else is left (and then what it named is folded into the next one).
 */
export const LOSS_RANK = EVENT_CLASSES.length;

/** SQLite page size of a new outbox (bytes). */
export const PAGE_SIZE = 1024;

export class Outbox {
  db!: Database.Database;
  /** The budget's shares for this file's page size (see budget.ts). */
  private shares!: BudgetShares;
  /** After a checkpoint that restarted it, the WAL's next transaction writes from its start. */
  private walRestarts = false;
  private pageSize = 4096;
  private sync: "NORMAL" | "FULL" = "NORMAL";
  private logicalBytes = 0;
  /** Rows up to this id survive a power cut (committed FULL, or the WAL fsynced since). */
  private durableId = 0;
  private lastId = 0;
  private walFd: number | undefined;
  /**
   * Acknowledged rows not deleted yet (id set, at most MAX_DEFERRED_ACKS): their delete rides
   * on the next commit's transaction, so a delivery costs no WAL pages of its own (SD-card
   * wear at low rates), or is done by a timer after ACK_DELAY_MS. Reads never return them.
   */
  private acked = new Set<number>();
  private ackTimer: NodeJS.Timeout | undefined;
  /** What this outbox wrote to storage (see `writes`). */
  private written = { wal_frames: 0, wal_bytes: 0, checkpoint_pages: 0, checkpoint_bytes: 0, commits: 0, checkpoints: 0 };
  private wal: WalIndex | undefined;
  private checkpointFrames = 0;
  private stmts!: ReturnType<Outbox["prepare"]>;
  /** The chain head's second copy beside the file (none for an in-memory outbox). */
  readonly headCopy: HeadCopy | undefined;

  /**
   * `waitMs`: how long to wait for another process holding the file to let go before
   * OUTBOX_LOCKED (0, the default: answer at once; the daemon's start waits, see open.ts).
   */
  constructor(
    readonly path: string,
    readonly maxBytes: number,
    waitMs = 0,
  ) {
    this.headCopy = path === ":memory:" ? undefined : new HeadCopy(`${path}.head`);
    this.headCopy?.note(HeadCopy.read(`${path}.head`));
    this.open(waitMs);
  }

  /** Opens (or, after its files were replaced under it, reopens) the database at `path`. */
  private open(waitMs = 0): void {
    const path = this.path;
    if (path !== ":memory:") makeDirs(dirname(path), "outbox directory");
    try {
      this.db = new Database(path, { timeout: waitMs });
      // Made by `sudo gatewarden ...` before the daemon ever ran: the service user's (SQLite gives its WAL the file's owner).
      if (path !== ":memory:") giveToDirOwner(path);
      // The outbox's connection owns the file for as long as it is open (exclusive locking, set
      // before the WAL is first used): SQLite then keeps the WAL index in memory and writes no
      // -shm file, whose pages were dirtied by every commit and written back again and again
      // (SD-card wear). No other connection or process can open the file meanwhile.
      if (path !== ":memory:") this.db.pragma("locking_mode = EXCLUSIVE");
      // Another program's database is refused before anything is changed in it: its tables are
      // read first (a read changes nothing), then the outbox's page size and WAL mode are set.
      const tables = new Set(this.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all());
      const foreign = foreignTable(this.db, tables);
      if (foreign) throw new Error(`it is a SQLite database but not a Gatewarden outbox (${foreign}); point buffer.path at the outbox, or at a new file`);
      // A new outbox takes 1 KiB pages (an existing one keeps its own): a commit writes every
      // page it touches whole, so a commit of one row (an audit record or a finding, each with
      // its fsync) appends one 1 KiB frame where 2 KiB pages appended 2 and 4 KiB pages 4, and a
      // 680 B row fills a 1 KiB page as well as two fill a 2 KiB one. Their deeper tree leaves
      // more rows under each interior page: salvage reads the leaf pages directly (page-scan.ts).
      this.db.pragma(`page_size = ${PAGE_SIZE}`);
      this.db.pragma("journal_mode = WAL");
      this.db.pragma("synchronous = NORMAL");
      this.db.pragma("foreign_keys = OFF");
      // An outbox written by a version before the `stopped` table cannot say how its last run ended.
      this.stopsTracked = tables.has("stopped") || !tables.has("events");
      this.db.exec(SCHEMA);
      // Held now: SQLite's usual wait for its own statements (none contend with an exclusive hold).
      this.db.pragma("busy_timeout = 5000");
    } catch (e) {
      if (this.db?.open) this.db.close();
      if (isBusy(e)) {
        // Whoever opens the outbox takes its lock first (lock.ts), which names the holder; a
        // holder found only here did not take it.
        throw new DaemonError("OUTBOX_LOCKED", `the outbox ${path} is held by another process, which does not name itself in ${lockPath(path)} (an older Gatewarden, a sqlite3 shell)`, { cause: e });
      }
      throw new DaemonError("OUTBOX_OPEN", `cannot open the outbox ${path}: ${(e as Error).message}`, { cause: e });
    }
    // An index file an earlier version left beside the WAL is not used (the index is in memory).
    try {
      if (path !== ":memory:") rmSync(`${path}-shm`, { force: true });
    } catch {
      /* a read-only directory: probeWrite says so */
    }
    try {
      this.setUp(path);
    } catch (e) {
      // A file that fails past the pragmas (damaged pages) must not stay open: the connection
      // holds it exclusively, and salvage reads it next.
      if (this.db.open) this.db.close();
      throw e;
    }
  }

  /** Reads what the outbox needs to know about the file just opened. */
  private setUp(path: string): void {
    this.sync = "NORMAL";
    this.pageSize = this.db.pragma("page_size", { simple: true }) as number;
    this.shares = budgetShares(this.maxBytes, this.pageSize);
    // Checkpoints are the outbox's own (see `afterWrite` and `reserve`): PASSIVE, when the WAL
    // holds half its share, counted; a restarted WAL is truncated back to that.
    this.db.pragma("wal_autocheckpoint = 0");
    this.checkpointFrames = Math.max(16, Math.floor(this.shares.walFrames / 2));
    this.db.pragma(`journal_size_limit = ${Math.floor(this.shares.walBytes / 2)}`);
    // The database file's share, enforced by SQLite (an existing larger file keeps its size).
    this.db.pragma(`max_page_count = ${this.shares.dbPages}`);
    // Every dirty page is written once, at commit (a spill would write pages twice: more wear,
    // and more frames than `framesFor` reserves).
    this.db.pragma("cache_spill = OFF");
    this.wal?.close();
    this.wal = path === ":memory:" ? undefined : new WalIndex(path);
    const h = this.wal?.header();
    this.walSeen = h ? { salt: h.salt, frames: h.frames } : { salt: -1, frames: 0 };
    this.lossSent = lossSentColumn(this.db);
    this.stmts = this.prepare();
    this.logicalBytes = (this.stmts.stats.get("[]") as { bytes: number }).bytes;
    // Rows found at open survived whatever ended the last run; opening them made them durable.
    this.durableId = this.lastId = (this.db.prepare("SELECT COALESCE(MAX(id), 0) FROM events").pluck().get() as number) ?? 0;
    this.idSeq = Math.max(this.lastId, usedIds(this.db));
    this.forgetWal(); // a reopen (watch.ts) has a new WAL
    this.rankFrom = [];
    // The last run may have left the `chain` table behind its newest row (see `head`).
    const table = this.stmts.head.get() as ChainHead | undefined;
    this.lastHead = this.head();
    this.headBehind = this.lastHead !== undefined && (table?.boot !== this.lastHead.boot || table.seq !== this.lastHead.seq);
  }

  /** Drops the descriptor `syncForSend` keeps on the WAL (watch.ts started a new WAL). */
  forgetWal(): void {
    if (this.walFd === undefined) return;
    try {
      closeSync(this.walFd);
    } catch {
      /* already gone */
    }
    this.walFd = undefined;
  }

  /**
   * Closes the connection and opens the file at `path` again (see watch.ts: after the file was
   * restored under the running daemon). Statements are prepared anew.
   */
  reopen(): void {
    if (this.db.open) this.db.close();
    // Deferred deletes name ids of the file that went away; a new file numbers its rows anew.
    this.acked.clear();
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    this.open();
  }

  private prepare() {
    return {
      insert: this.db.prepare("INSERT INTO events (boot, seq, rank, time, bytes, body) VALUES (?, ?, ?, ?, ?, ?)"),
      insertId: this.db.prepare("INSERT INTO events (id, boot, seq, rank, time, bytes, body) VALUES (?, ?, ?, ?, ?, ?, ?)"),
      head: this.db.prepare("SELECT boot, seq, hash FROM chain WHERE id = 1"),
      lastRow: this.db.prepare("SELECT boot, seq, body FROM events ORDER BY id DESC LIMIT 1"),
      setHead: this.db.prepare("INSERT INTO chain (id, boot, seq, hash) VALUES (1, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET boot = excluded.boot, seq = excluded.seq, hash = excluded.hash"),
      readAfter: this.db.prepare("SELECT id, boot, seq, rank, time, bytes, body FROM events WHERE id > ? AND parked = 0 ORDER BY id LIMIT ?"),
      rowAtOrAfter: this.db.prepare("SELECT id, boot, seq FROM events WHERE id >= ? ORDER BY id LIMIT 1"),
      lastRowId: this.db.prepare("SELECT MAX(id) FROM events").pluck(),
      firstIds: this.db.prepare("SELECT id FROM events ORDER BY id LIMIT ?").pluck(),
      deleteAll: this.db.prepare("DELETE FROM events"),
      idsThrough: this.db.prepare("SELECT id FROM events WHERE id <= ? AND boot = ?").pluck(),
      firstSendable: this.db.prepare("SELECT id FROM events WHERE parked = 0 ORDER BY id LIMIT ?").pluck(),
      readRawAfter: this.db.prepare("SELECT id, boot, seq, rank, time, bytes, CAST(body AS BLOB) AS body FROM events WHERE id > ? AND parked = 0 ORDER BY id LIMIT ?"),
      del: this.db.prepare("DELETE FROM events WHERE id = ? RETURNING bytes"),
      delQuiet: this.db.prepare("DELETE FROM events WHERE id = ?"),
      delRange: this.db.prepare("DELETE FROM events WHERE id >= ? AND id <= ?"),
      byRank: this.db.prepare("SELECT id, boot, seq, rank, bytes FROM events WHERE id > ? AND rank = ? ORDER BY id"),
      bodyOf: this.db.prepare("SELECT body FROM events WHERE id = ?").pluck(),
      bytesOf: this.db.prepare("SELECT bytes FROM events WHERE id = ?").pluck(),
      pageCount: this.db.prepare("PRAGMA page_count"),
      freelist: this.db.prepare("PRAGMA freelist_count"),
      // Without the delivered rows whose delete waits (their ids, a JSON array).
      stats: this.db.prepare("SELECT COUNT(*) AS depth, COALESCE(SUM(bytes), 0) AS bytes, MIN(time) AS oldest, COALESCE(SUM(parked), 0) AS parked FROM events WHERE id NOT IN (SELECT value FROM json_each(?))"),
      park: this.db.prepare("UPDATE events SET parked = 1 WHERE id = ?"),
      parkNote: this.db.prepare("INSERT INTO parked (id, reason, at) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET reason = excluded.reason, at = excluded.at, retries = retries + 1"),
      wasParked: this.db.prepare("SELECT 1 FROM parked WHERE id = ?").pluck(),
      forgetDelivered: this.db.prepare("DELETE FROM parked WHERE id NOT IN (SELECT id FROM events)"),
      parkedIds: this.db.prepare("SELECT id FROM events WHERE parked = 1 ORDER BY id").pluck(),
      unpark: this.db.prepare("UPDATE events SET parked = 0 WHERE id = ?"),
      parkedRows: this.db.prepare("SELECT e.id, e.boot, e.seq, e.rank, e.time, e.bytes, e.body FROM events e WHERE e.parked = 1 ORDER BY e.id LIMIT ?"),
      quarantine: this.db.prepare("INSERT INTO quarantine (id, boot, seq, rank, reason, at, body) SELECT id, boot, seq, rank, ?, ?, CAST(body AS BLOB) FROM events WHERE id = ?"),
      quarantineCount: this.db.prepare("SELECT COUNT(*) AS n FROM quarantine"),
      lossPending: this.db.prepare(`SELECT class, ranges, counts, ${this.lossSent ? "sent" : "NULL AS sent"} FROM loss_pending`),
      lossClear: this.db.prepare("DELETE FROM loss_pending"),
      lossPut: this.db.prepare(this.lossSent ? "INSERT INTO loss_pending (class, ranges, counts, sent) VALUES (?, ?, ?, ?)" : "INSERT INTO loss_pending (class, ranges, counts) VALUES (?, ?, ?)"),
    };
  }

  /**
   * Makes every committed row durable before rows up to `id` are sent: fsyncs the WAL (through
   * a descriptor of its own; fsync is per file) when rows above the durable mark are asked for.
   * Returns whether it synced.
   */
  syncForSend(id: number): boolean {
    if (id <= this.durableId) return false;
    const upTo = this.lastId;
    // In memory there is nothing to make durable (the daemon says so at start).
    if (this.path === ":memory:") {
      this.durableId = upTo;
      return false;
    }
    const started = performance.now();
    this.walFd ??= openSync(`${this.path}-wal`, "r");
    fsyncSync(this.walFd);
    this.durableId = upTo;
    this.slowestCommitMs = Math.max(this.slowestCommitMs, performance.now() - started);
    return true;
  }

  /**
   * The chain head: the newest row's position and hash, or the `chain` table's when it is ahead
   * (the rows up to the head were delivered and deleted). A commit that adds rows does not write
   * the `chain` table (one page less per commit, SD-card wear): its newest row is the head, in
   * the same transaction. A transaction that deletes rows without adding any writes it first.
   */
  head(): ChainHead | undefined {
    const table = this.stmts.head.get() as ChainHead | undefined;
    const last = this.stmts.lastRow.get() as { boot: number; seq: number; body: string } | undefined;
    if (!last || (table && (table.boot > last.boot || (table.boot === last.boot && table.seq >= last.seq)))) return table;
    let hash: unknown;
    try {
      hash = (JSON.parse(last.body) as { hash?: unknown }).hash;
    } catch {
      /* a damaged body: the table's head (open's checks find the damage) */
    }
    return typeof hash === "string" ? { boot: last.boot, seq: last.seq, hash } : table;
  }

  /** The slowest commit or WAL fsync (ms) since `takeSlowestCommit` was last called. */
  private slowestCommitMs = 0;

  /** The slowest commit (ms) since the previous call (what held the event loop: see loop-stall.ts). */
  takeSlowestCommit(): number {
    const ms = this.slowestCommitMs;
    this.slowestCommitMs = 0;
    return ms;
  }

  /** Whether this file recorded its runs' stops from its start (it has a `stopped` table, or is new; not after a salvage: the note stayed in the damaged file). */
  private stopsTracked = true;

  /**
   * Notes that the run stopped (or recorded its own crash) with its shutdown event at
   * `boot`:`seq`, after that event's commit. A run that ends otherwise leaves the note of an
   * earlier run, or none.
   */
  markStopped(boot: number, seq: number, how: "stopped" | "crashed", reason: string): void {
    this.db.prepare("INSERT INTO stopped (id, boot, seq, how, reason) VALUES (1, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET boot = excluded.boot, seq = excluded.seq, how = excluded.how, reason = excluded.reason").run(boot, seq, how, reason);
  }

  /**
   * How the run that ended at `head` ended: stopped, or crashed and said so (its shutdown event
   * is the head), or unclean (killed, hung past the watchdog, a crash it could not record, or
   * a power cut before its stop was durable); unknown for an outbox an older version wrote.
   */
  previousEnd(head: ChainHead): PreviousEnd {
    const s = this.db.prepare("SELECT boot, seq, how, reason FROM stopped WHERE id = 1").get() as { boot: number; seq: number; how: string; reason: string } | undefined;
    if (s && s.boot === head.boot && s.seq === head.seq) return { how: s.how === "crashed" ? "crashed" : "stopped", reason: s.reason };
    return this.stopsTracked || s ? { how: "unclean" } : { how: "unknown" };
  }

  /** Writes the chain head to the `chain` table when commits left it behind (before deletes). */
  private keepHead(): void {
    if (!this.headBehind || !this.lastHead) return;
    this.stmts.setHead.run(this.lastHead.boot, this.lastHead.seq, this.lastHead.hash);
    this.headBehind = false;
  }

  /** The head of the last commit, and whether the `chain` table lags it. */
  private lastHead: ChainHead | undefined;
  private headBehind = false;
  /** Whether `loss_pending` has its `sent` column (see lossSentColumn). */
  private lossSent = true;
  /** The highest row id this file has used (rows, quarantined and parked ones, AUTOINCREMENT's record). */
  private idSeq = 0;

  /** Pages in use (not the free list) times the page size: what the rows really occupy. */
  usedBytes(): number {
    const pages = this.stmts.pageCount.pluck().get() as number;
    const free = this.stmts.freelist.pluck().get() as number;
    return (pages - free) * this.pageSize;
  }

  /** Evictions that no committed loss record names yet (see `commit`'s `lossPending`). */
  pendingLoss(): EvictedRange[] {
    const rows = this.stmts.lossPending.all() as { class: EventClass; ranges: string; counts: string | null; sent: string | null }[];
    return rows.map((r) => {
      const ranges = JSON.parse(r.ranges) as [number, number, number][];
      const e: EvictedRange = { class: r.class, count: rangeCount(ranges), ranges };
      if (r.counts) e.counts = JSON.parse(r.counts) as Partial<Record<EventClass, number>>;
      if (r.sent) e.sent = JSON.parse(r.sent) as [number, number, number][];
      return e;
    });
  }

  /**
   * Commits envelopes (already chained and signed) and the new chain head in one transaction,
   * after deleting `evictIds`. Durable (FULL) when any envelope is of a durable class.
   * `lossPending`, when given, replaces the evictions not yet named by a loss record;
   * `signingKey`, the fingerprint of the key that signs from the next event on (a rotation).
   */
  commit(envs: readonly { env: Envelope; body: string }[], head: ChainHead, evictIds: readonly number[] = [], lossPending?: readonly EvictedRange[], signingKey?: string): number[] {
    const started = performance.now();
    const durable = envs.some((e) => CLASS_RANK[e.env.class] >= DURABLE_RANK) || evictIds.length > 0 || lossPending !== undefined || signingKey !== undefined;
    const acked = [...this.acked];
    let insertBytes = 0;
    for (const { body } of envs) insertBytes += Buffer.byteLength(body);
    const otherBytes = 200 + lossBytes(lossPending ?? []);
    const touched = [...acked, ...evictIds];
    this.reserve({ insertRows: envs.length, insertBytes, touchRows: touched.length, touchBytes: touched.length * this.rowBytes(), runs: runsOf(touched), otherBytes });
    this.setSync(durable ? "FULL" : "NORMAL");
    const ids: number[] = [];
    const emptied = this.onlyDelivered(acked);
    this.db.transaction(() => {
      // Every row was delivered (a quiet gateway): emptied at once, which frees the table's pages
      // without rewriting the leaves on the way (SQLite's truncate), two pages less than deletes.
      if (emptied) {
        this.stmts.deleteAll.run();
        this.logicalBytes = 0;
      } else for (const id of acked) this.deleteOne(id);
      for (const id of evictIds) this.deleteOne(id);
      for (const { env, body } of envs) {
        const bytes = Buffer.byteLength(body);
        const rank = isLossRecord(env) ? LOSS_RANK : CLASS_RANK[env.class];
        const id = this.idSeq + ids.length + 1;
        this.stmts.insertId.run(id, env.boot, env.seq, rank, env.time, bytes, body);
        ids.push(id);
        this.logicalBytes += bytes;
      }
      // Rows added: the newest is the head (see `head`); none: the table says where it is.
      if (!envs.length) this.stmts.setHead.run(head.boot, head.seq, head.hash);
      if (lossPending) {
        this.stmts.lossClear.run();
        for (const e of lossPending) {
          const args = [e.class, JSON.stringify(e.ranges), e.counts ? JSON.stringify(e.counts) : null];
          this.stmts.lossPut.run(...args, ...(this.lossSent ? [e.sent?.length ? JSON.stringify(e.sent) : null] : []));
        }
      }
      if (signingKey) this.db.prepare(SET_SIGNING_KEY).run(signingKey);
    })();
    for (const id of acked) this.acked.delete(id);
    // The timer deletes what no commit took within ACK_DELAY_MS of its delivery: re-armed by the next.
    if (!this.acked.size && this.ackTimer) {
      clearTimeout(this.ackTimer);
      this.ackTimer = undefined;
    }
    this.inserted.rows += ids.length;
    this.inserted.bytes += insertBytes;
    this.idSeq += ids.length;
    this.lastHead = head;
    this.headBehind = envs.length > 0;
    if (ids.length) this.lastId = ids[ids.length - 1]!;
    if (durable) this.durableId = this.lastId;
    this.headCopy?.write(head);
    this.afterWrite();
    this.slowestCommitMs = Math.max(this.slowestCommitMs, performance.now() - started);
    return ids;
  }

  /** The fingerprint the last committed rotation announcement named (undefined: none). */
  signingKey(): string | undefined {
    return (this.db.prepare("SELECT fingerprint FROM signing_key WHERE id = 1").pluck().get() as string | undefined) ?? undefined;
  }

  /**
   * Counts the WAL frames the last write transaction appended and checkpoints (PASSIVE) when
   * the WAL holds `checkpointFrames` not yet copied back. Never throws for the accounting.
   */
  private afterWrite(): void {
    this.written.commits++;
    const h = this.wal?.header();
    if (!h) return;
    const appended = h.salt !== this.walSeen.salt ? h.frames : Math.max(0, h.frames - this.walSeen.frames);
    this.walSeen = { salt: h.salt, frames: h.frames };
    // A transaction that appended more than it reserved: counted, and later estimates scaled up.
    if (appended > this.reserved) {
      this.budgetMisses++;
      if (this.reserved > 0) this.estimateScale = Math.max(this.estimateScale, Math.ceil((appended / this.reserved) * 10) / 10);
    }
    this.reserved = 0;
    this.walRestarts = false;
    this.written.wal_frames += appended;
    this.written.wal_bytes += appended * (this.pageSize + 24);
    if (h.frames - h.backfilled >= this.checkpointFrames) this.checkpoint("PASSIVE");
  }

  /**
   * Makes room in the WAL for one write transaction of `shape` before it runs (see budget.ts):
   * when the frames it may append do not fit behind those already there, checkpoints and
   * restarts the WAL. Throws OUTBOX_FULL, with nothing written, when a read in progress keeps
   * the WAL from restarting, or when the transaction alone is larger than the WAL's share.
   */
  private reserve(shape: WriteShape): void {
    const need = Math.ceil(framesFor(shape, this.pageSize) * this.estimateScale);
    this.reserved = need;
    if (!this.wal) return; // in memory: no files
    const h = this.wal.header();
    const used = this.walRestarts ? 0 : (h?.frames ?? this.shares.walFrames);
    if (used + need <= this.shares.walFrames) return;
    if (need > this.shares.walFrames) {
      throw new DaemonError("OUTBOX_FULL", `one write to the outbox ${this.path} may append ${need} WAL frames, more than the WAL's share of buffer.max_bytes (${this.shares.walFrames}); raise buffer.max_bytes`);
    }
    this.restartWal();
    if (!this.walRestarts) {
      throw new DaemonError(
        "OUTBOX_FULL",
        `the outbox's WAL (${this.path}-wal) is at its share of buffer.max_bytes and cannot be restarted while a read of the outbox is in progress (the daemon holds the file alone: its own read); writes wait until that read ends`,
      );
    }
  }

  /** Checkpoints everything and restarts the WAL, without waiting for a read in progress. */
  private restartWal(): void {
    const timeout = this.db.pragma("busy_timeout", { simple: true }) as number;
    this.db.pragma("busy_timeout = 0");
    try {
      this.checkpoint("RESTART");
    } finally {
      this.db.pragma(`busy_timeout = ${timeout}`);
    }
  }

  /**
   * How many bytes of rows one commit may take: what a third of the WAL's share can hold, leaving
   * the rest for the evictions that make room for them (see `planEviction`).
   */
  get maxCommitBytes(): number {
    const row = this.rowBytes();
    let bytes = 16 * 1024 ** 2;
    while (bytes > row && framesFor({ insertRows: Math.ceil(bytes / row), insertBytes: bytes, otherBytes: 1024 }, this.pageSize) * this.estimateScale > this.shares.walFrames / 3) bytes = Math.floor(bytes / 2);
    return bytes;
  }

  /** Whether `ids` (delivered rows) are all the rows there are (bounded: reads at most ids + 1 ids). */
  private onlyDelivered(ids: readonly number[]): boolean {
    if (!ids.length) return false;
    const set = new Set(ids);
    const rows = this.stmts.firstIds.all(ids.length + 1) as number[];
    return rows.length <= ids.length && rows.every((id) => set.has(id));
  }

  /** The mean size of the rows this outbox stored, for estimates (1 KiB before any). */
  private rowBytes(): number {
    return this.inserted.rows ? Math.ceil(this.inserted.bytes / this.inserted.rows) : 1024;
  }

  /** Frames the current write reserved (see `reserve`), and how many writes appended more. */
  private reserved = 0;
  /** Per rank, an id below which no row of that rank is left (see `planEviction`). */
  private rankFrom: number[] = [];
  private estimateScale = 1;
  budgetMisses = 0;
  private inserted = { rows: 0, bytes: 0 };

  /**
   * What this outbox has written since it was opened: WAL frames (page + 24-byte header each)
   * and the distinct pages its checkpoints copied into the database file. `bytes` is their sum:
   * the outbox's share of SD-card wear (the kernel also writes file-system metadata).
   * `checkpoint_frames`: how many frames the WAL holds before the outbox checkpoints it.
   */
  writes(): { bytes: number; wal_bytes: number; checkpoint_bytes: number; commits: number; checkpoints: number; page_size: number; checkpoint_frames: number } {
    const w = this.written;
    return { bytes: w.wal_bytes + w.checkpoint_bytes, wal_bytes: w.wal_bytes, checkpoint_bytes: w.checkpoint_bytes, commits: w.commits, checkpoints: w.checkpoints, page_size: this.pageSize, checkpoint_frames: this.checkpointFrames };
  }

  private walSeen = { salt: -1, frames: 0 };

  /**
   * Deletes acknowledged rows whose delete was deferred (its own transaction). Before any read
   * that must not see them (stats, eviction, parking) and from the timer.
   */
  applyAcks(): void {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    if (!this.acked.size) return;
    const acked = [...this.acked];
    if (this.onlyDelivered(acked)) {
      this.reserve({ freedPages: this.stmts.pageCount.pluck().get() as number, otherBytes: 200 });
      this.setSync("NORMAL");
      this.db.transaction(() => {
        this.keepHead();
        this.stmts.deleteAll.run();
      })();
      this.logicalBytes = 0;
      this.acked.clear();
      this.afterWrite();
      return;
    }
    this.inChunks(acked, 0, (chunk) => {
      for (const id of chunk) this.deleteOne(id);
      return () => {
        for (const id of chunk) this.acked.delete(id);
      };
    });
  }

  /**
   * Deletes or updates rows in transactions of their own, as many in each as half the WAL's
   * share takes at the worst (no two ids consecutive; see `reserve`). `each` runs inside the
   * chunk's transaction and may return what to do once it committed. `otherPerRow`: bytes
   * written to the small tables per row.
   */
  private inChunks(ids: readonly number[], otherPerRow: number, each: (chunk: readonly number[]) => (() => void) | void): void {
    let per = 4096;
    const fits = (n: number) => framesFor({ touchRows: n, touchBytes: n * this.rowBytes(), runs: n, otherBytes: 200 + n * otherPerRow }, this.pageSize) * this.estimateScale <= this.shares.walFrames / 2;
    while (per > 1 && !fits(per)) per = Math.floor(per / 2);
    this.setSync("NORMAL");
    for (let i = 0; i < ids.length; i += per) {
      const chunk = ids.slice(i, i + per);
      this.reserve({ touchRows: chunk.length, touchBytes: chunk.length * this.rowBytes(), runs: runsOf(chunk), otherBytes: 200 + chunk.length * otherPerRow });
      const then = this.db.transaction(() => {
        this.keepHead();
        return each(chunk);
      })();
      if (then) then();
      this.afterWrite();
    }
  }

  /** Defers deleting delivered rows (see `acked`); past the bound, deletes them now. */
  private deferAcks(ids: Iterable<number>): void {
    for (const id of ids) this.acked.add(id);
    if (this.acked.size > MAX_DEFERRED_ACKS || this.path === ":memory:") {
      this.applyAcks();
      return;
    }
    this.ackTimer ??= setTimeout(() => {
      this.ackTimer = undefined;
      try {
        this.applyAcks();
      } catch {
        /* storage failing: the next commit or read retries */
      }
    }, ACK_DELAY_MS);
    this.ackTimer.unref?.();
  }

  /** Throws when the database cannot be written (a read-only file or filesystem); writes nothing. */
  probeWrite(): void {
    this.db.exec("BEGIN IMMEDIATE");
    try {
      this.db.prepare("INSERT INTO parked (id, reason, at) VALUES (-1, 'write probe', 0)").run();
    } finally {
      this.db.exec("ROLLBACK");
    }
  }

  /**
   * Takes in rows salvaged from a damaged outbox (signed envelopes of earlier boots, kept in
   * their order) in commits of at most `maxCommitBytes` (one larger than the WAL's share could
   * not be written), then the chain head to continue from and the key a salvaged rotation
   * announced (`signingKey(n)`: the key announced by the first n rows, those stored). A commit
   * that fails (the file at its share of the budget) ends the intake: returns how many rows were
   * stored, and the error when one came.
   */
  adopt(rows: readonly Omit<Row, "id">[], head: ChainHead | undefined, signingKey: (stored: number) => string | undefined = () => undefined): { stored: number; error?: unknown } {
    // The damaged file's note of how its last run ended is not carried over: that end is not
    // known (the salvage's own incident event says what happened to the file).
    this.stopsTracked = false;
    this.setSync("FULL");
    const limit = this.maxCommitBytes;
    let stored = 0;
    let error: unknown;
    while (stored < rows.length && error === undefined) {
      let n = 0;
      let bytes = 0;
      while (stored + n < rows.length && (n === 0 || bytes + rows[stored + n]!.bytes <= limit)) bytes += rows[stored + n++]!.bytes;
      const chunk = rows.slice(stored, stored + n);
      try {
        this.reserve({ insertRows: n, insertBytes: bytes, otherBytes: 400 });
        this.db.transaction(() => {
          for (const r of chunk) this.stmts.insert.run(r.boot, r.seq, r.rank, r.time, r.bytes, r.body);
        })();
      } catch (e) {
        error = e;
        break;
      }
      this.logicalBytes += bytes;
      stored += n;
      this.afterWrite();
    }
    const key = signingKey(stored);
    if (head || key) {
      try {
        this.reserve({ otherBytes: 400 });
        this.db.transaction(() => {
          if (head) this.stmts.setHead.run(head.boot, head.seq, head.hash);
          if (key) this.db.prepare(SET_SIGNING_KEY).run(key);
        })();
        this.afterWrite();
        if (head) {
          this.lastHead = head;
          this.headBehind = false;
          this.headCopy?.write(head);
        }
      } catch (e) {
        error ??= e;
      }
    }
    this.durableId = this.lastId = (this.db.prepare("SELECT COALESCE(MAX(id), 0) FROM events").pluck().get() as number) ?? 0;
    this.idSeq = Math.max(this.idSeq, this.lastId);
    return error === undefined ? { stored } : { stored, error };
  }

  private setSync(mode: "NORMAL" | "FULL"): void {
    if (this.sync === mode) return;
    this.db.pragma(`synchronous = ${mode}`);
    this.sync = mode;
  }

  private deleteOne(id: number): void {
    const r = this.stmts.del.get(id) as { bytes: number } | undefined;
    if (r) this.logicalBytes -= r.bytes;
  }

  /** Rows after `afterId`, oldest first, skipping parked rows. */
  readAfter(afterId: number, limit: number): Row[] {
    return this.unacked(this.stmts.readAfter, afterId, limit);
  }

  /** The same rows with their bodies as UTF-8 bytes: what the forwarder sends, with no decoding. */
  readRawAfter(afterId: number, limit: number): RawRow[] {
    return this.unacked(this.stmts.readRawAfter, afterId, limit);
  }

  /** Rows after `afterId` without those delivered whose delete is deferred. */
  private unacked<T extends { id: number }>(stmt: Database.Statement, afterId: number, limit: number): T[] {
    let behind = 0;
    for (const id of this.acked) if (id > afterId) behind++;
    if (!behind) return stmt.all(afterId, limit) as T[];
    return (stmt.all(afterId, limit + behind) as T[]).filter((r) => !this.acked.has(r.id)).slice(0, limit);
  }

  /**
   * Deletes the rows of `boot` up to `seq` (an end-to-end ack from the SOC); returns how many.
   * Ids and (boot, seq) grow together (one chain, committed in order), so the last row at or
   * below (boot, seq) is found by a binary search over ids, with no index on (boot, seq).
   */
  ackThrough(boot: number, seq: number): number {
    const at = (id: number) => this.stmts.rowAtOrAfter.get(id) as { id: number; boot: number; seq: number } | undefined;
    const le = (r: { boot: number; seq: number }) => r.boot < boot || (r.boot === boot && r.seq <= seq);
    let lo = 0; // an id at or below which every row is <= (boot, seq)
    let hi = ((this.stmts.lastRowId.get() as number | null) ?? 0) + 1; // an id above every row <= (boot, seq)
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      const r = at(mid);
      if (r && le(r)) lo = r.id;
      else hi = r ? Math.min(mid, r.id) : mid;
    }
    if (lo === 0) return 0;
    this.headCopy?.write({ acked: [boot, seq] });
    const ids = (this.stmts.idsThrough.all(lo, boot) as number[]).filter((id) => !this.acked.has(id));
    this.deferAcks(ids);
    return ids.length;
  }

  /** The id of the last row committed (at open: the last row found). */
  get lastCommittedId(): number {
    return this.lastId;
  }

  /** The oldest row's id, parked ones included (undefined: the outbox is empty). */
  oldestId(): number | undefined {
    this.applyAcks();
    return (this.db.prepare("SELECT MIN(id) FROM events").pluck().get() as number | null) ?? undefined;
  }

  /** The oldest row that may be sent (not parked and not delivered), if any. */
  firstSendableId(): number | undefined {
    for (const id of this.stmts.firstSendable.iterate(this.acked.size + 1) as IterableIterator<number>) if (!this.acked.has(id)) return id;
    return undefined;
  }

  /**
   * Deletes acknowledged rows. With `bytes` (the rows' sizes, known to the sender) the deletes
   * need not return them.
   */
  ack(ids: readonly number[], bytes?: number, upTo?: [number, number]): void {
    if (!ids.length) return;
    if (upTo) this.headCopy?.write({ acked: upTo });
    // A large batch (a busy gateway) is deleted at once, in one range delete when its ids are
    // consecutive (a batch is read in id order); a small one waits for the next commit.
    if (ids.length + this.acked.size <= MAX_DEFERRED_ACKS && this.path !== ":memory:") {
      this.deferAcks(ids);
      return;
    }
    this.applyAcks();
    let gone = 0;
    let counted = 0;
    this.inChunks(ids, 0, (chunk) => {
      if (bytes === undefined) {
        for (const id of chunk) this.deleteOne(id);
        return;
      }
      let n = 0;
      if (isAscendingRun(chunk)) n = this.stmts.delRange.run(chunk[0]!, chunk[chunk.length - 1]!).changes;
      else for (const id of chunk) n += this.stmts.delQuiet.run(id).changes;
      // Rows evicted meanwhile were already subtracted; count only what this delete removed.
      return () => {
        gone += n;
        const share = gone === ids.length ? bytes : Math.round((bytes * gone) / ids.length);
        this.logicalBytes -= share - counted;
        counted = share;
      };
    });
  }

  /** Parks rows; returns how many were never parked before (retries are not news). */
  park(ids: readonly number[], reason: string, now: number): number {
    this.applyAcks();
    let fresh = 0;
    this.inChunks(ids, 64 + reason.length, (chunk) => {
      let n = 0;
      for (const id of chunk) {
        this.stmts.park.run(id);
        if (!this.stmts.wasParked.get(id)) n++;
        this.stmts.parkNote.run(id, reason, now);
      }
      return () => {
        fresh += n;
      };
    });
    return fresh;
  }

  /** Makes parked rows eligible again (periodic retry); returns how many. */
  unparkAll(): number {
    this.applyAcks();
    const notes = this.db.prepare("SELECT COUNT(*) FROM parked").pluck().get() as number;
    this.reserve({ otherBytes: 200 + notes * 96 });
    this.stmts.forgetDelivered.run();
    this.afterWrite();
    let n = 0;
    this.inChunks(this.stmts.parkedIds.all() as number[], 0, (chunk) => {
      for (const id of chunk) n += this.stmts.unpark.run(id).changes;
    });
    return n;
  }

  parkedRows(limit: number): Row[] {
    return this.stmts.parkedRows.all(limit) as Row[];
  }

  /** Moves a row that fails its hash check out of the way; it is kept for forensics. */
  quarantine(row: Pick<Row, "id">, reason: string, now: number): void {
    this.applyAcks();
    const bytes = (this.stmts.bytesOf.get(row.id) as number | undefined) ?? 0;
    this.reserve({ touchRows: 1, touchBytes: bytes, otherBytes: 400 + bytes });
    this.db.transaction(() => {
      this.keepHead();
      this.stmts.quarantine.run(reason, now, row.id);
      this.deleteOne(row.id);
    })();
    this.afterWrite();
  }

  /** Whether `incoming` more bytes of rows would not fit under the data budget (see `planEviction`). */
  overBudget(incoming: number): boolean {
    return this.usedBytes() + incoming * 2 > this.shares.dataBudget;
  }

  /**
   * Chooses rows to evict so that `incoming` more bytes fit under the data budget with 10 %
   * headroom: lowest class first, oldest first within a class; a class is touched only when
   * every lower class is gone, loss records last of all. Rows in `exclude` (in flight) are
   * skipped. Rows up to `sentThrough` (the highest id the forwarder published) had been sent:
   * the summary names them under `sent`, and `sent` counts them. No more than one transaction
   * can delete within the WAL's share: while the outbox stays over budget, the caller commits
   * evictions `alone` (no rows added) first. Does not delete: the caller deletes them in the
   * same transaction as the loss record.
   */
  planEviction(incoming: number, exclude: ReadonlySet<number>, alone = false, pending: readonly EvictedRange[] = [], sentThrough = 0): { ids: number[]; summary: EvictedRange[]; sent: number } | undefined {
    if (!this.overBudget(incoming)) return undefined;
    let used = this.usedBytes();
    if (this.acked.size) {
      this.applyAcks(); // delivered rows are not evicted (nor named lost)
      if (!this.overBudget(incoming)) return undefined;
      used = this.usedBytes();
    }
    // Logical bytes free roughly used * (logical / physical) of page space.
    const ratio = used > 0 && this.logicalBytes > 0 ? this.logicalBytes / used : 1;
    let need = Math.ceil((used + incoming * 2 - this.shares.dataBudget * 0.9) * ratio);
    const ids: number[] = [];
    const summary: EvictedRange[] = [];
    const carried: Carried = { ranges: [], counts: {}, sent: [] };
    let sent = 0;
    // One commit evicts no more than its transaction can write within ¾ of the WAL's share (the
    // rest for the loss list and chain head; see `reserve`); the caller commits evictions alone
    // until the outbox is under budget, before the database reaches its page limit.
    // The loss list the commit writes grows by a range per run evicted (see `commit`).
    const shape = { insertRows: alone ? 0 : Math.ceil(incoming / this.rowBytes()), insertBytes: alone ? 0 : incoming, touchRows: 0, touchBytes: 0, runs: 0, otherBytes: 1024 + lossBytes(pending) };
    const fits = (bytes: number) => {
      const next = { ...shape, touchRows: shape.touchRows + 1, touchBytes: shape.touchBytes + bytes, runs: shape.runs + 1 };
      return framesFor({ ...next, otherBytes: shape.otherBytes + 32 * next.runs }, this.pageSize) * this.estimateScale <= (this.shares.walFrames * 3) / 4;
    };
    let lastId = -1;
    for (let rank = 0; rank <= LOSS_RANK && need > 0; rank++) {
      const cls = EVENT_CLASSES[rank] ?? "system";
      let entry = summary.find((e) => e.class === cls);
      const fresh = !entry;
      // Rows of this rank below `rankFrom` are gone (ids only grow): the scan starts there, and
      // next time at its first row found (evicted rows are deleted by the caller's commit, or
      // found again if that fails).
      const maxId = (this.stmts.lastRowId.get() as number | null) ?? 0;
      let first: number | undefined;
      const rows = this.stmts.byRank.iterate(this.rankFrom[rank] ?? 0, rank) as IterableIterator<Pick<Row, "id" | "boot" | "seq" | "bytes">>;
      for (const r of rows) {
        first ??= r.id;
        if (need <= 0) break;
        if (exclude.has(r.id)) continue;
        if (!fits(r.bytes)) {
          need = 0;
          break;
        }
        shape.touchRows++;
        shape.touchBytes += r.bytes;
        if (r.id !== lastId + 1) shape.runs++;
        lastId = r.id;
        ids.push(r.id);
        need -= r.bytes;
        entry ??= { class: cls, count: 0, ranges: [] };
        entry.count++;
        extendRanges(entry.ranges, r.boot, r.seq);
        if (r.id <= sentThrough) {
          sent++;
          extendRanges((entry.sent ??= []), r.boot, r.seq);
        }
        // Loss records stored before they had a rank of their own are system rows.
        if (rank >= SYSTEM_RANK) carryLoss(this.stmts.bodyOf.get(r.id) as string | undefined, carried);
      }
      this.rankFrom[rank] = first !== undefined ? first - 1 : maxId;
      if (entry && fresh) summary.push(entry);
    }
    if (!ids.length) return undefined;
    for (const e of summary) {
      e.ranges = mergeRanges(e.ranges);
      if (e.sent) e.sent = mergeRanges(e.sent);
    }
    if (!carried.ranges.length) return { ids, summary, sent };
    // Unsent loss records are being evicted: what they named must not be forgotten. Fold it,
    // with this round's evictions, into one set of merged ranges (everything older is gone by
    // now, so the union is nearly contiguous and stays small).
    const counts: Partial<Record<EventClass, number>> = { ...carried.counts };
    for (const e of summary) counts[e.class] = (counts[e.class] ?? 0) + e.count;
    const ranges = mergeRanges([...carried.ranges, ...summary.flatMap((e) => e.ranges)]);
    const top = [...EVENT_CLASSES].reverse().find((c) => counts[c]) ?? "system";
    const sentRanges = mergeRanges([...carried.sent, ...summary.flatMap((e) => e.sent ?? [])]);
    return { ids, summary: [{ class: top, count: rangeCount(ranges), ranges, counts, ...(sentRanges.length ? { sent: sentRanges } : {}) }], sent };
  }

  stats(): OutboxStats {
    // Delivered rows whose delete waits are left out, not deleted: a heartbeat's or `status`'s
    // look at the outbox writes nothing.
    const s = this.stmts.stats.get(JSON.stringify([...this.acked])) as { depth: number; bytes: number; oldest: number | null; parked: number };
    const q = (this.stmts.quarantineCount.get() as { n: number }).n;
    return {
      depth: s.depth,
      bytes: s.bytes,
      parked: s.parked,
      quarantined: q,
      oldest_time: s.oldest,
      file_bytes: this.fileBytes(),
      budget_bytes: this.maxBytes,
    };
  }

  /** Database + WAL + shared-memory file sizes: what the outbox occupies on disk. */
  fileBytes(): number {
    let n = 0;
    for (const suffix of ["", "-wal", "-shm"]) {
      try {
        n += statSync(this.path + suffix).size;
      } catch {
        /* absent */
      }
    }
    return n;
  }

  /** SQLite's own integrity check plus the chain table's shape; "ok" when all is well. */
  integrityCheck(): string {
    const r = this.db.pragma("integrity_check") as { integrity_check: string }[];
    const msgs = r.map((x) => x.integrity_check).filter((m) => m !== "ok");
    return msgs.length ? msgs.join("; ") : "ok";
  }

  /** Copies the WAL back into the database file (counted in `writes`); TRUNCATE empties the WAL. */
  checkpoint(mode: "PASSIVE" | "RESTART" | "TRUNCATE" = "TRUNCATE"): void {
    const before = this.wal?.header();
    const r = this.db.pragma(`wal_checkpoint(${mode})`) as { busy: number; log: number; checkpointed: number }[];
    this.written.checkpoints++;
    // RESTART and TRUNCATE, not blocked: the next transaction writes from the WAL's start.
    if (mode !== "PASSIVE" && r[0]?.busy === 0) this.walRestarts = true;
    const done = r[0]?.checkpointed ?? 0;
    this.wal?.checkpointed(done);
    if (before && done > before.backfilled) {
      const pages = this.wal!.distinctPages(before.backfilled, Math.min(done, before.frames), this.pageSize) ?? done - before.backfilled;
      this.written.checkpoint_pages += pages;
      this.written.checkpoint_bytes += pages * this.pageSize;
    }
  }

  close(): void {
    if (this.walFd !== undefined) closeSync(this.walFd);
    this.walFd = undefined;
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    if (!this.db.open) {
      this.wal?.close();
      return;
    }
    try {
      if (this.acked.size) this.applyAcks();
      this.checkpoint();
    } catch {
      /* best effort */
    }
    this.db.close();
    this.wal?.close();
    this.headCopy?.close();
  }
}

/**
 * Delivered rows whose delete may wait for the next commit, and how long at most (ms): as long
 * as telemetry may wait (`buffer.low_flush_ms` ≤ 60 s), so that at low rates a delete rides on
 * the next commit instead of a commit of its own (SD-card wear).
 */
const MAX_DEFERRED_ACKS = 64;
const ACK_DELAY_MS = 60_000;

const SYSTEM_RANK = CLASS_RANK.system;

/** Columns every outbox's tables have had (CREATE TABLE IF NOT EXISTS keeps another program's table of the same name). */
const OUTBOX_COLUMNS: Record<string, string[]> = {
  events: ["id", "boot", "seq", "rank", "time", "bytes", "parked", "body"],
  chain: ["id", "boot", "seq", "hash"],
};

/** Every table an outbox has had (`sqlite_sequence`: AUTOINCREMENT in an older outbox). */
const OUTBOX_TABLES = new Set(["events", "chain", "quarantine", "parked", "loss_pending", "signing_key", "stopped", "sqlite_sequence"]);

/**
 * What makes the file another program's database, in words: a table no outbox has had, or an
 * outbox table lacking one of its columns. Undefined for an outbox or an empty file.
 */
function foreignTable(db: Database.Database, tables: Set<unknown>): string | undefined {
  const other = [...tables].filter((t) => !OUTBOX_TABLES.has(String(t))).sort();
  if (other.length > 0) return `it has ${other.length === 1 ? "a table" : "tables"} no outbox has: ${other.slice(0, 3).join(", ")}${other.length > 3 ? ", ..." : ""}`;
  for (const [table, want] of Object.entries(OUTBOX_COLUMNS)) {
    if (!tables.has(table)) continue;
    const have = new Set((db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).map((c) => c.name));
    const missing = want.find((c) => !have.has(c));
    if (missing) return `its table ${table} has no column ${missing}`;
  }
  return undefined;
}

/**
 * Adds `loss_pending.sent` to an outbox created before it; false when the file cannot be
 * written (it is then not used: evictions need a writable file anyway).
 */
function lossSentColumn(db: Database.Database): boolean {
  const cols = (db.prepare("PRAGMA table_info(loss_pending)").all() as { name: string }[]).map((c) => c.name);
  if (cols.includes("sent")) return true;
  try {
    db.exec("ALTER TABLE loss_pending ADD COLUMN sent TEXT");
    return true;
  } catch {
    return false;
  }
}

/** The highest id the quarantine, the parked notes and (in an older outbox) AUTOINCREMENT used. */
function usedIds(db: Database.Database): number {
  const max = (sql: string) => {
    try {
      return (db.prepare(sql).pluck().get() as number | null) ?? 0;
    } catch {
      return 0; // no sqlite_sequence in an outbox created without AUTOINCREMENT
    }
  };
  return Math.max(max("SELECT MAX(id) FROM quarantine"), max("SELECT MAX(id) FROM parked"), max("SELECT seq FROM sqlite_sequence WHERE name = 'events'"));
}

interface Carried {
  ranges: [number, number, number][];
  counts: Partial<Record<EventClass, number>>;
  sent: [number, number, number][];
}

/** Collects the ranges, per-class counts and sent ranges an evicted loss record named (other rows: nothing). */
function carryLoss(body: string | undefined, into: Carried): void {
  if (!body || !body.includes('"loss":')) return;
  let loss: { class?: unknown; count?: unknown; counts?: unknown; ranges?: unknown; sent_unacknowledged?: { ranges?: unknown } } | undefined;
  try {
    loss = (JSON.parse(body) as { ocsf?: { unmapped?: { loss?: typeof loss } } }).ocsf?.unmapped?.loss;
  } catch {
    return;
  }
  if (!loss || !Array.isArray(loss.ranges)) return;
  const ranges = loss.ranges.filter(isRange);
  if (!ranges.length) return;
  into.ranges.push(...ranges);
  const sent = loss.sent_unacknowledged?.ranges;
  if (Array.isArray(sent)) into.sent.push(...sent.filter(isRange));
  if (loss.counts && typeof loss.counts === "object") {
    for (const [c, n] of Object.entries(loss.counts as Record<string, unknown>)) if (c in CLASS_RANK && typeof n === "number") into.counts[c as EventClass] = (into.counts[c as EventClass] ?? 0) + n;
  } else if (typeof loss.class === "string" && loss.class in CLASS_RANK) {
    const n = ranges.reduce((a, r) => a + r[2] - r[1] + 1, 0);
    into.counts[loss.class as EventClass] = (into.counts[loss.class as EventClass] ?? 0) + n;
  }
}

function isLossRecord(env: Envelope): boolean {
  const u = env.ocsf.unmapped as { loss?: unknown } | undefined;
  return env.class === "system" && typeof u === "object" && u !== null && u.loss !== undefined;
}

/**
 * Adds evictions to those not yet named by a loss record: one entry per class, ranges merged.
 * An entry that already folds several classes (`counts`) keeps counting them.
 */
export function mergeLoss(into: readonly EvictedRange[], add: readonly EvictedRange[]): EvictedRange[] {
  const byClass = new Map<EventClass, EvictedRange>();
  for (const e of [...into, ...add]) {
    const cur = byClass.get(e.class);
    if (!cur) {
      byClass.set(e.class, { class: e.class, count: e.count, ranges: e.ranges.map((r) => [...r] as [number, number, number]), ...(e.counts ? { counts: { ...e.counts } } : {}), ...(e.sent?.length ? { sent: mergeRanges(e.sent) } : {}) });
      continue;
    }
    const counts: Partial<Record<EventClass, number>> = { ...(cur.counts ?? { [cur.class]: cur.count }) };
    for (const [c, n] of Object.entries(e.counts ?? { [e.class]: e.count }) as [EventClass, number][]) counts[c] = (counts[c] ?? 0) + n;
    const ranges = mergeRanges([...cur.ranges, ...e.ranges]);
    const sent = mergeRanges([...(cur.sent ?? []), ...(e.sent ?? [])]);
    byClass.set(e.class, { class: e.class, count: rangeCount(ranges), ranges, ...(Object.keys(counts).length > 1 ? { counts } : {}), ...(sent.length ? { sent } : {}) });
  }
  return [...byClass.values()].sort((a, b) => CLASS_RANK[a.class] - CLASS_RANK[b.class]);
}

/** Whether `ids` is first, first + 1, ..., each once. */
function isAscendingRun(ids: readonly number[]): boolean {
  for (let i = 1; i < ids.length; i++) if (ids[i] !== ids[i - 1]! + 1) return false;
  return true;
}

/** What a loss list takes in the `loss_pending` table, about (for WAL estimates). */
function lossBytes(list: readonly EvictedRange[]): number {
  let n = 0;
  for (const e of list) n += 64 + 32 * (e.ranges.length + (e.sent?.length ?? 0));
  return n;
}

/** How many runs of consecutive ids `ids` (in their order) make. */
function runsOf(ids: readonly number[]): number {
  let runs = ids.length ? 1 : 0;
  for (let i = 1; i < ids.length; i++) if (ids[i] !== ids[i - 1]! + 1) runs++;
  return runs;
}
