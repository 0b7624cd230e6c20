import { createHash } from "node:crypto";
import { closeSync, constants, openSync, readFileSync, writeSync } from "node:fs";
import { giveToDirOwner } from "../core/dirs";

/** The chain head as the second copy keeps it: where the chain is, and what was delivered. */
export interface HeadRecord {
  boot: number;
  seq: number;
  hash: string;
  /** The highest position the broker acknowledged, when known. */
  acked?: [number, number];
  /** The previous boot and the last seq it committed, as this boot's boot event named them. */
  prev?: [number, number];
}

/** One record, padded: a rewrite in place never changes the file's size. */
const SIZE = 512;

/**
 * A second copy of the outbox's chain head, beside it (`<outbox>.head`), rewritten in place
 * after every commit and acknowledgement (one small write, no fsync: it survives a killed
 * process like the WAL does). When the outbox is damaged, replaced or loses its WAL, this copy
 * says how far the chain had got, so the next boot continues the chain and names what was lost
 * instead of starting over. Each record carries a checksum; a torn or edited copy is ignored.
 */
export class HeadCopy {
  private fd: number | undefined;
  private last: HeadRecord | undefined;
  failures = 0;

  constructor(readonly file: string) {}

  /** The copy on disk, or undefined when it is missing, torn or not ours. */
  static read(file: string): HeadRecord | undefined {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch {
      return undefined;
    }
    const m = /^(\{.*\}) ([0-9a-f]{16})\s*$/s.exec(text);
    if (!m || checksum(m[1]!) !== m[2]) return undefined;
    try {
      const r = JSON.parse(m[1]!) as HeadRecord;
      if (!Number.isSafeInteger(r.boot) || !Number.isSafeInteger(r.seq) || typeof r.hash !== "string") return undefined;
      return r;
    } catch {
      return undefined;
    }
  }

  /** Rewrites the copy; a failure is counted, never thrown (the outbox is the store of record). */
  write(r: Partial<HeadRecord>): void {
    const next = { ...this.last, ...r } as HeadRecord;
    if (next.hash === undefined) return;
    this.last = next;
    const json = JSON.stringify(next);
    const line = `${json} ${checksum(json)}\n`;
    const buf = Buffer.alloc(SIZE, " ");
    buf.write(line);
    try {
      if (this.fd === undefined) {
        this.fd = openSync(this.file, constants.O_RDWR | constants.O_CREAT, 0o600);
        giveToDirOwner(this.file);
      }
      writeSync(this.fd, buf, 0, SIZE, 0);
    } catch {
      this.failures++;
      this.close();
    }
  }

  /** Sets fields for the next write without writing (`acked` and `prev` carry over until rewritten). */
  note(r: Partial<HeadRecord> | undefined): void {
    this.last = { ...this.last, ...r } as HeadRecord;
  }

  close(): void {
    if (this.fd === undefined) return;
    try {
      closeSync(this.fd);
    } catch {
      /* already gone */
    }
    this.fd = undefined;
  }
}

function checksum(s: string): string {
  return createHash("sha256").update(s).digest("hex").slice(0, 16);
}
