import { afterAll, describe, expect, it } from "vitest";
import { createPublicKey, generateKeyPairSync } from "node:crypto";
import { join } from "node:path";
import pino from "pino";
import { Recorder } from "../../../agent/events/recorder";
import { checkEnvelope, type Envelope } from "../../../agent/core/envelope";
import type { EventDraft } from "../../../agent/core/events";
import { MAX_EVENT_BYTES } from "../../../agent/events/fit";
import { Outbox } from "../../../agent/outbox/store";
import { tempDir } from "../../helpers/fixture";

// One event larger than a commit may write (or than the broker takes) used to fail every
// commit from then on: it stayed at the head of the queue, every event behind it waited in
// memory until shed, and the evictions tried for it took the boot event. Now it is recorded
// with its largest values removed and a note, and everything behind it commits.

const { privateKey } = generateKeyPairSync("ed25519");
const pub = createPublicKey(privateKey);
const MIN_BUDGET = 1024 ** 2; // the smallest buffer.max_bytes the config accepts

type Truncated = { original_bytes: number; limit_bytes: number; removed: string[] };
type Body = Envelope & { ocsf: { message: string; unmapped?: Record<string, unknown> & { truncated?: Truncated } } };

function open(dir: string, name: string, budget: number) {
  const lines: { level: number; msg: string; original_bytes?: number }[] = [];
  const log = pino({ level: "info" }, { write: (s: string) => void lines.push(JSON.parse(s) as { level: number; msg: string }) });
  const outbox = new Outbox(join(dir, name, "outbox.db"), budget);
  const recorder = new Recorder({ outbox, key: privateKey, device: "gw-t", version: "test", flushMs: 5, maxPending: 500, log });
  recorder.start();
  const bodies = () => outbox.readAfter(0, 1000).map((r) => ({ bytes: Buffer.byteLength(r.body), body: JSON.parse(r.body) as Body }));
  return { outbox, recorder, lines, bodies };
}

const small: EventDraft = { class: "finding", severity: 4, ocsf: { class_uid: 2004, activity_id: 1, message: "after the large one" } };

describe("the size bound of one event", () => {
  const t = tempDir();
  afterAll(t.cleanup);

  it("a 700 KB event at the smallest budget commits with its largest value removed; the events behind it commit too", () => {
    const { recorder, lines, bodies } = open(t.dir, "files", MIN_BUDGET);
    const files = Array.from({ length: 20_000 }, (_, i) => `/usr/lib/gatewarden/dist/module-${i}.js`);
    recorder.record({ class: "audit", severity: 5, ocsf: { class_uid: 5001, activity_id: 2, message: "20000 files changed", unmapped: { files, root: "/usr/lib/gatewarden" } } });
    recorder.record(small);
    recorder.flush();
    expect(recorder.counters).toMatchObject({ commit_errors: 0, evicted: 0, truncated: 1, committed: 3 });
    const all = bodies();
    expect(all.map((b) => b.body.seq)).toEqual([0, 1, 2]); // the boot event is still there
    for (const b of all) expect(checkEnvelope(b.body, pub)).toBe("ok");
    const big = all[1]!;
    expect(big.bytes).toBeLessThanOrEqual(recorder.maxEventBytes);
    expect(recorder.maxEventBytes).toBeLessThanOrEqual(MAX_EVENT_BYTES);
    expect(big.body).toMatchObject({ class: "audit", severity: 5, ocsf: { class_uid: 5001, activity_id: 2, message: "20000 files changed" } });
    const note = big.body.ocsf.unmapped!.truncated!;
    expect(note.original_bytes).toBeGreaterThan(700_000);
    expect(note.removed).toEqual(["unmapped.files"]);
    expect(big.body.ocsf.unmapped!.root).toBe("/usr/lib/gatewarden"); // what fits is kept
    expect(String(big.body.ocsf.unmapped!.files)).toMatch(/^\[removed: \d+ bytes/);
    expect(all[2]!.body.ocsf.message).toBe("after the large one");
    const warn = lines.filter((l) => l.level === 40);
    expect(warn).toHaveLength(1);
    expect(warn[0]!.msg).toMatch(/larger than one event may be/);
    expect(warn[0]!.original_bytes).toBe(note.original_bytes);
    expect(JSON.stringify(warn)).not.toContain("module-1.js"); // sizes and paths, never the contents
  });

  it("removes the smallest value that is enough: one element of a list, not the list", () => {
    const { recorder, bodies } = open(t.dir, "one", 256 * 1024 ** 2);
    const items = ["a", "b", "x".repeat(200_000), "c"];
    recorder.record({ class: "finding", severity: 3, ocsf: { class_uid: 2004, activity_id: 1, message: "one long value", unmapped: { items } } });
    recorder.flush();
    const big = bodies()[1]!;
    expect(big.bytes).toBeLessThanOrEqual(MAX_EVENT_BYTES);
    expect(big.body.ocsf.unmapped!.truncated!.removed).toEqual(["unmapped.items[2]"]);
    expect((big.body.ocsf.unmapped!.items as string[]).filter((_, i) => i !== 2)).toEqual(["a", "b", "c"]);
  });

  it("a megabyte message is cut to 4096 characters; multi-byte text is measured in bytes", () => {
    const { recorder, bodies } = open(t.dir, "message", 256 * 1024 ** 2);
    recorder.record({ class: "system", severity: 2, ocsf: { class_uid: 6002, activity_id: 99, message: "é".repeat(1_000_000) } });
    recorder.record({ class: "system", severity: 2, ocsf: { class_uid: 6002, activity_id: 99, message: "ok", unmapped: { peer: "ü".repeat(40_000) } } });
    recorder.flush();
    const [, cut, multi] = bodies();
    expect(cut!.body.ocsf.message).toMatch(/^é{4096}… \[cut from 1000000 characters\]$/);
    expect(cut!.body.ocsf.unmapped!.truncated!.removed).toEqual(["message (cut)"]);
    // 40,000 characters but 80,000 bytes: over the bound, found by its bytes.
    expect(multi!.bytes).toBeLessThanOrEqual(MAX_EVENT_BYTES);
    expect(multi!.body.ocsf.unmapped!.truncated!.removed).toEqual(["unmapped.peer"]);
    expect(recorder.counters.truncated).toBe(2);
  });

  it("thousands of small attributes: the bare event, with the note", () => {
    const { recorder, bodies } = open(t.dir, "keys", MIN_BUDGET);
    const ocsf: Record<string, unknown> = { class_uid: 2004, activity_id: 1, message: "many keys" };
    for (let i = 0; i < 5000; i++) ocsf[`k${i}`] = i;
    recorder.record({ class: "finding", severity: 4, ocsf: ocsf as EventDraft["ocsf"] });
    recorder.record(small);
    recorder.flush();
    const all = bodies();
    expect(all).toHaveLength(3);
    const bare = all[1]!.body.ocsf as Record<string, unknown>;
    expect(bare.k0).toBeUndefined();
    expect(bare.message).toBe("many keys");
    expect((bare.unmapped as { truncated: Truncated }).truncated.removed).toEqual(["every attribute but class_uid, activity_id and message"]);
    expect(checkEnvelope(all[1]!.body, pub)).toBe("ok");
  });

  it("an event within the bound is recorded as it is", () => {
    const { recorder, bodies } = open(t.dir, "fits", MIN_BUDGET);
    const unmapped = { pad: "y".repeat(8000) };
    recorder.record({ class: "finding", severity: 4, ocsf: { class_uid: 2004, activity_id: 1, message: "fits", unmapped } });
    recorder.flush();
    expect(bodies()[1]!.body.ocsf.unmapped).toEqual(unmapped);
    expect(recorder.counters.truncated).toBe(0);
  });
});
