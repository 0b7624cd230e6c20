/**
 * How `buffer.max_bytes` is shared between the outbox's three files, so that their sum never
 * exceeds it:
 *
 * - the WAL: at most `walBytes` (¼ of the budget), i.e. `walFrames` frames of page + 24 B after
 *   its 32-byte header. Before each write transaction the outbox reserves the frames it may
 *   append (`framesFor`, an upper estimate); when the WAL cannot take them it is checkpointed
 *   and restarted first (the next transaction writes from its start), and when another
 *   connection's read keeps it from restarting, the write is refused (OUTBOX_FULL) instead of
 *   growing the file. A restarted WAL is truncated back to half its share (journal_size_limit).
 * - the -shm index: one 32 KiB block per 4,096 frames (the first holds 4,062), so at most
 *   `shmBytes(walFrames)`.
 * - the database file: everything else, as whole pages (`dbPages`, SQLite's max_page_count: a
 *   transaction that would need more fails and changes nothing). Eviction aims 32 KiB lower
 *   (`dataBudget`), so that limit is only a backstop.
 */
export interface BudgetShares {
  walBytes: number;
  walFrames: number;
  shmBytes: number;
  dbPages: number;
  /** Pages in use the eviction keeps below (bytes). */
  dataBudget: number;
}

const WAL_HEADER = 32;
const FRAME_HEADER = 24;
const SHM_BLOCK = 32 * 1024;
/** Below the hard page limit, room for what one commit's eviction estimate may miss. */
const EVICTION_MARGIN = 32 * 1024;

export function budgetShares(maxBytes: number, pageSize: number): BudgetShares {
  const walBytes = Math.floor(maxBytes / 4);
  const walFrames = Math.floor((walBytes - WAL_HEADER) / (pageSize + FRAME_HEADER));
  const shm = shmBytes(walFrames);
  const dbPages = Math.floor((maxBytes - walBytes - shm) / pageSize);
  return { walBytes, walFrames, shmBytes: shm, dbPages, dataBudget: dbPages * pageSize - EVICTION_MARGIN };
}

/** Size of the -shm file while the WAL holds `frames` frames (sqlite.org/walformat.html). */
export function shmBytes(frames: number): number {
  return SHM_BLOCK * (1 + Math.max(0, Math.ceil((frames - 4062) / 4096)));
}

/** What a write transaction does, for `framesFor`. */
export interface WriteShape {
  /** Rows inserted and their bytes (bodies). */
  insertRows?: number;
  insertBytes?: number;
  /** Rows deleted or updated, their bytes (an estimate is fine) and in how many runs of consecutive ids. */
  touchRows?: number;
  touchBytes?: number;
  runs?: number;
  /** Pages a `DELETE FROM events` (SQLite's truncate) frees: its root, page 1 and free-list trunks are written. */
  freedPages?: number;
  /** Bytes written to the small tables (loss list, parked notes, chain head...). */
  otherBytes?: number;
}

/**
 * An upper estimate of the WAL frames (distinct pages) one transaction appends, checked after
 * every transaction (`Outbox.budgetMisses`). Rows are appended at the end of the table (ids only
 * grow): new leaves are at least half full (a row that does not fit starts the next), plus the
 * path above them. A run of consecutive ids deleted or updated writes the leaves at its two ends
 * and their neighbours (SQLite rebalances them); leaves emptied in between go to the free list
 * without being written. The free-list trunk, page 1 and the small tables (loss list, chain
 * head, parked notes) come on top.
 */
export function framesFor(s: WriteShape, pageSize: number): number {
  const half = pageSize / 2;
  const insertRows = s.insertRows ?? 0;
  const touchRows = s.touchRows ?? 0;
  const runs = s.runs ?? touchRows;
  let leaves = 0;
  if (insertRows) leaves += Math.ceil(((s.insertBytes ?? 0) + 12 * insertRows) / half) + 1;
  if (touchRows) leaves += Math.min(2 * touchRows, 4 * runs);
  leaves += Math.ceil((s.otherBytes ?? 0) / half) + 2;
  const interior = Math.min(leaves, 8 + runs + Math.ceil(leaves / 32));
  // A trunk lists pageSize / 4 - 2 free pages; a full one makes the next freed page a trunk.
  const freelist = 2 + Math.ceil(touchRows / 128) + Math.ceil((s.freedPages ?? 0) / (pageSize / 4 - 2));
  return leaves + interior + freelist + 1;
}
