import { describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import { createPublicKey, generateKeyPairSync } from "node:crypto";
import { DeviceStream } from "../../helpers/device-stream";
import { StreamVerifier, type OutLine, type ProblemLine } from "../../../agent/soc/verifier";

const dev = generateKeyPairSync("ed25519");

function setup(gapTimeoutMs = 1000) {
  const db = new Database(":memory:");
  const trust = { get: (d: string) => (d === "gw-1" ? createPublicKey(dev.privateKey) : undefined) };
  return new StreamVerifier(db, trust, { gapTimeoutMs, dedupeWindow: 1000 });
}
const problems = (ls: OutLine[]) => ls.filter((l): l is ProblemLine => "problem" in l);
const events = (ls: OutLine[]) => ls.filter((l) => !("problem" in l));

describe("StreamVerifier", () => {
  it("passes an in-order stream with no problem lines, across a clean reboot", () => {
    const v = setup();
    const d = new DeviceStream("gw-1", dev.privateKey);
    const out = [...v.ingest("gw-1", [d.next(), d.next(), d.next()], 0), ...v.ingest("gw-1", [d.reboot(), d.next()], 0)];
    expect(problems(out)).toEqual([]);
    expect(events(out).length).toBe(5);
    expect(v.finish(10_000)).toEqual([]);
  });

  it("reports a duplicate once and never emits the event twice", () => {
    const v = setup();
    const d = new DeviceStream("gw-1", dev.privateKey);
    const e = [d.next(), d.next()];
    v.ingest("gw-1", e, 0);
    const again = v.ingest("gw-1", [e[1]!], 0);
    expect(problems(again).map((p) => [p.problem, p.first])).toEqual([["duplicate", 1]]);
    expect(events(again)).toEqual([]);
  });

  it("reports a gap naming the exact range after the timeout, and a late arrival is not a duplicate", () => {
    const v = setup(1000);
    const d = new DeviceStream("gw-1", dev.privateKey);
    const e = Array.from({ length: 6 }, () => d.next());
    expect(problems(v.ingest("gw-1", [e[0]!, e[1]!, e[4]!, e[5]!], 0))).toEqual([]);
    expect(v.sweep(500)).toEqual([]);
    const gaps = problems(v.sweep(1500));
    expect(gaps.map((g) => [g.problem, g.boot, g.first, g.last, g.count])).toEqual([["gap", 1000, 2, 3, 2]]);
    const late = v.ingest("gw-1", [e[2]!], 2000);
    expect(problems(late)).toEqual([]);
    expect(events(late)[0]).toMatchObject({ seq: 2, late: true });
  });

  it("a hole that arrives before the timeout is no gap", () => {
    const v = setup(1000);
    const d = new DeviceStream("gw-1", dev.privateKey);
    const e = Array.from({ length: 4 }, () => d.next());
    v.ingest("gw-1", [e[0]!, e[2]!, e[3]!], 0);
    v.ingest("gw-1", [e[1]!], 100);
    expect(v.sweep(5000)).toEqual([]);
  });

  it("a loss record covers the positions it names: loss_record, no gap", () => {
    const v = setup(1000);
    const d = new DeviceStream("gw-1", dev.privateKey);
    const e = Array.from({ length: 5 }, () => d.next());
    const loss = d.next("system", { loss: { reason: "buffer_full", class: "telemetry", count: 3, ranges: [[1000, 1, 3]] } });
    const out = v.ingest("gw-1", [e[0]!, e[4]!, loss], 0);
    expect(problems(out).map((p) => [p.problem, p.first, p.last, p.count])).toEqual([["loss_record", 1, 3, 3]]);
    expect(v.sweep(10_000)).toEqual([]);
  });

  it("a loss record naming events already received says so: `received` lists them, `count` is only what is lost", () => {
    const v = setup(1000);
    const d = new DeviceStream("gw-1", dev.privateKey);
    const e = Array.from({ length: 5 }, () => d.next());
    // Delivered, then evicted by the device before the SOC's acknowledgement reached it.
    v.ingest("gw-1", e.slice(0, 3), 0);
    const loss = d.next("system", { loss: { reason: "buffer_full", class: "telemetry", count: 3, ranges: [[1000, 1, 3]] } });
    const [rec, ...rest] = problems(v.ingest("gw-1", [e[4]!, loss], 10));
    expect(rest).toEqual([]);
    expect(rec).toMatchObject({ problem: "loss_record", first: 1, last: 3, count: 1, received: { count: 2, ranges: [[1000, 1, 2]] } });
    expect(rec!.detail).toMatch(/^device reports .+; 2 of them were received before they were dropped, 1 are lost$/);
    expect(v.sweep(10_000)).toEqual([]);
  });

  it("an event named lost that arrives after its loss record is passed on, not a duplicate or a problem", () => {
    const v = setup(1000);
    const d = new DeviceStream("gw-1", dev.privateKey);
    const e = Array.from({ length: 6 }, () => d.next());
    const loss = d.next("system", { loss: { reason: "buffer_full", class: "telemetry", count: 3, ranges: [[1000, 1, 2], [1000, 4, 4]] } });
    const rec = problems(v.ingest("gw-1", [e[0]!, e[5]!, loss], 0));
    expect(rec).toMatchObject([{ problem: "loss_record", count: 3, received: { count: 0, ranges: [] } }]);
    expect(rec[0]!.detail).not.toContain("received");
    // seq 1 and 2 are settled (named lost): late; seq 4 lies above the open hole at seq 3.
    const after = v.ingest("gw-1", [e[1]!, e[4]!, e[2]!], 10);
    expect(problems(after)).toEqual([]);
    expect(events(after).map((x) => [x.seq, "late" in x])).toEqual([[1, true], [4, false], [2, true]]);
    expect(problems(v.sweep(5000)).map((p) => [p.problem, p.first, p.last])).toEqual([["gap", 3, 3]]);
  });

  it("a late event names the loss record that named it (its boot and seq); one late after a gap names none", () => {
    const v = setup(1000);
    const d = new DeviceStream("gw-1", dev.privateKey);
    const e = Array.from({ length: 8 }, () => d.next());
    const first = d.next("system", { loss: { reason: "buffer_full", class: "telemetry", count: 2, ranges: [[1000, 1, 2]] } });
    const second = d.next("system", { loss: { reason: "buffer_full", class: "telemetry", count: 1, ranges: [[1000, 4, 4]] } });
    v.ingest("gw-1", [e[0]!, e[3]!, e[7]!, first, second], 0);
    // seq 5 and 6 are never named: a gap, settled by the sweep.
    expect(problems(v.sweep(5000)).map((p) => [p.problem, p.first, p.last])).toEqual([["gap", 5, 6]]);
    const after = events(v.ingest("gw-1", [e[2]!, e[4]!, e[5]!, e[1]!], 6000));
    expect(after.map((x) => [x.seq, x.late, x.loss_record])).toEqual([
      [2, true, { boot: first.boot, seq: first.seq }],
      [4, true, { boot: second.boot, seq: second.seq }],
      [5, true, undefined],
      [1, true, { boot: first.boot, seq: first.seq }],
    ]);
    expect(after.find((x) => x.seq === 5)).not.toHaveProperty("loss_record");
  });

  it("a loss record's sent_unacknowledged is on its line with how many of those the SOC holds, and the detail says how many may still arrive", () => {
    const v = setup(1000);
    const d = new DeviceStream("gw-1", dev.privateKey);
    const e = Array.from({ length: 8 }, () => d.next());
    v.ingest("gw-1", e.slice(0, 3), 0); // 1 and 2 delivered (the device had sent 1..4)
    // A range outside the record's own is not taken as the device's word.
    const loss = d.next("system", { loss: { reason: "buffer_full", class: "telemetry", count: 6, ranges: [[1000, 1, 6]], sent_unacknowledged: { count: 4, ranges: [[1000, 1, 4], [1000, 9, 9]] } } });
    const [rec] = problems(v.ingest("gw-1", [e[7]!, loss], 10));
    expect(rec).toMatchObject({ problem: "loss_record", count: 4, received: { count: 2, ranges: [[1000, 1, 2]] }, sent_unacknowledged: { count: 4, ranges: [[1000, 1, 4]], received: 2 } });
    expect(rec!.detail).toMatch(/; 2 of them were received before they were dropped, 4 are lost; 2 the device had sent were not received \(yet\): arriving later, they are verified and marked late$/);
    const late = events(v.ingest("gw-1", [e[3]!], 20));
    expect(late).toMatchObject([{ seq: 3, late: true, loss_record: { boot: loss.boot, seq: loss.seq } }]);
    // A device that does not say what it had sent: null.
    const old = d.next("system", { loss: { reason: "buffer_full", class: "telemetry", count: 1, ranges: [[1000, 10, 10]] } });
    expect(problems(v.ingest("gw-1", [old], 30))[0]).toMatchObject({ problem: "loss_record", sent_unacknowledged: null });
  });

  it("reports the lost tail of a boot, named by the next boot event, once it has waited for a loss record", () => {
    const v = setup(1000);
    const d = new DeviceStream("gw-1", dev.privateKey);
    const e = Array.from({ length: 6 }, () => d.next());
    v.ingest("gw-1", e.slice(0, 3), 0);
    expect(problems(v.ingest("gw-1", [d.reboot()], 0))).toEqual([]);
    // seq 5 of the old boot was quarantined by the device: its loss record comes in the new boot.
    const loss = d.next("system", { loss: { reason: "corrupt_row", class: "telemetry", count: 1, ranges: [[1000, 5, 5]] } });
    expect(problems(v.ingest("gw-1", [loss], 10)).map((p) => p.problem)).toEqual(["loss_record"]);
    expect(problems(v.sweep(500))).toEqual([]);
    expect(problems(v.sweep(1500)).map((p) => [p.problem, p.boot, p.first, p.last])).toEqual([["gap", 1000, 3, 4]]);
    expect(v.sweep(5000)).toEqual([]);
  });

  it("without continuity checks (a shared-subscription member), holes are not gaps", () => {
    const db = new Database(":memory:");
    const v = new StreamVerifier(db, { get: () => createPublicKey(dev.privateKey) }, { gapTimeoutMs: 0, dedupeWindow: 1000, continuity: false });
    const d = new DeviceStream("gw-1", dev.privateKey);
    const e = Array.from({ length: 6 }, () => d.next());
    expect(problems(v.ingest("gw-1", [e[0]!, e[3]!, e[5]!], 0))).toEqual([]);
    expect(v.sweep(10_000)).toEqual([]);
    expect(problems(v.ingest("gw-1", [e[3]!], 0)).map((p) => p.problem)).toEqual(["duplicate"]);
  });

  it("bad hash, bad signature, malformed, unknown device and fork are each named", () => {
    const v = setup();
    const d = new DeviceStream("gw-1", dev.privateKey);
    const e0 = d.next();
    const e1 = d.next();
    const e2 = d.next();
    const forged = new DeviceStream("gw-1", generateKeyPairSync("ed25519").privateKey);
    forged.seq = 2;
    forged.prev = e2.hash;
    const out = v.ingest("gw-1", [e0, { ...e1, time: 99 }, forged.next(), { hello: 1 }], 0);
    expect(problems(out).map((p) => p.problem)).toEqual(["bad_hash", "bad_signature", "malformed"]);
    expect(problems(v.ingest("gw-9", [e2], 0)).map((p) => p.problem)).toEqual(["unknown_device"]);
    // A different, validly signed event at a position already received: a fork.
    const alt = new DeviceStream("gw-1", dev.privateKey);
    const a0 = alt.next("audit");
    expect(problems(v.ingest("gw-1", [a0], 0)).map((p) => p.problem)).toEqual(["fork"]);
    // An event whose prev does not link to the event before it: a fork (chain break).
    const v2 = setup();
    const c = new DeviceStream("gw-1", dev.privateKey);
    const c0 = c.next();
    c.prev = "ab".repeat(32);
    expect(problems(v2.ingest("gw-1", [c0, c.next()], 0)).map((p) => p.problem)).toEqual(["fork"]);
  });

  it("a stream first seen after its start is a gap from seq 0, also for a boot before the first one seen", () => {
    const v = setup(1000);
    const d = new DeviceStream("gw-1", dev.privateKey);
    const e = Array.from({ length: 8 }, () => d.next());
    expect(problems(v.ingest("gw-1", e.slice(2), 0))).toEqual([]);
    expect(problems(v.sweep(1500)).map((g) => [g.problem, g.boot, g.first, g.last])).toEqual([["gap", 1000, 0, 1]]);
    // A receiver that meets the device at a later boot: the boot its boot event names is missing.
    const v2 = setup(1000);
    expect(problems(v2.ingest("gw-1", [d.reboot(), d.next()], 0))).toEqual([]);
    expect(problems(v2.finish(0)).map((g) => [g.problem, g.boot, g.first, g.last])).toEqual([["gap", 1000, 0, 7]]);
  });

  it("two streams under one identity are a clone, naming both boots", () => {
    const other = () => new DeviceStream("gw-1", dev.privateKey);
    // A second first boot (a copied key directory on a second host) restarts the chain from the
    // all-zero hash: a chain_reset (a device whose outbox was reset looks the same), naming both.
    const v = setup();
    const a = other();
    v.ingest("gw-1", [a.firstBoot(1000), a.next()], 0);
    const b = other();
    const second = problems(v.ingest("gw-1", [b.firstBoot(1005)], 0));
    expect(second.map((p) => [p.problem, p.boots])).toEqual([["chain_reset", [1000, 1005]]]);
    // The old chain going on after the reset: both are alive, a clone.
    const v3 = setup();
    const a3 = other();
    v3.ingest("gw-1", [a3.firstBoot(1000), a3.next()], 0);
    expect(problems(v3.ingest("gw-1", [other().firstBoot(1005)], 0)).map((p) => p.problem)).toEqual(["chain_reset"]);
    expect(problems(v3.ingest("gw-1", [a3.next()], 0)).map((p) => [p.problem, p.boots])).toEqual([["clone", [1000, 1005]]]);
    // A boot epoch going backwards.
    expect(problems(v.ingest("gw-1", [a.reboot()], 0)).map((p) => [p.problem, p.boots])).toEqual([["clone", [1001, 1005]]]);
    // Interleaved boots: boot 1000 continued as 1001, and then 1000 goes on (a copied outbox).
    const v2 = setup();
    const c = other();
    v2.ingest("gw-1", [c.firstBoot(2000), c.next(), c.next()], 0);
    const fork = new DeviceStream("gw-1", dev.privateKey);
    Object.assign(fork, { boot: c.boot, seq: c.seq, prev: c.prev });
    expect(problems(v2.ingest("gw-1", [c.reboot(), c.next()], 0))).toEqual([]);
    const past = problems(v2.ingest("gw-1", [fork.next(), fork.next()], 0));
    expect(past.map((p) => [p.problem, p.boot, p.first, p.boots])).toEqual([["clone", 2000, 3, [2000, 2001]]]);
  });

  it("two boots continuing one boot are a clone", () => {
    const v = setup();
    const c = new DeviceStream("gw-1", dev.privateKey);
    v.ingest("gw-1", [c.firstBoot(2000), c.next(), c.next()], 0);
    const twin = new DeviceStream("gw-1", dev.privateKey);
    Object.assign(twin, { boot: 2002, seq: -1, prev: c.prev });
    expect(problems(v.ingest("gw-1", [c.reboot()], 0))).toEqual([]);
    const second = twin.next("system", { boot: { previous_boot: 2000, previous_last_seq: 2 } });
    expect(problems(v.ingest("gw-1", [second], 0)).map((p) => [p.problem, p.boots])).toEqual([["clone", [2001, 2002]]]);
  });

  it("a boot that ran past what its successor says was committed is a fork (not a clone), reported at the boot event", () => {
    const v = setup();
    const d = new DeviceStream("gw-1", dev.privateKey);
    const s = [d.firstBoot(3000), d.next(), d.next(), d.next()];
    v.ingest("gw-1", s, 0);
    // The device lost seq 2..3 from its storage and restarted from seq 1.
    d.seq = 1;
    d.prev = s[1]!.hash;
    const out = problems(v.ingest("gw-1", [d.reboot()], 0));
    expect(out.map((p) => [p.problem, p.boot, p.first, p.last])).toEqual([["fork", 3000, 2, 3]]);
  });
});
