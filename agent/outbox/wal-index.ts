import { closeSync, fstatSync, openSync, readSync, statSync } from "node:fs";

/**
 * Reads the outbox's WAL (`<db>-wal`) to count what the outbox writes: frames committed in the
 * current WAL and the distinct pages a checkpoint copies back. The outbox keeps its WAL index in
 * memory (exclusive locking: no `-shm` file), so the WAL itself is read. Layout
 * (sqlite.org/walformat.html, big-endian): the header's page size (u32 at 8) and salts (at 16
 * and 20), which change when the WAL restarts; frame n (from 1) starts at
 * 32 + (n - 1) × (page size + 24) with its page number (u32 at 0), the database size after a
 * commit (u32 at 4, 0 for frames that do not end a transaction) and the header's salts (at 8).
 * The frames in use are those up to the last commit frame with the header's salts. Reads
 * incrementally (only frames added since the last call); only ever reads; any failure reads as
 * "unknown" (undefined), never an error.
 */
export class WalIndex {
  private fd: number | undefined;
  private ino: number | undefined;
  private readonly head = Buffer.alloc(32);
  private readonly frame = Buffer.alloc(24);
  /** The current WAL's salts, its committed frames, and how many of them a checkpoint copied back. */
  private salt = -1;
  private salt2 = -1;
  private frames = 0;
  private backfilled = 0;

  constructor(private readonly db: string) {}

  /** Frames in the WAL, the salt that changes when it restarts, frames already checkpointed. */
  header(): { frames: number; salt: number; backfilled: number } | undefined {
    try {
      const wal = `${this.db}-wal`;
      let ino: number | undefined;
      try {
        ino = statSync(wal).ino;
      } catch {
        ino = undefined; // no WAL (yet, or truncated away): nothing in it
      }
      if (ino !== this.ino) {
        this.close();
        this.reset(-1, -1);
      }
      if (ino === undefined) return this.reset(-1, -1);
      this.fd ??= openSync(wal, "r");
      this.ino = ino;
      const size = fstatSync(this.fd).size;
      if (size < 32 || readSync(this.fd, this.head, 0, 32, 0) < 32) return this.reset(-1, -1);
      const pageSize = this.head.readUInt32BE(8);
      const salt = this.head.readUInt32BE(16);
      const salt2 = this.head.readUInt32BE(20);
      if (salt !== this.salt || salt2 !== this.salt2) this.reset(salt, salt2);
      // Frames after the last commit frame seen: counted when a commit frame ends them.
      for (let n = this.frames, at = 32 + n * (pageSize + 24); at + 24 + pageSize <= size; n++, at += pageSize + 24) {
        if (readSync(this.fd, this.frame, 0, 24, at) < 24) break;
        if (this.frame.readUInt32BE(8) !== salt || this.frame.readUInt32BE(12) !== salt2) break;
        if (this.frame.readUInt32BE(4) !== 0) this.frames = n + 1;
      }
      return { frames: this.frames, salt: this.salt, backfilled: Math.min(this.backfilled, this.frames) };
    } catch {
      this.close();
      return undefined;
    }
  }

  /** A checkpoint copied the WAL's first `frames` frames back (SQLite's `checkpointed`). */
  checkpointed(frames: number): void {
    this.backfilled = Math.max(this.backfilled, frames);
  }

  private reset(salt: number, salt2: number): { frames: number; salt: number; backfilled: number } {
    this.salt = salt;
    this.salt2 = salt2;
    this.frames = 0;
    this.backfilled = 0;
    return { frames: 0, salt, backfilled: 0 };
  }

  /** How many distinct pages frames `from` + 1 to `to` hold (what copying them back writes). */
  distinctPages(from: number, to: number, pageSize: number): number | undefined {
    if (to <= from) return 0;
    try {
      this.fd ??= openSync(`${this.db}-wal`, "r");
      const pages = new Set<number>();
      const b = Buffer.alloc(4);
      for (let n = from + 1; n <= to; n++) {
        if (readSync(this.fd, b, 0, 4, 32 + (n - 1) * (pageSize + 24)) < 4) return undefined;
        pages.add(b.readUInt32BE(0));
      }
      return pages.size;
    } catch {
      this.close();
      return undefined;
    }
  }

  close(): void {
    if (this.fd !== undefined) {
      try {
        closeSync(this.fd);
      } catch {
        /* already gone */
      }
    }
    this.fd = this.ino = undefined;
  }
}
