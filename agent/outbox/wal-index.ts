import { closeSync, openSync, readSync } from "node:fs";

/**
 * Reads SQLite's WAL index (`<db>-shm`) and the WAL's frame headers, to count what the outbox
 * writes: frames appended per transaction and the distinct pages a checkpoint copies back.
 * Layout (sqlite.org/walformat.html): the index header's `mxFrame` (u32 at 16) and first salt
 * (u32 at 32) in native byte order, the checkpoint info's `nBackfill` (u32 at 96); in the WAL,
 * frame n (from 1) starts at 32 + (n - 1) × (page size + 24) with its page number (big-endian).
 * Only ever reads; any failure reads as "unknown" (undefined), never an error.
 */
export class WalIndex {
  private shm: number | undefined;
  private walFd: number | undefined;
  private readonly head = Buffer.alloc(100);

  constructor(private readonly db: string) {}

  /** Frames in the WAL, the salt that changes when it restarts, frames already checkpointed. */
  header(): { frames: number; salt: number; backfilled: number } | undefined {
    try {
      this.shm ??= openSync(`${this.db}-shm`, "r");
      if (readSync(this.shm, this.head, 0, 100, 0) < 100) return undefined;
      const le = this.head.readUInt8(13) === 0; // bigEndCksum: 0 on little-endian machines
      const u32 = (at: number) => (le ? this.head.readUInt32LE(at) : this.head.readUInt32BE(at));
      return { frames: u32(16), salt: u32(32), backfilled: u32(96) };
    } catch {
      this.close();
      return undefined;
    }
  }

  /** How many distinct pages frames `from` + 1 to `to` hold (what copying them back writes). */
  distinctPages(from: number, to: number, pageSize: number): number | undefined {
    if (to <= from) return 0;
    try {
      this.walFd ??= openSync(`${this.db}-wal`, "r");
      const pages = new Set<number>();
      const b = Buffer.alloc(4);
      for (let n = from + 1; n <= to; n++) {
        if (readSync(this.walFd, b, 0, 4, 32 + (n - 1) * (pageSize + 24)) < 4) return undefined;
        pages.add(b.readUInt32BE(0));
      }
      return pages.size;
    } catch {
      this.close();
      return undefined;
    }
  }

  close(): void {
    for (const fd of [this.shm, this.walFd]) {
      if (fd === undefined) continue;
      try {
        closeSync(fd);
      } catch {
        /* already gone */
      }
    }
    this.shm = this.walFd = undefined;
  }
}
