import { existsSync, linkSync, renameSync, rmSync } from "node:fs";
import type { Logger } from "pino";
import { describeError, isDaemonError } from "../core/errors";
import { OcsfClass } from "../core/events";
import { lossDrafts } from "../events/recorder";
import type { EventDraft } from "../core/events";
import type { EvictedRange } from "./store";
import { HeadCopy, type HeadRecord } from "./head-copy";
import { announcedKey, salvage } from "./salvage";
import { Outbox, type ChainHead } from "./store";

/** What happened to the outbox before this boot, for the boot's first events. */
export type OutboxIncident =
  | { kind: "damaged"; error: string; moved_to: string; rows_recovered: number; rows_bad: number; lost: EvictedRange[]; unknown_boots: boolean }
  | { kind: "unavailable"; error: string; memory_budget: number }
  | { kind: "behind"; outbox_head: ChainHead | null; copy_head: ChainHead; lost: EvictedRange[]; unknown_boots: boolean };

export interface OpenedOutbox {
  outbox: Outbox;
  mode: "disk" | "memory";
  /** The head to chain from when it is not the outbox's own (its second copy was ahead). */
  knownHead: ChainHead | undefined;
  /** SQLite's quick_check of the outbox that is used ("ok" after a salvage: the new file). */
  check: string;
  incident: OutboxIncident | undefined;
}

/** An outbox in memory when the file cannot be used at all: bounded, and said to be so. */
const MEMORY_BUDGET = 16 * 1024 ** 2;

/**
 * Opens the daemon's outbox; fails only when another process holds the file (OUTBOX_LOCKED,
 * after waiting up to `waitMs` for it: two writers would fork the chain), so the Modbus proxy and
 * its policy start whatever state the file is in. A file SQLite finds damaged (or that fails its quick_check) is moved
 * aside with its WAL and shared-memory files (kept for forensics, `<path>.damaged-<time>`),
 * what still verifies is salvaged into a new outbox, and the positions that could not be are
 * named. Storage that cannot be written at all (read-only, full, gone) gives an outbox in
 * memory. An outbox behind its chain head's second copy (a deleted WAL, a file replaced by an
 * older one) keeps its rows, and the chain continues from the copy with the gap named.
 */
export function openOutbox(path: string, maxBytes: number, log: Logger, o: { now?: number; waitMs?: number } = {}): OpenedOutbox {
  const now = o.now ?? Date.now();
  const copy = HeadCopy.read(`${path}.head`);
  const kept = keepWal(path);
  try {
    return openOrSalvage(path, maxBytes, log, copy, kept, now, o.waitMs ?? 0);
  } finally {
    if (kept) forget(kept);
  }
}

function openOrSalvage(path: string, maxBytes: number, log: Logger, copy: HeadRecord | undefined, kept: string | undefined, now: number, waitMs: number): OpenedOutbox {
  let outbox: Outbox | undefined;
  let damage: string | undefined;
  try {
    outbox = openWaiting(path, maxBytes, log, waitMs);
    const check = outbox.db.pragma("quick_check", { simple: true }) as string;
    if (check !== "ok") damage = `quick_check: ${check}`;
    else {
      // SQLite opens a file it may not write read-only without a word: write, and roll back.
      outbox.probeWrite();
      const head = outbox.head();
      if (copy && before(head, copy)) {
        const { lost, unknownBoots } = lostRanges(copy, head ? [head.boot, head.seq] : copy.acked, []);
        log.error({ outbox_head: head ?? null, copy_head: headOf(copy) }, "The outbox is behind its chain head's second copy: committed events are gone (a deleted WAL or a replaced file).");
        return { outbox, mode: "disk", knownHead: headOf(copy), check, incident: { kind: "behind", outbox_head: head ?? null, copy_head: headOf(copy), lost, unknown_boots: unknownBoots } };
      }
      return { outbox, mode: "disk", knownHead: undefined, check, incident: undefined };
    }
  } catch (e) {
    // Held by another process: the caller refuses to start (runtime.ts), it does not run in memory.
    if (isDaemonError(e, "OUTBOX_LOCKED")) throw e;
    if (!isDamage(e)) return inMemory(path, maxBytes, log, copy, e, outbox);
    damage = describeError(cause(e));
  }
  // Damaged: move it aside (kept) and start a new outbox with what can be saved.
  if (outbox?.db.open) outbox.db.close();
  const aside = `${path}.damaged-${new Date(now).toISOString().replace(/[:.]/g, "-")}`;
  try {
    for (const suffix of ["", "-wal", "-shm"]) if (existsSync(path + suffix)) renameSync(path + suffix, aside + suffix);
    if (kept && !existsSync(`${aside}-wal`)) renameSync(kept, `${aside}-wal`);
  } catch (e) {
    return inMemory(path, maxBytes, log, copy, e, undefined);
  }
  log.error({ err: damage, moved_to: aside }, "The outbox is damaged: moved aside; salvaging what verifies into a new outbox.");
  const got = salvage(aside, copy?.acked);
  let fresh: Outbox;
  try {
    fresh = new Outbox(path, maxBytes);
  } catch (e) {
    return inMemory(path, maxBytes, log, copy, e, undefined);
  }
  const last = got.rows[got.rows.length - 1];
  const lastHead = last ? { boot: last.boot, seq: last.seq, hash: hashOf(last.body) } : undefined;
  const head = [got.head, copy ? headOf(copy) : undefined, lastHead].reduce<ChainHead | undefined>((a, b) => (b && (!a || before(a, b)) ? b : a), undefined);
  // A rotation announced in the salvaged rows stays announced (the next start promotes its key)
  // when its announcement is stored.
  const { stored, error } = fresh.adopt(got.rows, head, (n) => (n === got.rows.length ? got.signingKey : announcedKey(got.rows.slice(0, n))));
  if (error !== undefined) log.error({ err: describeError(error), rows_stored: stored }, "Could not store every salvaged row: the rest stay in the moved file and are named lost.");
  const recovered = got.rows.slice(0, stored).map((r) => [r.boot, r.seq] as [number, number]);
  const { lost, unknownBoots } = head ? lostRanges({ ...head, ...(copy?.prev ? { prev: copy.prev } : {}) }, copy?.acked, recovered) : { lost: [], unknownBoots: true };
  log.warn({ rows_recovered: stored, rows_bad: got.bad, rows_scanned: got.scanned, lost: lost.map((l) => l.count) }, "New outbox started after salvage.");
  return {
    outbox: fresh,
    mode: "disk",
    knownHead: undefined,
    check: "ok",
    incident: { kind: "damaged", error: damage ?? got.error ?? "unknown", moved_to: aside, rows_recovered: stored, rows_bad: got.bad, lost, unknown_boots: unknownBoots },
  };
}

/**
 * A second name for the WAL while the start first opens the file (removed after): closing a
 * connection to a damaged file lets SQLite delete its WAL when it finds no frame it accepts (a
 * damaged frame ends what SQLite reads of it), and salvage reads the committed frames behind.
 */
function keepWal(path: string): string | undefined {
  const kept = `${path}-wal.kept`;
  try {
    forget(kept); // left by a start that ended in between
    if (!existsSync(`${path}-wal`)) return undefined;
    linkSync(`${path}-wal`, kept);
    return kept;
  } catch {
    return undefined; // a read-only directory: the open says what it can
  }
}

function forget(file: string): void {
  try {
    rmSync(file, { force: true });
  } catch {
    /* a read-only directory: the next start removes it */
  }
}

/**
 * Opens the file, waiting up to `waitMs` for a process that holds it without naming itself in
 * the outbox's lock (the daemon took the lock first: see runtime.ts); says so before it waits.
 */
function openWaiting(path: string, maxBytes: number, log: Logger, waitMs: number): Outbox {
  try {
    return new Outbox(path, maxBytes);
  } catch (e) {
    if (!waitMs || !isDaemonError(e, "OUTBOX_LOCKED")) throw e;
    log.warn({ err: describeError(e), wait_ms: waitMs }, `The outbox is held by another process; waiting up to ${waitMs / 1000} s for it to end (buffer.lock_wait_ms).`);
    return new Outbox(path, maxBytes, waitMs);
  }
}

function inMemory(path: string, maxBytes: number, log: Logger, copy: HeadRecord | undefined, e: unknown, open: Outbox | undefined): OpenedOutbox {
  if (open?.db.open) open.db.close();
  const error = describeError(cause(e));
  const budget = Math.min(maxBytes, MEMORY_BUDGET);
  log.error({ err: error, path, memory_budget: budget }, "The outbox cannot be opened: keeping events in memory (lost if the daemon stops before they are delivered).");
  return { outbox: new Outbox(":memory:", budget), mode: "memory", knownHead: copy ? headOf(copy) : undefined, check: "ok", incident: { kind: "unavailable", error, memory_budget: budget } };
}

/** SQLite's verdicts that mean the file's content is damaged (not that storage fails). */
function isDamage(e: unknown): boolean {
  const code = (cause(e) as { code?: unknown }).code;
  return typeof code === "string" && /^SQLITE_(CORRUPT|NOTADB)/.test(code);
}

function cause(e: unknown): unknown {
  return e instanceof Error && e.cause !== undefined ? e.cause : e;
}

const headOf = (r: HeadRecord): ChainHead => ({ boot: r.boot, seq: r.seq, hash: r.hash });

function before(a: Pick<ChainHead, "boot" | "seq"> | undefined, b: Pick<ChainHead, "boot" | "seq">): boolean {
  return !a || a.boot < b.boot || (a.boot === b.boot && a.seq < b.seq);
}

function hashOf(body: string): string {
  return (JSON.parse(body) as { hash: string }).hash;
}

/**
 * Positions committed up to `head` that are neither delivered (up to `acked`) nor among the
 * `kept` rows, as loss ranges per boot. A boot's end is known for the head's boot, for the boot
 * before it (the copy's `prev`) and from kept rows; boots in between that left no trace cannot
 * be named (`unknownBoots`).
 */
export function lostRanges(head: HeadRecord, acked: [number, number] | undefined, kept: readonly [number, number][]): { lost: EvictedRange[]; unknownBoots: boolean } {
  const keptBy = new Map<number, Set<number>>();
  const lastBy = new Map<number, number>();
  for (const [b, s] of kept) {
    let set = keptBy.get(b);
    if (!set) keptBy.set(b, (set = new Set()));
    set.add(s);
    lastBy.set(b, Math.max(lastBy.get(b) ?? -1, s));
  }
  lastBy.set(head.boot, head.seq);
  if (head.prev) lastBy.set(head.prev[0], Math.max(lastBy.get(head.prev[0]) ?? -1, head.prev[1]));
  if (acked) lastBy.set(acked[0], Math.max(lastBy.get(acked[0]) ?? -1, acked[1]));
  const boots = [...lastBy.keys()].filter((b) => !acked || b >= acked[0]).sort((a, b) => a - b);
  const ranges: [number, number, number][] = [];
  for (const b of boots) {
    const from = acked && acked[0] === b ? acked[1] + 1 : 0;
    const set = keptBy.get(b);
    let start: number | undefined;
    for (let s = from; s <= lastBy.get(b)!; s++) {
      const gone = !set?.has(s);
      if (gone && start === undefined) start = s;
      if (!gone && start !== undefined) {
        ranges.push([b, start, s - 1]);
        start = undefined;
      }
    }
    if (start !== undefined) ranges.push([b, start, lastBy.get(b)!]);
  }
  // Boots between the delivered position (or the oldest kept one) and the head left no trace
  // unless each is the next of the one before.
  const unknownBoots = boots.length > 1 && !(boots.length === 2 && head.prev !== undefined && head.prev[0] === boots[0]);
  const count = ranges.reduce((n, r) => n + r[2] - r[1] + 1, 0);
  return { lost: count ? [{ class: "system", count, ranges }] : [], unknownBoots };
}

/** The first events of a boot after an outbox incident: what happened, then the signed loss records. */
export function incidentDrafts(i: OutboxIncident, path: string): EventDraft[] {
  const event = (message: string, detail: Record<string, unknown>): EventDraft => ({
    class: "system",
    severity: 5,
    ocsf: { class_uid: OcsfClass.ApplicationLifecycle, activity_id: 99, message, unmapped: { error_type: `outbox_${i.kind}`, stage: "recording", outbox: { path, ...detail } } },
  });
  const lostCount = (l: EvictedRange[]) => l.reduce((n, e) => n + e.count, 0);
  const unknown = (u: boolean) => (u ? "; boots in between left no trace and cannot be named" : "");
  if (i.kind === "unavailable") {
    return [event(`The outbox ${path} cannot be opened (${i.error}): events are kept in memory (at most ${i.memory_budget} bytes) and are lost if the daemon stops before they are delivered`, { error: i.error, memory_budget: i.memory_budget })];
  }
  if (i.kind === "damaged") {
    const { lost, ...rest } = i;
    return [
      event(`The outbox was damaged (${i.error}): moved aside to ${i.moved_to} and a new one started; ${i.rows_recovered} stored event(s) recovered (signed, sent again), ${i.rows_bad} failed their hash check, ${lostCount(lost)} position(s) lost${unknown(i.unknown_boots)}`, { ...rest, positions_lost: lostCount(lost) }),
      ...lossDrafts(lost, "outbox_damaged", `moved aside to ${i.moved_to}`),
    ];
  }
  const { lost, ...rest } = i;
  const at = (h: ChainHead | null) => (h ? `${h.boot}:${h.seq}` : "nothing");
  return [
    event(`The outbox lost committed events: it ends at ${at(i.outbox_head)} but its chain head's second copy is at ${at(i.copy_head)} (a deleted WAL or a replaced file); the chain continues from the copy and ${lostCount(lost)} position(s) are named lost${unknown(i.unknown_boots)}`, { ...rest, positions_lost: lostCount(lost) }),
    ...lossDrafts(lost, "outbox_lost"),
  ];
}
