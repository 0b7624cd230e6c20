import { closeSync, existsSync, fsyncSync, openSync, readFileSync, rmSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { DaemonError, isDaemonError } from "../agent/core/errors";
import { writeFileAtomic } from "../agent/core/secret-files";
import { makeDirs } from "../agent/core/dirs";

/**
 * Durable update state in `update.state_dir`:
 * - `counter.json`: the anti-rollback counter of the last committed release. Raised only when
 *   an update commits, never lowered; written as temp file + fsync + rename + fsync of the
 *   directory, so a power cut leaves the old or the new value, never a torn or lost one.
 * - `pending.json`: the release installed and waiting for its health verdict after a reboot.
 * An unreadable file fails closed (UPDATE_STATE): no install is judged against a guess.
 */
export interface Committed {
  counter: number;
  version: string | null;
  time: string | null;
}

export interface Pending {
  engine: string;
  version: string;
  counter: number;
  /** The slot or release folder that was written (engine's name for it). */
  target: string | null;
  /** What was running before (for engine-less roll back). */
  previous: string | null;
  time: string;
}

/** Replaces `path` atomically (owner-only) and fsyncs its directory, so the rename itself is durable. */
export function writeDurable(path: string, text: string): void {
  const dir = dirname(path);
  makeDirs(dir, "update state directory");
  writeFileAtomic(path, text, 0o600);
  fsyncDir(dir);
}

export function fsyncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * The JSON object in the state file `path`. Anything else (unreadable, not JSON, `null`, an
 * array, not a regular file: a FIFO is never opened, so never waited on) is UPDATE_STATE
 * naming the file; the caller never falls back to a default (a lost counter is not counter 0).
 */
function readObject(path: string): Record<string, unknown> {
  const refuse = (why: string) => new DaemonError("UPDATE_STATE", `${path} ${why}; refusing to judge updates without it`);
  let text: string;
  try {
    if (!statSync(path).isFile()) throw refuse("is not a regular file");
    text = readFileSync(path, "utf8");
  } catch (e) {
    if (isDaemonError(e)) throw e;
    throw refuse(`cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    throw refuse("cannot be read (not JSON)");
  }
  if (typeof o !== "object" || o === null || Array.isArray(o)) throw refuse(`holds ${o === null ? "null" : Array.isArray(o) ? "an array" : `a ${typeof o}`}, not a JSON object`);
  return o as Record<string, unknown>;
}

export class UpdateState {
  constructor(readonly dir: string) {}

  get counterFile(): string {
    return join(this.dir, "counter.json");
  }

  get pendingFile(): string {
    return join(this.dir, "pending.json");
  }

  committed(): Committed {
    if (!existsSync(this.counterFile)) return { counter: 0, version: null, time: null };
    const o = readObject(this.counterFile) as Partial<Committed>;
    if (!Number.isSafeInteger(o.counter) || (o.counter as number) < 0) throw new DaemonError("UPDATE_STATE", `${this.counterFile}: "counter" is not a non-negative integer`);
    return { counter: o.counter as number, version: typeof o.version === "string" ? o.version : null, time: typeof o.time === "string" ? o.time : null };
  }

  /** Raises the counter to `counter` (no-op when equal); refuses to lower it. */
  commit(counter: number, version: string): Committed {
    const cur = this.committed();
    if (counter < cur.counter) throw new DaemonError("RELEASE_ROLLBACK", `counter ${counter} is below the committed ${cur.counter}; the counter never decreases`);
    const next = { counter, version, time: new Date().toISOString() };
    writeDurable(this.counterFile, JSON.stringify(next) + "\n");
    return next;
  }

  pending(): Pending | undefined {
    if (!existsSync(this.pendingFile)) return undefined;
    const o = readObject(this.pendingFile) as Partial<Pending>;
    if (typeof o.engine !== "string" || typeof o.version !== "string" || !Number.isSafeInteger(o.counter)) {
      throw new DaemonError("UPDATE_STATE", `${this.pendingFile} is malformed: "engine" and "version" must be strings, "counter" an integer`);
    }
    return o as Pending;
  }

  setPending(p: Pending): void {
    writeDurable(this.pendingFile, JSON.stringify(p) + "\n");
  }

  clearPending(): void {
    if (!existsSync(this.pendingFile)) return;
    rmSync(this.pendingFile);
    fsyncDir(this.dir);
  }
}
