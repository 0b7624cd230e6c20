import { afterEach, describe, expect, it } from "vitest";
import { createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildSigned, type Envelope } from "../../../agent/core/envelope";
import { BatchSealer } from "../../../agent/events/seal";
import { rawPublicKey } from "../../../agent/core/sign";
import { exportTrust, loadSocPublicKey } from "../../../agent/keys/identity";
import { fingerprint } from "../../../agent/core/keys";
import { rotationDraft } from "../../../agent/keys/key-events";
import { RECEIVER_LIMITS } from "../../../agent/soc/bounds";
import { SocReceiver } from "../../../agent/soc/receive";
import { TrustStore } from "../../../agent/soc/trust";
import type { OutLine, ProblemLine } from "../../../agent/soc/verifier";
import { verifyFile } from "../../../agent/soc/verify-file";
import { DeviceStream } from "../../helpers/device-stream";
import { silent, tempDir } from "../../helpers/fixture";
import { generateSocKeys } from "../../../agent/keys/identity";

const DEV = "gw-shared";
const TOPIC = `gatewarden/v1/${DEV}/events`;
const fp = (k: KeyObject) => fingerprint(createPublicKey(k));
const isProblem = (l: OutLine): l is ProblemLine => "problem" in l;

/** The rotation event as the gateway writes it, at the stream's next seq. */
function rotation(d: DeviceStream, next: KeyObject): Envelope {
  const draft = rotationDraft({ public_key: rawPublicKey(createPublicKey(next)).toString("base64"), fingerprint: fp(next), old_fingerprint: fp(d.key), from_seq: d.seq + 2, by: "test" }, d.boot);
  const { env } = buildSigned({ v: 1, device: d.id, boot: d.boot, seq: ++d.seq, time: 1, mono: 1, class: "system", severity: 2, ocsf: draft.ocsf, prev: d.prev }, d.key);
  d.prev = env.hash;
  return env;
}

/**
 * Two members of one share group (each its own state and output) over one trust dir, fed
 * directly (no broker): what a round-robin broker does to a device's stream around a rotation.
 */
function group(keyWaitMs = 60_000) {
  const t = tempDir("gw-sharedkeys-");
  const trustDir = join(t.dir, "trust");
  mkdirSync(trustDir, { mode: 0o700 });
  generateSocKeys(join(trustDir, "soc.key"), join(trustDir, "soc.pub"));
  const a = generateKeyPairSync("ed25519").privateKey;
  TrustStore.add(trustDir, JSON.stringify(exportTrust(DEV, a)), "test");
  const sealer = new BatchSealer(loadSocPublicKey(join(trustDir, "soc.pub")));
  const member = (name: string) => {
    const dir = join(t.dir, name);
    mkdirSync(dir, { mode: 0o700 });
    copyFileSync(join(trustDir, "soc.key"), join(dir, "soc.key"));
    const lines: OutLine[] = [];
    const rx = new SocReceiver({ broker: "mqtt://127.0.0.1:1", dir, trustDir, share: "socs", keyWaitMs, out: join(dir, "out.jsonl"), topic: "gatewarden/v1/+/events", gapTimeoutMs: 60_000, dedupeWindow: 100_000, log: silent, onLine: (l) => lines.push(l) });
    const send = (events: Envelope[]) => rx.onMessage(TOPIC, sealer.seal({ device: DEV, from: [events[0]!.boot, events[0]!.seq], to: [events.at(-1)!.boot, events.at(-1)!.seq], count: events.length }, Buffer.from(JSON.stringify(events))));
    return { rx, lines, send, out: join(dir, "out.jsonl") };
  };
  return { t, a, trustDir, A: member("soc-a"), B: member("soc-b") };
}

describe("key rotation across the members of a share group (one trust dir)", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  it("a member that gets the new key's events before the rotation holds them, then verifies them once the other member followed it", async () => {
    const g = group();
    cleanups.push(g.t.cleanup, () => g.A.rx.stop(), () => g.B.rx.stop());
    const b = generateKeyPairSync("ed25519").privateKey;
    const d = new DeviceStream(DEV, g.a);
    g.A.send([d.firstBoot(7000), d.next(), d.next()]);
    const rot = [rotation(d, b)];
    d.key = b;
    const after1 = [d.next(), d.next()];
    const after2 = [d.next(), d.next()];
    // Round robin: B gets the new key's first batch before A has the rotation.
    g.B.send(after1);
    expect(g.B.rx.counters.held).toBe(1);
    expect(g.B.lines).toEqual([]);
    g.A.send(rot);
    // B's next batch: the trust dir changed, so the held batch is tried again first; both verify.
    g.B.send(after2);
    expect(g.B.lines.filter(isProblem)).toEqual([]);
    expect(g.B.lines.map((l) => (l as { seq: number }).seq)).toEqual([...after1, ...after2].map((e) => e.seq));
    expect(g.A.lines.filter(isProblem).map((p) => [p.problem, p.action, p.new_fingerprint])).toEqual([["trust_changed", "rotation", fp(b)]]);
    // The old key signing past the rotation is bad_signature at once, not held.
    const forged = new DeviceStream(DEV, g.a);
    Object.assign(forged, { boot: d.boot, seq: d.seq, prev: d.prev });
    g.B.send([forged.next()]);
    expect(g.B.rx.counters.held).toBe(1);
    expect(g.B.lines.filter(isProblem)).toEqual([expect.objectContaining({ problem: "bad_signature", first: d.seq + 1, detail: expect.stringMatching(/earlier key of the device/) })]);
    // soc verify over the merged outputs: every event once, the rotation followed, the forgery only.
    await g.A.rx.stop();
    await g.B.rx.stop();
    const fresh = tempDir("gw-sharedkeys-fresh-");
    cleanups.push(fresh.cleanup);
    TrustStore.add(fresh.dir, JSON.stringify(exportTrust(DEV, g.a)), "old.trust.json");
    const merged = join(fresh.dir, "merged.jsonl");
    writeFileSync(merged, [...g.A.lines, ...g.B.lines.filter((l) => !isProblem(l))].map((l) => JSON.stringify(l)).join("\n") + "\n");
    const v = await verifyFile(merged, new TrustStore(fresh.dir, Infinity, false));
    expect(v.problems).toEqual({});
    expect(v.verified).toBe(3 + 1 + 4);
    expect(v.key_changes.map((k) => k.new_fingerprint)).toEqual([fp(b)]);
  });

  it("soc verify over outputs merged by arrival time follows a rotation written after the new key's first events", async () => {
    const a = generateKeyPairSync("ed25519").privateKey;
    const b = generateKeyPairSync("ed25519").privateKey;
    const t = tempDir("gw-sharedkeys-verify-");
    cleanups.push(t.cleanup);
    TrustStore.add(t.dir, JSON.stringify(exportTrust(DEV, a)), "test");
    const d = new DeviceStream(DEV, a);
    const before = [d.firstBoot(7000), d.next()];
    const rot = rotation(d, b);
    d.key = b;
    const after = [d.next(), d.next()];
    // The member that wrote the new key's events stamped them a little earlier than the rotation's member.
    const line = (e: Envelope, at: number) => JSON.stringify({ ...e, v: undefined, verified: true, received_at: at });
    const file = join(t.dir, "merged.jsonl");
    writeFileSync(file, [...before.map((e) => line(e, 1)), ...after.map((e) => line(e, 2)), line(rot, 3)].join("\n") + "\n");
    const v = await verifyFile(file, new TrustStore(t.dir, Infinity, false));
    expect(v.problems).toEqual({});
    expect(v.verified).toBe(5);
    // A key never announced stays bad_signature at the end.
    const c = generateKeyPairSync("ed25519").privateKey;
    const rogue = new DeviceStream(DEV, c);
    Object.assign(rogue, { boot: d.boot, seq: d.seq, prev: d.prev });
    writeFileSync(file, [...before.map((e) => line(e, 1)), line(rot, 3), ...after.map((e) => line(e, 2)), line(rogue.next(), 4)].join("\n") + "\n");
    expect((await verifyFile(file, new TrustStore(t.dir, Infinity, false))).problems).toEqual({ bad_signature: 1 });
  });

  it("the wait is bounded: in time (then bad_signature) and in messages per device (past it, judged at once)", async () => {
    const g = group(0);
    cleanups.push(g.t.cleanup, () => g.A.rx.stop(), () => g.B.rx.stop());
    const d = new DeviceStream(DEV, g.a);
    g.B.send([d.firstBoot(7000)]);
    const rogue = new DeviceStream(DEV, generateKeyPairSync("ed25519").privateKey);
    Object.assign(rogue, { boot: d.boot, seq: d.seq, prev: d.prev });
    const r1 = rogue.next();
    g.B.send([r1]);
    expect(g.B.rx.counters.held).toBe(1);
    // Its wait (0 ms) is over at the next commit: judged, with nothing held any more.
    g.B.send([d.next()]);
    expect(g.B.lines.filter(isProblem)).toEqual([expect.objectContaining({ problem: "bad_signature", first: r1.seq })]);

    const h = group(60_000);
    cleanups.push(h.t.cleanup, () => h.B.rx.stop());
    const n = RECEIVER_LIMITS.heldPerDevice + 5;
    for (let i = 0; i < n; i++) h.B.send([rogue.next()]);
    expect(h.B.rx.counters.held).toBe(RECEIVER_LIMITS.heldPerDevice);
    expect(h.B.lines.filter(isProblem).map((p) => p.problem)).toEqual(Array(5).fill("bad_signature"));
    // Stopping judges what cannot be redelivered (no MQTT acknowledgement pending): nothing is dropped silently.
    await h.B.rx.stop();
    expect(h.B.lines.filter(isProblem).length).toBe(n);
  });
});
