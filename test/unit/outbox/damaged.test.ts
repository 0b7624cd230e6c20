import { afterAll, describe, expect, it } from "vitest";
import { generateKeyPairSync } from "node:crypto";
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, truncateSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { Recorder } from "../../../agent/events/recorder";
import type { EventDraft } from "../../../agent/core/events";
import { incidentDrafts, openOutbox } from "../../../agent/outbox/open";
import { Outbox } from "../../../agent/outbox/store";
import { OutboxWatch } from "../../../agent/outbox/watch";
import { silent, tempDir } from "../../helpers/fixture";

const { privateKey } = generateKeyPairSync("ed25519");
const MB = 1024 ** 2;

const audit = (n: number): EventDraft => ({ class: "audit", severity: 2, ocsf: { class_uid: 4001, activity_id: 1, message: `audit ${n}`, unmapped: { pad: "y".repeat(400) } } });
const recorderOn = (outbox: Outbox) => new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 5, maxPending: 1000, log: silent });

/** An outbox at `dir` holding a boot event and `n` audit events, closed. Returns its chain head. */
function filled(dir: string, n: number) {
  const outbox = new Outbox(join(dir, "outbox.db"), 64 * MB);
  const rec = recorderOn(outbox);
  rec.start();
  for (let i = 0; i < n; i++) rec.record(audit(i));
  rec.flush();
  const head = outbox.head()!;
  outbox.close();
  return { path: join(dir, "outbox.db"), head };
}

type Body = { boot: number; seq: number; ocsf: { unmapped?: { error_type?: string; loss?: { reason: string; ranges: [number, number, number][] } } } };

describe("a damaged outbox never stops the start", () => {
  const t = tempDir();
  afterAll(t.cleanup);

  const damages: [string, (file: string) => void][] = [
    ["a page with flipped bytes", (f) => flip(f, Math.floor(statSync(f).size / 2 / 4096) * 4096 + 100, 2000)],
    ["a file cut to 60 %", (f) => truncateSync(f, Math.floor((statSync(f).size * 0.6) / 4096) * 4096)],
    ["a zeroed header", (f) => flip(f, 0, 100, true)],
  ];

  it.each(damages)("%s: moved aside, the rest salvaged into a new outbox, the loss named and signed", (name, damage) => {
    const dir = join(t.dir, name.replace(/\W+/g, "-"));
    const { path, head } = filled(dir, 1500);
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
    if (name === "a zeroed header") expect(o.incident.rows_recovered).toBe(0);
    else expect(o.incident.rows_recovered).toBeGreaterThan(0);
    // The chain continues from where it was (the head's second copy), not from zero.
    const rec = recorderOn(o.outbox);
    const boot = rec.start({}, o.knownHead).env!;
    expect(boot.ocsf.unmapped).toMatchObject({ boot: { previous_boot: head.boot, previous_last_seq: head.seq, previous_hash: head.hash } });
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
    const path = join(dir, "outbox.db");
    const outbox = new Outbox(path, 64 * MB);
    const rec = recorderOn(outbox);
    rec.start();
    for (let i = 0; i < 10; i++) rec.record(audit(i));
    rec.flush();
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
