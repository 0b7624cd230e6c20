import Database from "better-sqlite3";
import { describeError } from "../core/errors";
import { isRange, mergeRanges, type SeqRange } from "../core/seq-ranges";
import { storedBodyHashOk, type Envelope } from "../core/envelope";
import { keyAnnouncements } from "../keys/key-events";
import { scanPages } from "./page-scan";
import { LOSS_RANK, type ChainHead, type RawRow, type Row } from "./store";

export interface Salvaged {
  /** Rows whose stored envelope passes its hash check, in id order, none delivered. */
  rows: Omit<Row, "id">[];
  /** The damaged file's own chain head, when its chain table could be read. */
  head: ChainHead | undefined;
  /** Chain positions (not delivered, not recovered) whose rows could be read but fail their hash check. */
  bad: number;
  /** Why reading stopped short, when it did. */
  error: string | undefined;
  /**
   * The fingerprint the last salvaged key rotation announced (the outbox's `signing_key`),
   * derived from the rows that will be sent, not read from the damaged file: a pending key is
   * promoted at the next start only if the SOC will get its announcement.
   */
  signingKey: string | undefined;
  /** Of `rows`, those only the raw page scan found (SQLite could not reach them). */
  scanned: number;
}

const PAGE = 256;
/** Salvage never holds up the start (and with it the Modbus proxy) for longer than this. */
const DEADLINE_MS = 10_000;

/**
 * Reads what can still be read from a damaged outbox file (already moved aside) and its WAL:
 * the chain head and every row whose signed envelope still passes its hash check, in id
 * (commit) order, one per chain position, none at or below `acked` (delivered). Two passes:
 * SQLite's (a damaged page makes it throw for the keys it holds; it then looks further on,
 * doubling steps, then a binary search back to the first readable id), at most half the
 * deadline; then a raw scan of every page image (page-scan.ts) for the rows SQLite could not
 * reach (under a lost interior page of the table, in a file whose header is gone).
 */
export function salvage(file: string, acked?: readonly [number, number]): Salvaged {
  const out: Salvaged = { rows: [], head: undefined, bad: 0, error: undefined, signingKey: undefined, scanned: 0 };
  const end = Date.now() + DEADLINE_MS;
  const found = new Map<string, RawRow>();
  const bad = new Map<string, [number, number]>();
  const delivered = (b: number, s: number) => acked !== undefined && (b < acked[0] || (b === acked[0] && s <= acked[1]));
  const pending: SeqRange[] = [];
  readBySql(file, out, Date.now() + DEADLINE_MS / 2, pending, (r) => {
    if (storedBodyHashOk(r.body)) found.set(`${r.boot}:${r.seq}`, r);
    else bad.set(`${r.boot}:${r.seq}`, [r.boot, r.seq]);
  });
  const scan = scanPages(file, { end, skip: (b, s) => delivered(b, s) || found.has(`${b}:${s}`) });
  if (!scan.complete) out.error ??= `the page scan stopped at salvage's ${DEADLINE_MS / 1000} s deadline before reading every page`;
  // Rows the outbox evicted (named by its loss records, or pending one) stay lost: the SOC was
  // told, or is told by this salvage's loss records.
  const evicted = namedLost([...found.values(), ...scan.rows], pending);
  for (const r of scan.rows) {
    const key = `${r.boot}:${r.seq}`;
    if (found.has(key) || evicted(r.boot, r.seq)) continue;
    found.set(key, r);
    out.scanned++;
  }
  for (const [b, s] of scan.bad) bad.set(`${b}:${s}`, [b, s]);
  for (const [key, [b, s]] of bad) if (!found.has(key) && !delivered(b, s)) out.bad++;
  const rows = [...found.values()].filter((r) => !delivered(r.boot, r.seq));
  rows.sort((a, b) => a.id - b.id || a.boot - b.boot || a.seq - b.seq);
  for (const r of rows) out.rows.push({ boot: r.boot, seq: r.seq, rank: r.rank, time: r.time, bytes: r.bytes, body: r.body.toString("utf8") });
  out.signingKey = announcedKey(out.rows);
  return out;
}

/** Whether a position is in `pending` or a range one of the loss records among `rows` named lost. */
function namedLost(rows: readonly RawRow[], pending: readonly SeqRange[]): (boot: number, seq: number) => boolean {
  const ranges = [...pending];
  for (const r of rows) {
    if (r.rank !== LOSS_RANK) continue;
    try {
      ranges.push(...rangesIn((JSON.parse(r.body.toString("utf8")) as { ocsf?: { unmapped?: { loss?: { ranges?: unknown } } } }).ocsf?.unmapped?.loss?.ranges));
    } catch {
      /* verified, so parseable */
    }
  }
  const byBoot = new Map<number, [number, number][]>();
  for (const [b, from, to] of mergeRanges(ranges)) {
    const list = byBoot.get(b) ?? [];
    if (!list.length) byBoot.set(b, list);
    list.push([from, to]);
  }
  return (b, s) => byBoot.get(b)?.some(([from, to]) => s >= from && s <= to) ?? false;
}

/** The [boot, from, to] ranges in a loss record's or loss_pending's `ranges`. */
function rangesIn(v: unknown): SeqRange[] {
  return Array.isArray(v) ? v.filter(isRange) : [];
}

/** The fingerprint the last key rotation among `rows` announced, if any did. */
export function announcedKey(rows: readonly Pick<Row, "body">[]): string | undefined {
  let key: string | undefined;
  for (const r of rows) if (r.body.includes('"key_rotation"')) key = announced(r.body) ?? key;
  return key;
}

/** SQLite's pass: the chain head and the rows it can reach, each given to `row`. */
function readBySql(file: string, out: Salvaged, end: number, pending: SeqRange[], row: (r: RawRow) => void): void {
  let db: Database.Database;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
    // A file shorter than its header says is "malformed" as a whole unless the schema may be
    // trusted as is (SQLite then reads the pages that are there); needs defensive mode off.
    db.unsafeMode(true);
    db.pragma("writable_schema = ON");
  } catch (e) {
    out.error = describeError(e);
    return;
  }
  try {
    try {
      out.head = db.prepare("SELECT boot, seq, hash FROM chain WHERE id = 1").get() as ChainHead | undefined;
    } catch (e) {
      out.error = describeError(e);
    }
    try {
      // Evictions no loss record named yet.
      for (const r of db.prepare("SELECT ranges FROM loss_pending").pluck().all() as string[]) pending.push(...rangesIn(JSON.parse(r)));
    } catch {
      /* unreadable: rows evicted since the last loss record may be brought back */
    }
    let page: Database.Statement;
    try {
      page = db.prepare("SELECT id, boot, seq, rank, time, bytes, CAST(body AS BLOB) AS body FROM events WHERE id > ? ORDER BY id LIMIT ?");
    } catch (e) {
      out.error = describeError(e);
      return;
    }
    const read = (after: number, n: number) => page.all(after, n) as RawRow[];
    let after = 0;
    while (Date.now() < end) {
      let rows: RawRow[];
      try {
        rows = read(after, PAGE);
      } catch (e) {
        out.error ??= describeError(e);
        const next = nextReadable(read, after, end);
        if (next === undefined) break;
        after = next;
        continue;
      }
      if (!rows.length) break;
      for (const r of rows) row(r);
      after = rows[rows.length - 1]!.id;
    }
  } finally {
    db.close();
  }
}

/** The largest id after which a read works again, past a damaged stretch after `after`. */
function nextReadable(read: (after: number, n: number) => unknown[], after: number, end: number): number | undefined {
  const ok = (a: number) => {
    try {
      read(a, 1);
      return true;
    } catch {
      return false;
    }
  };
  let step = 1;
  let hi: number | undefined;
  while (step < 2 ** 40 && Date.now() < end) {
    if (ok(after + step)) {
      hi = after + step;
      break;
    }
    step *= 2;
  }
  if (hi === undefined) return undefined;
  let lo = after + Math.floor(step / 2);
  // ok(lo) failed (or lo === after): narrow down to the first `after` value that reads.
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (ok(mid)) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** The new key's fingerprint, when a stored event is a key rotation announcement. */
function announced(body: string): string | undefined {
  try {
    return keyAnnouncements(JSON.parse(body) as Envelope).rotation?.fingerprint;
  } catch {
    return undefined;
  }
}
