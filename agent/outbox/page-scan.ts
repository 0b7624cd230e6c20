import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { storedBodyHashOk } from "../core/envelope";
import type { RawRow } from "./store";

export interface PageScan {
  /** `events` rows read from page images, bodies verified, one per (boot, seq), in no order. */
  rows: RawRow[];
  /** (boot, seq) of rows shaped like `events` rows that no image gave whole and verifying. */
  bad: [number, number][];
  /** False when the deadline ended the scan before every page was read. */
  complete: boolean;
}

export interface ScanOptions {
  /** Date.now() past which the scan stops (with what it has). */
  end: number;
  /** Rows to pass over (already recovered, or delivered): their payload is not read. */
  skip?: (boot: number, seq: number) => boolean;
}

const MAGIC = Buffer.from("SQLite format 3\0", "latin1");
const WAL_MAGIC = [0x377f0682, 0x377f0683];
const SIZES = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];
/** Without a readable header, each page size is tried on this many 64 KiB stretches of the file. */
const PROBES = 64;
/** The file is read this many bytes at a time. */
const CHUNK = 256 * 1024;

/**
 * Reads `events` rows from a damaged outbox file and its WAL page by page, without the b-tree
 * above them: every table-leaf page image (in the file, and in the WAL's committed frames of its
 * current salt) is parsed cell by cell through its cell pointer array, overflow chains followed
 * (newest image of each page). A cell counts as an `events` row only by its record's shape
 * (NULL id, six integers, a text body) and a body that passes its hash check. Pages the file
 * freed keep their rows: the caller drops those already delivered.
 */
export function scanPages(file: string, o: ScanOptions): PageScan {
  const pages = new PageSource(file);
  try {
    const sizes = pages.pageSize ? [pages.pageSize] : SIZES;
    let best: { size: number; found: number } | undefined;
    if (sizes.length > 1) {
      // No header to say it: the size that gives the most verifying rows on a sample.
      for (const size of sizes) {
        pages.use(size, 0);
        const probe = new Scan(pages, { end: o.end });
        probe.sample(PROBES);
        if (probe.found.size > (best?.found ?? 0)) best = { size, found: probe.found.size };
      }
      if (!best) return { rows: [], bad: [], complete: Date.now() < o.end };
      pages.use(best.size, 0);
    }
    const scan = new Scan(pages, o);
    const complete = scan.all();
    const bad = [...scan.bad.values()].filter((k) => !scan.found.has(`${k[0]}:${k[1]}`));
    return { rows: [...scan.found.values()], bad, complete };
  } finally {
    pages.close();
  }
}

/** Page images of the file and of its WAL's committed frames (the newest one of each page). */
class PageSource {
  size = 0;
  /** Usable bytes of a page (the page size less the reserved bytes at its end). */
  usable = 0;
  /** From the file's header, else the WAL's (undefined: neither is readable). */
  readonly pageSize: number | undefined;
  private readonly reserved: number;
  private readonly db: number | undefined;
  private readonly dbBytes: number;
  private readonly wal: number | undefined;
  private walSize = 0;
  /** Offsets of the committed frames' page images, in WAL order. */
  private frames: { page: number; at: number }[] = [];
  private newest = new Map<number, number>();
  private walMax = 0;

  constructor(file: string) {
    this.db = tryOpen(file);
    this.dbBytes = this.db === undefined ? 0 : fstatSync(this.db).size;
    this.wal = tryOpen(`${file}-wal`);
    const head = this.read(this.db, 0, 100);
    const fromHeader = head?.subarray(0, 16).equals(MAGIC) ? sizeAt(head.readUInt16BE(16)) : undefined;
    // The file format wants 480 usable bytes at least: more reserved than that is no header's.
    this.reserved = fromHeader && fromHeader - head![20]! >= 480 ? head![20]! : 0;
    const walHead = this.read(this.wal, 0, 32);
    if (walHead && WAL_MAGIC.includes(walHead.readUInt32BE(0))) {
      this.walSize = sizeAt(walHead.readUInt32BE(8)) ?? 0;
      if (fromHeader && this.walSize !== fromHeader) this.walSize = 0;
    }
    this.pageSize = fromHeader ?? (this.walSize || undefined);
    if (this.pageSize) this.use(this.pageSize, this.reserved);
    if (this.walSize && walHead) this.readWal(walHead);
  }

  use(size: number, reserved: number): void {
    this.size = size;
    this.usable = size - reserved;
  }

  /** Pages in the file (whole ones). */
  get count(): number {
    return Math.floor(this.dbBytes / this.size);
  }

  /** The committed frames of the WAL's current salt, up to its last commit frame. */
  private readWal(walHead: Buffer): void {
    const salt = walHead.readBigUInt64BE(16);
    const frame = 24 + this.walSize;
    const bytes = fstatSync(this.wal!).size;
    const seen: { page: number; at: number }[] = [];
    const head = Buffer.alloc(24);
    let committed = 0;
    for (let at = 32; at + frame <= bytes; at += frame) {
      if (readSync(this.wal!, head, 0, 24, at) < 24 || head.readBigUInt64BE(8) !== salt) break;
      seen.push({ page: head.readUInt32BE(0), at: at + 24 });
      if (head.readUInt32BE(4) !== 0) committed = seen.length;
    }
    this.frames = seen.slice(0, committed);
    for (const f of this.frames) {
      this.newest.set(f.page, f.at);
      this.walMax = Math.max(this.walMax, f.page);
    }
  }

  /** The newest image of page `n` (1-based) into `buf`; false when there is none. */
  page(n: number, buf: Buffer): boolean {
    const wal = this.size === this.walSize ? this.newest.get(n) : undefined;
    return wal !== undefined ? this.walImage(wal, buf) : this.filePage(n, buf);
  }

  /** The file's page `n` as it is in the file (not its WAL image). */
  filePage(n: number, buf: Buffer): boolean {
    return n >= 1 && n <= this.count && readSync(this.db!, buf, 0, this.size, (n - 1) * this.size) === this.size;
  }

  /** The file's pages from `n` on (as many as fill `buf`, whole ones); how many were read. */
  filePages(n: number, buf: Buffer): number {
    if (n < 1 || n > this.count) return 0;
    const want = Math.min(buf.length, (this.count - n + 1) * this.size);
    return Math.floor(readSync(this.db!, buf, 0, want, (n - 1) * this.size) / this.size);
  }

  /** The WAL's committed page images, when the WAL is of this page size. */
  walImages(): { page: number; at: number }[] {
    return this.size === this.walSize ? this.frames : [];
  }

  walImage(at: number, buf: Buffer): boolean {
    return readSync(this.wal!, buf, 0, this.size, at) === this.size;
  }

  /** The highest page number with an image (in the file or the WAL). */
  get maxPage(): number {
    let max = this.count;
    if (this.size === this.walSize) max = Math.max(max, this.walMax);
    return max;
  }

  private read(fd: number | undefined, at: number, n: number): Buffer | undefined {
    if (fd === undefined) return undefined;
    const b = Buffer.alloc(n);
    return readSync(fd, b, 0, n, at) === n ? b : undefined;
  }

  close(): void {
    if (this.db !== undefined) closeSync(this.db);
    if (this.wal !== undefined) closeSync(this.wal);
  }
}

/** One pass over page images at the source's current page size. */
class Scan {
  readonly found = new Map<string, RawRow>();
  readonly bad = new Map<string, [number, number]>();
  /** The page image being parsed (a view into `chunk` while the file is read). */
  private buf: Buffer;
  private readonly page: Buffer;
  private readonly over: Buffer;

  constructor(
    private readonly pages: PageSource,
    private readonly o: ScanOptions,
  ) {
    this.buf = this.page = Buffer.alloc(pages.size);
    this.over = Buffer.alloc(pages.size);
  }

  /** Every page of the file, then the WAL's images; false when the deadline came first. */
  all(): boolean {
    const chunk = Buffer.alloc(Math.max(CHUNK, this.pages.size));
    for (let p = 1; p <= this.pages.count; ) {
      if (Date.now() >= this.o.end) return false;
      const n = this.pages.filePages(p, chunk);
      if (!n) break;
      for (let i = 0; i < n; i++, p++) {
        this.buf = chunk.subarray(i * this.pages.size, (i + 1) * this.pages.size);
        this.leaf(p);
      }
    }
    this.buf = this.page;
    let i = 0;
    for (const f of this.pages.walImages()) {
      if (++i % 64 === 0 && Date.now() >= this.o.end) return false;
      if (this.pages.walImage(f.at, this.buf)) this.leaf(f.page);
    }
    return true;
  }

  /** `n` stretches of 64 KiB spread over the file (every page size divides them). */
  sample(n: number): void {
    const per = 65536 / this.pages.size;
    const stretches = Math.ceil(this.pages.count / per);
    const step = Math.max(1, Math.floor(stretches / n));
    for (let s = 0; s < stretches; s += step) {
      if (Date.now() >= this.o.end) return;
      for (let p = s * per + 1; p <= Math.min(this.pages.count, (s + 1) * per); p++) if (this.pages.filePage(p, this.buf)) this.leaf(p);
    }
  }

  /** The rows of the page image in `buf` (page `n`), when it is a table leaf. */
  private leaf(n: number): void {
    const b = this.buf;
    const u = this.pages.usable;
    const h = n === 1 ? 100 : 0;
    if (b[h] !== 0x0d) return;
    const cells = b.readUInt16BE(h + 3);
    const first = h + 8 + 2 * cells;
    if (first > u) return;
    for (let c = 0; c < cells; c++) {
      const at = b.readUInt16BE(h + 8 + 2 * c);
      if (at >= first && at < u) this.cell(at);
    }
  }

  /** A table-leaf cell at `at`: payload length, rowid, local payload, first overflow page. */
  private cell(at: number): void {
    const b = this.buf;
    const u = this.pages.usable;
    const len = varint(b, at, u);
    if (!len) return;
    const id = varint(b, len.end, u);
    if (!id) return;
    const total = len.value;
    const local = localSize(total, u);
    const start = id.end;
    const overflows = local < total;
    if (start + local + (overflows ? 4 : 0) > u) return;
    const row = record(b.subarray(start, start + local), total);
    if (!row) return;
    const key = `${row.boot}:${row.seq}`;
    if (this.found.has(key) || this.o.skip?.(row.boot, row.seq)) return;
    // A payload longer than every page could hold is not a row (a chance match of the shape).
    const max = this.pages.maxPage;
    if (total - local > max * (u - 4)) return;
    const body = Buffer.alloc(total - row.bodyAt);
    let got = local - row.bodyAt;
    b.copy(body, 0, start + row.bodyAt, start + local);
    if (overflows) {
      // Each overflow page: the next one's number, then up to u - 4 bytes of the payload.
      let next = b.readUInt32BE(start + local);
      const seen = new Set<number>();
      while (got < body.length && next >= 1 && next <= max && !seen.has(next)) {
        seen.add(next);
        if (!this.pages.page(next, this.over)) break;
        const n = Math.min(u - 4, body.length - got);
        this.over.copy(body, got, 4, 4 + n);
        got += n;
        next = this.over.readUInt32BE(0);
      }
    }
    if (got === body.length && storedBodyHashOk(body)) {
      this.found.set(key, { id: id.value, boot: row.boot, seq: row.seq, rank: row.rank, time: row.time, bytes: row.bytes, body });
    } else this.bad.set(key, [row.boot, row.seq]);
  }
}

/**
 * An `events` record's integers and where its body starts, from the payload's local part;
 * undefined when the record is not shaped like one: 8 values, the id NULL (its rowid alias),
 * six integers (boot, seq, rank, time, bytes, parked), a text body of `bytes` bytes, `total`
 * bytes in all.
 * (The quarantine's record has 7 values, a text reason and a blob body.)
 */
function record(p: Buffer, total: number): { boot: number; seq: number; rank: number; time: number; bytes: number; bodyAt: number } | undefined {
  const hl = varint(p, 0, p.length);
  if (!hl || hl.value > p.length || hl.value < 9) return undefined;
  const types: number[] = [];
  let at = hl.end;
  while (at < hl.value && types.length < 9) {
    const t = varint(p, at, hl.value);
    if (!t) return undefined;
    types.push(t.value);
    at = t.end;
  }
  if (at !== hl.value || types.length !== 8 || types[0] !== 0) return undefined;
  const body = types[7]!;
  if (body < 13 || body % 2 === 0) return undefined;
  const ints: number[] = [];
  let off = hl.value;
  for (const t of types.slice(1, 7)) {
    const size = INT_SIZE[t];
    if (size === undefined || off + size > p.length) return undefined;
    ints.push(t === 8 ? 0 : t === 9 ? 1 : readInt(p, off, size));
    off += size;
  }
  const [boot, seq, rank, time, bytes] = ints as [number, number, number, number, number];
  // The body is all the rest of the payload, and `bytes` is its length.
  if (off + (body - 13) / 2 !== total || (body - 13) / 2 !== bytes) return undefined;
  return { boot, seq, rank, time, bytes, bodyAt: off };
}

/** Bytes of the integer serial types (8 and 9 are the constants 0 and 1). */
const INT_SIZE: Record<number, number> = { 1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8, 8: 0, 9: 0 };

function readInt(p: Buffer, at: number, size: number): number {
  if (size === 8) return Number(p.readBigInt64BE(at));
  return p.readIntBE(at, size);
}

/** A table-leaf payload's bytes kept on its page (the file format's rule). */
function localSize(total: number, u: number): number {
  const x = u - 35;
  if (total <= x) return total;
  const m = Math.floor(((u - 12) * 32) / 255) - 23;
  const k = m + ((total - m) % (u - 4));
  return k <= x ? k : m;
}

/** SQLite's varint at `at` (at most 9 bytes, none past `limit`); undefined past 2^53. */
function varint(b: Buffer, at: number, limit: number): { value: number; end: number } | undefined {
  let v = 0;
  for (let i = 0; i < 9; i++) {
    if (at + i >= limit) return undefined;
    const byte = b[at + i]!;
    if (i === 8) {
      v = v * 256 + byte;
      return Number.isSafeInteger(v) ? { value: v, end: at + 9 } : undefined;
    }
    v = v * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) return Number.isSafeInteger(v) ? { value: v, end: at + i + 1 } : undefined;
  }
  return undefined;
}

/** A page size as the header stores it (1 for 65536); undefined when it is not one. */
function sizeAt(v: number): number | undefined {
  const s = v === 1 ? 65536 : v;
  return SIZES.includes(s) ? s : undefined;
}

function tryOpen(path: string): number | undefined {
  try {
    return openSync(path, "r");
  } catch {
    return undefined;
  }
}
