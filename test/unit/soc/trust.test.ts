import { describe, expect, it } from "vitest";
import { createPublicKey, generateKeyPairSync } from "node:crypto";
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { isDaemonError } from "../../../agent/core/errors";
import { rawPublicKey } from "../../../agent/core/sign";
import { exportTrust } from "../../../agent/keys/identity";
import { TrustStore } from "../../../agent/soc/trust";
import { tempDir } from "../../helpers/fixture";

const trustText = (device: string) => {
  const k = generateKeyPairSync("ed25519").privateKey;
  return { text: JSON.stringify(exportTrust(device, k)), raw: rawPublicKey(createPublicKey(k)) };
};
const raw = (k: ReturnType<TrustStore["get"]>) => (k ? rawPublicKey(k) : undefined);

describe("trust store", () => {
  it("refuses a second key without replace; with it, each key verifies the boots it was trusted for, and the change is logged", () => {
    const t = tempDir();
    try {
      const a = trustText("cab-17");
      const b = trustText("cab-17");
      TrustStore.add(t.dir, a.text, "a.json");
      // The same key again is no change.
      expect(TrustStore.add(t.dir, a.text, "a.json").replaced).toBeNull();
      let err: unknown;
      try {
        TrustStore.add(t.dir, b.text, "b.json");
      } catch (e) {
        err = e;
      }
      expect(isDaemonError(err, "TRUST_CONFLICT")).toBe(true);
      expect(String((err as Error).message)).toMatch(/--replace/);
      const r = TrustStore.add(t.dir, b.text, "b.json", { fromBoot: 2000 });
      expect(r.replaced).toMatch(/^sha256:/);
      const s = new TrustStore(t.dir, 0);
      expect(raw(s.get("cab-17", 1999))).toEqual(a.raw);
      expect(raw(s.get("cab-17", 2000))).toEqual(b.raw);
      expect(raw(s.get("cab-17"))).toEqual(b.raw);
      const changes = s.loggedChanges().map((l) => l.change);
      expect(changes).toEqual([expect.objectContaining({ device: "cab-17", action: "replace", boot: 2000, new_fingerprint: r.fingerprint, old_fingerprint: r.replaced })]);
      expect(changes[0]!.by).toMatch(/@/);
      // Removal: no current key, old boots still verify.
      TrustStore.remove(t.dir, "cab-17", 2100);
      const s2 = new TrustStore(t.dir, 0);
      expect(s2.get("cab-17")).toBeUndefined();
      expect(raw(s2.get("cab-17", 2100))).toEqual(b.raw);
      expect(s2.get("cab-17", 2101)).toBeUndefined();
      expect(s2.list()).toEqual([expect.objectContaining({ device: "cab-17", removed_at: expect.any(Number) })]);
      expect(s2.loggedChanges().slice(1).map((l) => l.change).map((c) => c.action)).toEqual(["remove"]);
    } finally {
      t.cleanup();
    }
  });

  it("a change log torn by a power cut mid-append: the torn line is no change, and the next change replaces it", () => {
    const t = tempDir();
    try {
      const a = trustText("cab-18");
      TrustStore.add(t.dir, a.text, "a.json");
      TrustStore.add(t.dir, trustText("cab-18").text, "b.json", { fromBoot: 10 });
      const log = join(t.dir, "trusted", "changes.jsonl");
      appendFileSync(log, '{"at":1,"by":"root@soc","dev');
      const s = new TrustStore(t.dir, 0);
      expect(s.loggedChanges().map((l) => l.change).map((c) => c.action)).toEqual(["replace"]);
      TrustStore.remove(t.dir, "cab-18", 20);
      expect(s.loggedChanges().map((l) => l.change).map((c) => c.action)).toEqual(["replace", "remove"]);
      expect(readFileSync(log, "utf8")).not.toContain('"dev{');
    } finally {
      t.cleanup();
    }
  });

  it("keys each change by its content: stable across reads and edits above it, distinct for equal lines", () => {
    const t = tempDir();
    try {
      mkdirSync(join(t.dir, "trusted"), { recursive: true });
      const log = join(t.dir, "trusted", "changes.jsonl");
      const line = (device: string) => JSON.stringify({ at: 1, by: "root@soc", device, action: "remove", old_fingerprint: "ab", new_fingerprint: null, boot: 3 });
      writeFileSync(log, [line("a"), line("b"), line("b")].join("\n") + "\n");
      const s = new TrustStore(t.dir, 0);
      const first = s.loggedChanges().map((l) => l.key);
      expect(new Set(first).size).toBe(3);
      expect(s.loggedChanges().map((l) => l.key)).toEqual(first);
      // The first line removed by hand: the others keep their keys.
      writeFileSync(log, [line("b"), line("b"), line("c")].join("\n") + "\n" + '{"at":2,"dev');
      const second = s.loggedChanges();
      expect(second.map((l) => l.key).slice(0, 2)).toEqual(first.slice(1));
      expect(second.map((l) => l.change.device)).toEqual(["b", "b", "c"]);
    } finally {
      t.cleanup();
    }
  });

  it("a change the log cannot take is not made: the device's trust file is put back (PATH_UNUSABLE naming the log)", () => {
    const t = tempDir();
    try {
      const a = trustText("cab-19");
      TrustStore.add(t.dir, a.text, "a.json");
      const file = join(t.dir, "trusted", "cab-19.json");
      const before = readFileSync(file, "utf8");
      mkdirSync(join(t.dir, "trusted", "changes.jsonl"));
      let err: unknown;
      try {
        TrustStore.add(t.dir, trustText("cab-19").text, "b.json", { fromBoot: 10 });
      } catch (e) {
        err = e;
      }
      expect(isDaemonError(err, "PATH_UNUSABLE")).toBe(true);
      expect(String((err as Error).message)).toMatch(/changes\.jsonl/);
      expect(readFileSync(file, "utf8")).toBe(before);
      expect(raw(new TrustStore(t.dir, 0).get("cab-19", 11))).toEqual(a.raw);
    } finally {
      t.cleanup();
    }
  });

  it("reads the single-key files written before key history, and sees changes without a restart", () => {
    const t = tempDir();
    try {
      const a = trustText("cab-18");
      const s = new TrustStore(t.dir, 0);
      expect(s.get("cab-18")).toBeUndefined();
      TrustStore.add(t.dir, a.text, "a.json");
      const file = join(t.dir, "trusted", "cab-18.json");
      const old = JSON.parse(readFileSync(file, "utf8")) as { keys: { public_key: string; fingerprint: string }[] };
      writeFileSync(file, JSON.stringify({ device: "cab-18", alg: "ed25519", public_key: old.keys[0]!.public_key, fingerprint: old.keys[0]!.fingerprint }));
      expect(raw(new TrustStore(t.dir, 0).get("cab-18", 5))).toEqual(a.raw);
      expect(raw(s.get("cab-18"))).toEqual(a.raw);
    } finally {
      t.cleanup();
    }
  });
});
