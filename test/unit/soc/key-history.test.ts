import { describe, expect, it } from "vitest";
import Database from "better-sqlite3";
import { createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildSigned, type Envelope } from "../../../agent/core/envelope";
import { rawPublicKey } from "../../../agent/core/sign";
import { exportTrust } from "../../../agent/keys/identity";
import { fingerprint } from "../../../agent/core/keys";
import { farewellDraft, rotationDraft } from "../../../agent/keys/key-events";
import { TrustStore } from "../../../agent/soc/trust";
import { StreamVerifier, type OutLine, type ProblemLine } from "../../../agent/soc/verifier";
import { verifyFile } from "../../../agent/soc/verify-file";
import { DeviceStream } from "../../helpers/device-stream";
import { tempDir } from "../../helpers/fixture";

const DEV = "gw-keys";
const fp = (k: KeyObject) => fingerprint(createPublicKey(k));

/** The rotation event as the gateway writes it (agent/keys/key-events.ts), at the stream's next seq. */
function rotation(d: DeviceStream, next: KeyObject): Envelope {
  const pub = createPublicKey(next);
  const draft = rotationDraft({ public_key: rawPublicKey(pub).toString("base64"), fingerprint: fp(next), old_fingerprint: fp(d.key), from_seq: d.seq + 2, by: "test" }, d.boot);
  return signedDraft(d, draft.ocsf);
}

function signedDraft(d: DeviceStream, ocsf: Record<string, unknown>): Envelope {
  const { env } = buildSigned({ v: 1, device: d.id, boot: d.boot, seq: ++d.seq, time: 1, mono: 1, class: "system", severity: 2, ocsf, prev: d.prev }, d.key);
  d.prev = env.hash;
  return env;
}

/** A SOC dir trusting `key` for DEV, a receiver-like verifier over it, and its output lines. */
function soc(key: KeyObject) {
  const t = tempDir("gw-keyhist-");
  TrustStore.add(t.dir, JSON.stringify(exportTrust(DEV, key)), "test");
  const store = new TrustStore(t.dir, 0);
  const v = new StreamVerifier(new Database(":memory:"), store, { gapTimeoutMs: 60_000, dedupeWindow: 100_000 });
  const lines: OutLine[] = [];
  const out = join(t.dir, "out.jsonl");
  const feed = (events: Envelope[], at: number) => {
    const got = v.ingest(DEV, events, at);
    lines.push(...got);
    appendFileSync(out, got.map((l) => JSON.stringify(l)).join("\n") + (got.length ? "\n" : ""));
  };
  return { t, store, lines, out, feed, problems: () => lines.filter((l): l is ProblemLine => "problem" in l) };
}

describe("key history followed from the device's own events", () => {
  it("a rotation signed by the trusted key is followed online and in soc verify alike; the old key after it is bad_signature", async () => {
    const a = generateKeyPairSync("ed25519").privateKey;
    const b = generateKeyPairSync("ed25519").privateKey;
    const d = new DeviceStream(DEV, a);
    const s = soc(a);
    try {
      const before = [d.firstBoot(5000), d.next(), d.next()];
      const rot = rotation(d, b);
      const rotSeq = rot.seq;
      d.key = b;
      const after = [d.next(), d.next(), d.next()];
      s.feed([...before, rot], 1);
      s.feed(after, 2);
      expect(s.problems().map((p) => [p.problem, p.action, p.old_fingerprint, p.new_fingerprint])).toEqual([["trust_changed", "rotation", fp(a), fp(b)]]);
      expect(s.lines.filter((l) => !("problem" in l)).length).toBe(7);
      // The trust store keeps the history: A up to the announcement, B from the next seq.
      const listed = s.store.list()[0]!;
      expect(listed.keys.map((k) => [k.fingerprint, k.from_boot, k.from_seq ?? null, k.until_boot, k.until_seq ?? null])).toEqual([
        [fp(a), null, null, 5000, rotSeq],
        [fp(b), 5000, rotSeq + 1, null, null],
      ]);
      expect(s.store.loggedChanges().map((l) => l.change)).toEqual([expect.objectContaining({ action: "rotation", old_fingerprint: fp(a), new_fingerprint: fp(b), boot: 5000 })]);
      // A copy of the old key signing past the rotation point.
      const forged = new DeviceStream(DEV, a);
      Object.assign(forged, { boot: d.boot, seq: d.seq, prev: d.prev });
      const f = forged.next();
      s.feed([f], 3);
      expect(s.problems().at(-1)).toMatchObject({ problem: "bad_signature", boot: 5000, first: f.seq });

      // soc verify over the output with a fresh SOC dir that trusts only the old key: it follows
      // the chain the same way, and agrees (a forged event line is bad_signature there too).
      const fresh = tempDir("gw-keyhist-fresh-");
      try {
        TrustStore.add(fresh.dir, JSON.stringify(exportTrust(DEV, a)), "test");
        const r = await verifyFile(s.out, new TrustStore(fresh.dir, Infinity, false));
        expect(r.problems).toEqual({});
        expect(r.verified).toBe(7);
        expect(r.key_changes.map((k) => [k.action, k.old_fingerprint, k.new_fingerprint])).toEqual([["rotation", fp(a), fp(b)]]);
        // Nothing written by soc verify.
        expect(new TrustStore(fresh.dir, 0).list()[0]!.keys.length).toBe(1);
        // With the receiver's own trust dir (which already holds the rotation): the same result.
        const r2 = await verifyFile(s.out, new TrustStore(s.t.dir, Infinity, false));
        expect([r2.verified, r2.problems, r2.key_changes.length]).toEqual([7, {}, 1]);
        appendFileSync(s.out, JSON.stringify({ ...f, v: undefined, verified: true, received_at: 4 }) + "\n");
        const r3 = await verifyFile(s.out, new TrustStore(fresh.dir, Infinity, false));
        expect(r3.problems).toEqual({ bad_signature: 1 });
      } finally {
        fresh.cleanup();
      }
    } finally {
      s.t.cleanup();
    }
  });

  it("a rotation announced by a key that is no longer current is not followed, and says so", () => {
    const a = generateKeyPairSync("ed25519").privateKey;
    const b = generateKeyPairSync("ed25519").privateKey;
    const c = generateKeyPairSync("ed25519").privateKey;
    const s = soc(a);
    try {
      // The SOC replaced A by C from boot 6000 on; an old boot's event announcing B comes late.
      TrustStore.add(s.t.dir, JSON.stringify(exportTrust(DEV, c)), "c.json", { fromBoot: 6000 });
      s.store.reload();
      const d = new DeviceStream(DEV, a);
      s.feed([d.firstBoot(5000), rotation(d, b)], 1);
      expect(s.problems().map((p) => [p.problem, p.followed])).toEqual([["trust_changed", false]]);
      expect(s.store.list()[0]!.keys.map((k) => k.fingerprint)).toEqual([fp(a), fp(c)]);
    } finally {
      s.t.cleanup();
    }
  });

  it("a farewell retires the device: anything later from it is retired_device, online and in soc verify", async () => {
    const a = generateKeyPairSync("ed25519").privateKey;
    const d = new DeviceStream(DEV, a);
    const s = soc(a);
    try {
      const copy = new DeviceStream(DEV, a);
      s.feed([d.firstBoot(5000), d.next(), signedDraft(d, farewellDraft({ by: "ops@host", fingerprint: fp(a), reason: "decommission" }, "0.0.0").ocsf)], 1);
      expect(s.problems().map((p) => [p.problem, p.action])).toEqual([["trust_changed", "retire"]]);
      expect(s.store.list()[0]!.retired).toMatchObject({ boot: 5000, seq: 2 });
      Object.assign(copy, { boot: d.boot, seq: d.seq, prev: d.prev });
      // A copy of its key goes on (same boot), and later starts a new boot.
      const later = [copy.next(), copy.reboot()];
      const lines = s.lines.length;
      s.feed(later, 2);
      expect(s.lines.slice(lines).map((l) => ["problem" in l ? l.problem : "event", l.boot])).toEqual([
        ["retired_device", 5000],
        ["retired_device", 5001],
      ]);
      // soc verify over the output and the late events as event lines (as a receiver that
      // never saw the farewell would have written them): the same verdicts.
      for (const e of later) appendFileSync(s.out, JSON.stringify({ ...e, v: undefined, verified: true, received_at: 3 }) + "\n");
      const fresh = tempDir("gw-keyhist-fresh-");
      try {
        TrustStore.add(fresh.dir, JSON.stringify(exportTrust(DEV, a)), "test");
        const r = await verifyFile(s.out, new TrustStore(fresh.dir, Infinity, false));
        expect(r.problems).toEqual({ retired_device: 2 });
        expect(r.verified).toBe(3);
        expect(r.key_changes.map((k) => k.action)).toEqual(["retire"]);
      } finally {
        fresh.cleanup();
      }
      // Trusting it again (re-admitting the device) starts after the farewell's boot.
      const b = generateKeyPairSync("ed25519").privateKey;
      writeFileSync(join(s.t.dir, "b.json"), JSON.stringify(exportTrust(DEV, b)));
      const r = TrustStore.add(s.t.dir, readFileSync(join(s.t.dir, "b.json"), "utf8"), "b.json");
      expect(r.from_boot).toBe(5001);
      expect(new TrustStore(s.t.dir, 0).retired(DEV)).toBeUndefined();
    } finally {
      s.t.cleanup();
    }
  });
});
