import { afterAll, describe, expect, it } from "vitest";
import { generateKeyPairSync } from "node:crypto";
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, truncateSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { Recorder } from "../../../agent/events/recorder";
import { storedBodyHashOk } from "../../../agent/core/envelope";
import type { EventDraft } from "../../../agent/core/events";
import { incidentDrafts, openOutbox } from "../../../agent/outbox/open";
import { scanPages } from "../../../agent/outbox/page-scan";
import { salvage } from "../../../agent/outbox/salvage";
import { LOSS_RANK, Outbox, type Row } from "../../../agent/outbox/store";
import { OutboxWatch } from "../../../agent/outbox/watch";
import { silent, tempDir } from "../../helpers/fixture";

const { privateKey } = generateKeyPairSync("ed25519");
const MB = 1024 ** 2;

const audit = (n: number): EventDraft => ({ class: "audit", severity: 2, ocsf: { class_uid: 4001, activity_id: 1, message: `audit ${n}`, unmapped: { pad: "y".repeat(400) } } });
const recorderOn = (outbox: Outbox) => new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 5, maxPending: 1000, log: silent });

/**
 * An open outbox at `dir` holding a boot event and `n` audit events, with its recorder.
 * `pageSize`: the file's, set before the outbox creates it (SQLite keeps an existing file's).
 */
function recording(dir: string, n: number, pageSize?: number) {
  const path = join(dir, "outbox.db");
  if (pageSize) {
    mkdirSync(dir, { recursive: true });
    const db = new Database(path);
    db.pragma(`page_size = ${pageSize}`);
    db.pragma("journal_mode = WAL");
    db.close();
  }
  const outbox = new Outbox(path, 64 * MB);
  const rec = recorderOn(outbox);
  const boot = rec.start().env!.boot;
  for (let i = 0; i < n; i++) rec.record(audit(i));
  rec.flush();
  return { path, outbox, rec, boot };
}

/** The same, closed. Returns its chain head. */
function filled(dir: string, n: number, pageSize?: number) {
  const { path, outbox } = recording(dir, n, pageSize);
  const head = outbox.head()!;
  outbox.close();
  return { path, head };
}

type Body = { boot: number; seq: number; ocsf: { unmapped?: { error_type?: string; loss?: { reason: string; ranges: [number, number, number][] } } } };

describe("a damaged outbox never stops the start", () => {
  const t = tempDir();
  afterAll(t.cleanup);

  const cut = (f: string) => truncateSync(f, Math.floor((statSync(f).size * 0.6) / 4096) * 4096);
  const damages: [string, (file: string) => void, number?][] = [
    ["a page with flipped bytes", (f) => flip(f, Math.floor(statSync(f).size / 2 / 4096) * 4096 + 100, 2000)],
    ["a file cut to 60 %", cut],
    // Its events tree's level-1 interior pages are allocated late and fall in the cut part:
    // SQLite reaches none of the leaves before the cut, the page scan reads them.
    ["a file of 1 KiB pages cut to 60 %", cut, 1024],
    // No page size to read by: the page scan finds the one that gives verifying rows.
    ["a zeroed header", (f) => flip(f, 0, 100, true)],
  ];

  it.each(damages)("%s: moved aside, the rest salvaged into a new outbox, the loss named and signed", (name, damage, pageSize) => {
    const dir = join(t.dir, name.replace(/\W+/g, "-"));
    const { path, head } = filled(dir, 1500, pageSize);
    damage(path);
    const o = openOutbox(path, 64 * MB, silent);
    expect(o.mode).toBe("disk");
    expect(o.incident?.kind).toBe("damaged");
    if (o.incident?.kind !== "damaged") return;
    // Kept for forensics, beside the new file.
    expect(existsSync(o.incident.moved_to)).toBe(true);
    expect(readdirSync(dir).some((f) => f.startsWith("outbox.db.damaged-"))).toBe(true);
    expect(o.outbox.integrityCheck()).toBe("ok");
    const lost = o.incident.lost.reduce((n, l) => n + l.count, 0);
    // Every position of the chain is recovered or named lost: nothing vanishes silently.
    expect(o.incident.rows_recovered + lost).toBe(head.seq + 1);
    // Every row behind a zeroed header (no page of the table is damaged); at least the rows in
    // what is left of a cut file (60 %) or beside a damaged page.
    if (name === "a zeroed header") expect(o.incident.rows_recovered).toBe(head.seq + 1);
    else expect(o.incident.rows_recovered).toBeGreaterThan((head.seq + 1) / 2);
    // The chain continues from where it was (the head's second copy), not from zero.
    const rec = recorderOn(o.outbox);
    const boot = rec.start({}, o.knownHead).env!;
    // How that run ended was noted in the damaged file, not in the new one: not known, and said so.
    expect(boot.ocsf.unmapped).toMatchObject({ boot: { previous_boot: head.boot, previous_last_seq: head.seq, previous_hash: head.hash, previous_end: "unknown" } });
    for (const d of incidentDrafts(o.incident, path)) rec.record(d);
    rec.flush();
    const bodies = o.outbox.readAfter(0, 100_000).map((r) => JSON.parse(r.body) as Body);
    const mine = bodies.filter((b) => b.boot === boot.boot);
    expect(mine[1]?.ocsf.unmapped?.error_type).toBe("outbox_damaged");
    const ranges = mine.flatMap((b) => (b.ocsf.unmapped?.loss?.reason === "outbox_damaged" ? b.ocsf.unmapped.loss.ranges : []));
    expect(ranges.reduce((n, r) => n + r[2] - r[1] + 1, 0)).toBe(lost);
    o.outbox.close();
  });

  it("an outbox behind its head's second copy (an older file put back): the chain continues from the copy, the gap is named", () => {
    const dir = join(t.dir, "behind");
    const { path, outbox, rec } = recording(dir, 10);
    outbox.checkpoint();
    copyFileSync(path, join(dir, "old.db"));
    for (let i = 0; i < 20; i++) rec.record(audit(100 + i));
    rec.flush();
    const head = outbox.head()!;
    outbox.close();
    copyFileSync(join(dir, "old.db"), path);
    const o = openOutbox(path, 64 * MB, silent);
    expect(o.incident).toMatchObject({ kind: "behind", copy_head: head, outbox_head: { boot: head.boot, seq: 10 } });
    if (o.incident?.kind !== "behind") return;
    expect(o.incident.lost).toEqual([{ class: "system", count: 20, ranges: [[head.boot, 11, 30]] }]);
    expect(o.knownHead).toEqual(head);
    o.outbox.close();
  });

  it("unusable storage gives an outbox in memory, said to be so", () => {
    const dir = join(t.dir, "unusable");
    // A directory where the file should be: SQLite cannot open it (SQLITE_CANTOPEN): not
    // damage, and nothing to move aside.
    const path = join(dir, "outbox.db");
    filled(dir, 1);
    unlinkSync(path);
    for (const s of ["-wal", "-shm"]) if (existsSync(path + s)) unlinkSync(path + s);
    mkdirSync(path);
    const o = openOutbox(path, 64 * MB, silent);
    expect(o.mode).toBe("memory");
    expect(o.incident?.kind).toBe("unavailable");
    expect(o.outbox.path).toBe(":memory:");
    const rec = recorderOn(o.outbox);
    rec.start({}, o.knownHead);
    rec.flush();
    expect(o.outbox.stats().depth).toBe(1);
    o.outbox.close();
  });
});

describe("salvage reads rows SQLite cannot reach", () => {
  const t = tempDir();
  afterAll(t.cleanup);

  /** The events tree's interior pages (and the page size), read before the damage. */
  const interior = (path: string) => {
    const db = new Database(path, { readonly: true });
    const pages = db.prepare("SELECT pageno FROM dbstat WHERE name = 'events' AND pagetype = 'internal' ORDER BY pageno").pluck().all() as number[];
    const size = db.pragma("page_size", { simple: true }) as number;
    db.close();
    return { pages, size };
  };
  const positions = (o: ReturnType<typeof openOutbox>) => {
    if (o.incident?.kind !== "damaged") throw new Error(`no salvage: ${JSON.stringify(o.incident)}`);
    return { recovered: o.incident.rows_recovered, lost: o.incident.lost.reduce((n, l) => n + l.count, 0) };
  };

  it("every row under a zeroed interior page of the events tree is salvaged", () => {
    const { path, head } = filled(join(t.dir, "interior"), 1500);
    const { pages, size } = interior(path);
    expect(pages.length).toBeGreaterThan(0);
    for (const p of pages) flip(path, (p - 1) * size, size, true);
    const o = openOutbox(path, 64 * MB, silent);
    expect(positions(o)).toEqual({ recovered: head.seq + 1, lost: 0 });
    const seqs = o.outbox.readAfter(0, 100_000).map((r) => r.seq);
    expect(seqs).toEqual([...Array(head.seq + 1).keys()]);
    o.outbox.close();
  });

  it("a file cut at its events tree's first interior page below the root keeps the rows of the leaves before it", () => {
    const { path, head } = filled(join(t.dir, "interior-cut"), 1500, 1024);
    const { pages, size } = interior(path);
    // The root is the table's first page; the interior pages below it came when it split.
    expect(pages.length).toBeGreaterThan(1);
    const at = pages[1]!;
    const db = new Database(path, { readonly: true });
    const leaves = db.prepare("SELECT COUNT(*) FROM dbstat WHERE name = 'events' AND pagetype = 'leaf' AND pageno < ?").pluck().get(at) as number;
    db.close();
    expect(leaves).toBeGreaterThan(0);
    truncateSync(path, (at - 1) * size);
    const o = openOutbox(path, 64 * MB, silent);
    const { recovered, lost } = positions(o);
    // SQLite reaches none of them (the root's children are cut off); every leaf left holds rows.
    expect(recovered).toBeGreaterThanOrEqual(leaves);
    expect(recovered + lost).toBe(head.seq + 1);
    o.outbox.close();
  });

  it("delivered rows left in freed pages are not sent again", () => {
    const { path, outbox, rec, boot } = recording(join(t.dir, "delivered"), 1500);
    outbox.ackThrough(boot, 1000);
    for (let i = 0; i < 10; i++) rec.record(audit(2000 + i));
    rec.flush();
    const head = outbox.head()!;
    outbox.close();
    flip(path, 0, 100, true);
    // The freed pages still hold delivered rows: a scan that did not know the delivered
    // position would bring them back.
    expect(salvage(path).rows.some((r) => r.seq <= 1000)).toBe(true);
    const o = openOutbox(path, 64 * MB, silent);
    expect(positions(o)).toEqual({ recovered: head.seq - 1000, lost: 0 });
    const seqs = o.outbox.readAfter(0, 100_000).map((r) => r.seq);
    expect(seqs).toEqual([...Array(head.seq - 1000).keys()].map((i) => 1001 + i));
    o.outbox.close();
  });

  it("rows committed to a WAL that SQLite stops reading early (a damaged frame) are salvaged from it", () => {
    const dir = join(t.dir, "wal");
    const { path, outbox, rec } = recording(dir, 500);
    outbox.checkpoint();
    for (let i = 0; i < 300; i++) rec.record(audit(500 + i));
    rec.flush();
    const head = outbox.head()!;
    // What a power cut now leaves: the file, its WAL with the last 300 rows, the head's copy.
    const copy = join(dir, "cut");
    mkdirSync(copy);
    const file = join(copy, "outbox.db");
    for (const s of ["", "-wal", ".head"]) copyFileSync(path + s, file + s);
    outbox.close();
    expect(statSync(`${file}-wal`).size).toBeGreaterThan(300 * 400);
    // The first frame's checksum damaged: SQLite reads none of the WAL (the frames behind it are
    // whole, of the WAL's salt, committed), and the file's header is gone too.
    flip(`${file}-wal`, 32 + 16, 8);
    flip(file, 0, 100, true);
    // Closing its first connection, SQLite deleted the WAL it found nothing valid in: the start
    // kept a second name for it, and the WAL is moved aside with the file.
    const o = openOutbox(file, 64 * MB, silent);
    expect(positions(o)).toEqual({ recovered: head.seq + 1, lost: 0 });
    expect(o.outbox.readAfter(0, 100_000).map((r) => r.seq)).toEqual([...Array(head.seq + 1).keys()]);
    if (o.incident?.kind === "damaged") expect(statSync(`${o.incident.moved_to}-wal`).size).toBeGreaterThan(300 * 400);
    expect(readdirSync(copy).filter((f) => f.endsWith(".kept"))).toEqual([]);
    o.outbox.close();
  });

  it("salvaged rows beyond what the new outbox can hold are named lost, not counted as recovered", () => {
    const { path, head } = filled(join(t.dir, "budget"), 1500);
    flip(path, 0, 100, true);
    // A smaller budget than the damaged file had (the operator lowered buffer.max_bytes).
    const o = openOutbox(path, 1 * MB, silent);
    const { recovered, lost } = positions(o);
    expect(recovered).toBeGreaterThan(0);
    expect(recovered).toBeLessThan(head.seq + 1);
    expect(o.outbox.stats().depth).toBe(recovered);
    expect(recovered + lost).toBe(head.seq + 1);
    o.outbox.close();
  });

  it.each(["pending", "committed"])("rows the outbox evicted (their loss record %s) are not brought back from freed pages", (state) => {
    const dir = join(t.dir, `evicted-${state}`);
    mkdirSync(dir, { recursive: true });
    const path = join(dir, "outbox.db");
    const outbox = new Outbox(path, 4 * MB);
    const rec = recorderOn(outbox);
    rec.start();
    for (let i = 0; i < 6000; i++) {
      rec.record(audit(i));
      if (i % 200 === 0) rec.flush();
    }
    rec.flush();
    if (state === "committed") rec.nameEvictions();
    const pending = (outbox.db.prepare("SELECT ranges FROM loss_pending").pluck().all() as string[]).flatMap((r) => JSON.parse(r) as [number, number, number][]);
    const named = (outbox.db.prepare("SELECT body FROM events WHERE rank = ?").pluck().all(LOSS_RANK) as string[]).flatMap((b) => (JSON.parse(b) as Body).ocsf.unmapped!.loss!.ranges);
    expect(state === "committed" ? [pending.length, named.length > 0] : [pending.length > 0, named.length]).toEqual(state === "committed" ? [0, true] : [true, 0]);
    const evicted = [...pending, ...named];
    const head = outbox.head()!;
    outbox.close();
    const { pages, size } = interior(path);
    for (const p of pages.slice(1)) flip(path, (p - 1) * size, size, true);
    // Freed pages keep some of them: the page scan alone finds them.
    const inRange = (seq: number) => evicted.some(([, from, to]) => seq >= from && seq <= to);
    expect(scanPages(path, { end: Date.now() + 10_000 }).rows.some((r) => inRange(r.seq))).toBe(true);
    const o = openOutbox(path, 4 * MB, silent);
    const { recovered, lost } = positions(o);
    const rows = o.outbox.readAfter(0, 100_000);
    expect(rows.length).toBe(recovered);
    expect(recovered).toBeGreaterThan(0);
    expect(rows.filter((r) => inRange(r.seq))).toEqual([]);
    expect(recovered + lost).toBe(head.seq + 1);
    o.outbox.close();
  });

  it("random bytes written over the file's pages never make the page scan throw; what it returns verifies", () => {
    const { path } = filled(join(t.dir, "random"), 300);
    const whole = readFileSync(path);
    let seed = 7;
    const rnd = (n: number) => Math.floor(((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000) * n);
    let rows = 0;
    for (let k = 0; k < 60; k++) {
      const b = Buffer.from(whole);
      for (let i = rnd(200); i >= 0; i--) b[rnd(b.length)] = rnd(256);
      if (k % 3 === 0) b.fill(0, 0, 100);
      const file = join(t.dir, "random", `copy-${k}.db`);
      writeFileSync(file, k % 5 === 4 ? b.subarray(0, rnd(b.length)) : b);
      const got = scanPages(file, { end: Date.now() + 10_000 });
      for (const r of got.rows) expect(storedBodyHashOk(r.body)).toBe(true);
      expect(new Set(got.rows.map((r) => `${r.boot}:${r.seq}`)).size).toBe(got.rows.length);
      rows += got.rows.length;
    }
    expect(rows).toBeGreaterThan(0);
  });

  it("a row's record shape decides: an envelope in the quarantine table is not an event", () => {
    const { path } = filled(join(t.dir, "shape"), 3);
    const src = new Database(path, { readonly: true });
    const rows = src.prepare("SELECT id, boot, seq, rank, time, bytes, body FROM events ORDER BY id").all() as Row[];
    src.close();
    const other = join(t.dir, "shape", "quarantine.db");
    const db = new Database(other);
    db.exec("CREATE TABLE quarantine (id INTEGER PRIMARY KEY, boot INTEGER, seq INTEGER, rank INTEGER, reason TEXT NOT NULL, at INTEGER NOT NULL, body BLOB)");
    for (const r of rows) db.prepare("INSERT INTO quarantine VALUES (?, ?, ?, ?, 'test', 0, ?)").run(r.id, r.boot, r.seq, r.rank, Buffer.from(r.body));
    db.close();
    expect(scanPages(other, { end: Date.now() + 10_000 }).rows).toEqual([]);
    const found = scanPages(path, { end: Date.now() + 10_000 });
    expect(found.rows.map((r) => [r.id, r.seq, r.body.toString()]).sort((a, b) => Number(a[0]) - Number(b[0]))).toEqual(rows.map((r) => [r.id, r.seq, r.body]));
  });
});

describe("the outbox's files changing under the running daemon", () => {
  const t = tempDir();
  afterAll(t.cleanup);

  it.each(["WAL deleted", "database deleted", "database replaced"])("%s: noticed, saved, reported; nothing committed is lost", (what) => {
    const dir = join(t.dir, what.replace(/\W+/g, "-"));
    const path = join(dir, "outbox.db");
    const outbox = new Outbox(path, 64 * MB);
    const rec = recorderOn(outbox);
    rec.start();
    const reports: EventDraft[] = [];
    const watch = new OutboxWatch(outbox, silent, (d) => reports.push(d));
    for (let i = 0; i < 50; i++) rec.record(audit(i));
    rec.flush();
    watch.check();
    expect(reports).toHaveLength(0);
    if (what === "WAL deleted") unlinkSync(`${path}-wal`);
    else unlinkSync(path);
    if (what === "database replaced") writeFileSync(path, "not an outbox");
    for (let i = 0; i < 50; i++) rec.record(audit(50 + i));
    rec.flush();
    watch.check();
    expect(reports).toHaveLength(1);
    expect(reports[0]!.ocsf.unmapped).toMatchObject({ error_type: "outbox_files_changed", outbox: { saved: true } });
    for (let i = 0; i < 10; i++) rec.record(audit(100 + i));
    rec.flush();
    const head = outbox.head()!;
    outbox.close();
    // What a SIGKILL now would leave: the files on disk hold every event committed.
    const again = new Outbox(path, 64 * MB);
    expect(again.head()).toEqual(head);
    expect(again.stats().depth).toBe(111);
    again.close();
    if (what === "database replaced") expect(readdirSync(dir).some((f) => f.startsWith("outbox.db.foreign-"))).toBe(true);
  });
});

function flip(file: string, at: number, len: number, zero = false): void {
  const fd = openSync(file, "r+");
  const buf = Buffer.alloc(len);
  if (!zero) {
    const orig = readFileSync(file).subarray(at, at + len);
    for (let i = 0; i < len; i++) buf[i] = (orig[i] ?? 0) ^ 0xa5;
  }
  writeSync(fd, buf, 0, len, at);
  closeSync(fd);
}
